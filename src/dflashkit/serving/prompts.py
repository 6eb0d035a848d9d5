"""Runs on the engine side: request -> prompt token ids + SamplingParams, with the context limits.

Tokenising there, not on the event loop, keeps the tokenizer (shared with the engine's detokeniser)
with the engine, and the prompt length is known before the request is accepted.
"""

from __future__ import annotations

import functools

from ..engine.generator import chat_text, encode_chat
from ..engine.sampling import SamplingParams
from ..errors import RequestError
from .errors import bad_request, context_exceeded
from .protocol import EngineRequest


def prompt_ids(gen, req: EngineRequest) -> list[int]:
    if req.messages is not None:
        try:
            text = chat_text(gen.tokenizer, req.messages)
        except RequestError:
            raise  # the engine's own message is clear (a DFlashError: a 400)
        except Exception as exc:  # a chat template that refuses the conversation (jinja TemplateError, ...)
            raise bad_request(f"the model's chat template rejected these messages: {exc}", "messages") from None
        refuse_unencodable_length(gen, len(text), "messages")
        return encode_chat(gen.tokenizer, text)
    if isinstance(req.prompt, str):
        refuse_unencodable_length(gen, len(req.prompt), "prompt")
        return gen.tokenizer.encode(req.prompt)
    vocab = gen.target.vocab_size
    bad = [i for i in req.prompt if not 0 <= i < vocab]
    if bad:
        raise bad_request(f"prompt token ids {bad[:5]} are outside the vocabulary 0..{vocab - 1}", "prompt")
    return list(req.prompt)


def plan(gen, req: EngineRequest) -> tuple[list[int], SamplingParams]:
    """The prompt ids and sampling settings, or a 400 when prompt + max_tokens does not fit the context."""
    param = "messages" if req.messages is not None else "prompt"
    ids = prompt_ids(gen, req)
    if not ids:
        raise bad_request("the prompt encodes to no tokens", param)
    room = gen.max_length - len(ids)
    if room < 1:
        raise context_exceeded(f"This model's maximum context length is {gen.max_length} tokens; the prompt has "
                               f"{len(ids)}. Shorten the prompt.", param)
    if req.max_tokens is not None and req.max_tokens > room:
        raise context_exceeded(f"This model's maximum context length is {gen.max_length} tokens; the prompt has "
                               f"{len(ids)} and max_tokens asks for {req.max_tokens} more. Lower max_tokens to "
                               f"at most {room} or shorten the prompt.", "max_tokens")
    max_new = req.max_tokens or min(req.default_max_tokens or room, room)
    params = SamplingParams(max_new_tokens=max_new, temperature=req.temperature, top_p=req.top_p, top_k=req.top_k,
                            seed=req.seed, stop=req.stop)
    return ids, params


# Tokenising runs on the engine's thread: a 4 MiB prompt (the default body limit) took ~3 s with SmolLM2's
# tokenizer, and every other stream stalled meanwhile. A text longer than the context times the longest
# vocabulary string cannot fit whatever its tokens are, so it is refused before it is encoded (with a 2x
# margin for normalisers that drop characters). A chat is measured as rendered: 120k empty messages have no
# content characters but ~3.4 M of template around them (2.4 s of encoding).
def refuse_unencodable_length(gen, chars: int, param: str) -> None:
    longest = _longest_token(gen.tokenizer)
    if longest is not None and chars > 2 * longest * gen.max_length:
        raise context_exceeded(f"This model's maximum context length is {gen.max_length} tokens; the prompt's "
                               f"{chars} characters are far more than that many tokens can hold. Shorten the "
                               "prompt.", param)


@functools.lru_cache(maxsize=4)
def _longest_token(tokenizer) -> int | None:
    """Characters of the longest vocabulary string (added tokens included): no token decodes to more."""
    try:
        return max((len(t) for t in tokenizer.get_vocab()), default=0) or None
    except Exception:  # a tokenizer without a vocabulary listing: no early check
        return None
