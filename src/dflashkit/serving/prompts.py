"""Runs on the engine side: request -> prompt token ids + SamplingParams, with the context limits.

Tokenising there, not on the event loop, keeps the tokenizer (shared with the engine's detokeniser)
with the engine, and the prompt length is known before the request is accepted.
"""

from __future__ import annotations

from ..engine.sampling import SamplingParams
from ..errors import RequestError
from .errors import bad_request, context_exceeded
from .protocol import EngineRequest


def prompt_ids(gen, req: EngineRequest) -> list[int]:
    if req.messages is not None:
        try:
            return gen.chat_prompt(req.messages)
        except RequestError:
            raise  # the engine's own message is clear (a DFlashError: a 400)
        except Exception as exc:  # a chat template that refuses the conversation (jinja TemplateError, ...)
            raise bad_request(f"the model's chat template rejected these messages: {exc}", "messages") from None
    if isinstance(req.prompt, str):
        return gen.tokenizer.encode(req.prompt)
    vocab = gen.target.vocab_size
    bad = [i for i in req.prompt if not 0 <= i < vocab]
    if bad:
        raise bad_request(f"prompt token ids {bad[:5]} are outside the vocabulary 0..{vocab - 1}", "prompt")
    return list(req.prompt)


def plan(gen, req: EngineRequest) -> tuple[list[int], SamplingParams]:
    """The prompt ids and sampling settings, or a 400 when prompt + max_tokens does not fit the context."""
    ids = prompt_ids(gen, req)
    param = "messages" if req.messages is not None else "prompt"
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
