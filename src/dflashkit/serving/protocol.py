"""Request schemas for /v1/chat/completions and /v1/completions, validated strictly.

Strict types (no "5" for 5) and unknown fields refused, as OpenAI does; features we do not implement
(n > 1, tools, logprobs, ...) are refused with a 400 naming the parameter, never silently ignored.
The result is an `EngineRequest`: plain values the engine side turns into tokens (prompts.py).
"""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from .errors import APIError, bad_request, unsupported

MAX_STOP_STRINGS = 16  # each is searched for after every generated token, on the engine every request shares
MAX_STOP_BYTES = 1024  # and each search re-decodes a window of tokens as long as the longest stop string
MAX_MESSAGES = 4096  # validating 120k empty messages (a 4 MB body) held the event loop for ~1 s
MAX_CONTENT_PARTS = 4096  # in all messages together: 150k empty text parts (a 4 MB body) held it for ~0.7 s


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class TextPart(_Strict):
    """A content part; other kinds (images, audio) parse, then are refused by name in `_message_text`."""

    model_config = ConfigDict(strict=True, extra="allow")
    type: str
    text: str | None = None


class Message(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]  # the last two: refused by name
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = None  # accepted only empty: echoed history from clients
    function_call: Any = None  # accepted only null, as `audio`: `message.model_dump()` echoes both as null
    audio: Any = None
    tool_call_id: str | None = None
    refusal: str | None = None
    # accepted, unused: `ChatCompletionMessage.model_dump()` writes it (null, or web-search URL citations that only
    # point into `content`); an answer echoed back that way was a 400 unrecognized_argument
    annotations: list[Any] | None = None
    parsed: Any = None  # accepted, unused: the client's stream/parse helpers add their own parse of `content`


class StreamOptions(_Strict):
    include_usage: bool = False
    include_obfuscation: bool | None = None  # openai's client offers it; accepted, unused: we add no padding


class _Sampling(_Strict):
    """Fields both endpoints share."""

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None  # extension (vLLM style); -1 or 0 = off
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool | None = False  # null allowed, as OpenAI's schema does (clients send unset fields as null)
    stream_options: StreamOptions | None = None
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logit_bias: dict[str, Any] | None = None
    user: str | None = None  # accepted, unused: it only labels the caller


class ChatRequest(_Sampling):
    messages: list[Message]
    max_completion_tokens: int | None = None
    tools: list[Any] | None = None
    functions: list[Any] | None = None
    tool_choice: Any = None
    function_call: Any = None
    parallel_tool_calls: bool | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    response_format: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None
    # accepted, unused, as `user` is: openai's client documents both as its replacements (a caller's label and a
    # cache hint, neither changes the answer); following that advice was a 400 unrecognized_argument
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class CompletionRequest(_Sampling):
    prompt: str | list[int] | list[str] | list[list[int]]
    logprobs: int | None = None
    best_of: int | None = None
    echo: bool | None = None
    suffix: str | None = None


@dataclass
class EngineRequest:
    """What the engine side needs: the prompt (chat messages, text or ids) and the sampling values."""

    messages: list[dict] | None
    prompt: str | list[int] | None
    max_tokens: int | None  # as the client set it; None = fill the context (chat) or `default_max_tokens`
    default_max_tokens: int | None
    temperature: float
    top_p: float
    top_k: int
    seed: int | None
    stop: list[str] | None
    stream: bool = False  # False: the HTTP side waits for the whole answer, so no per-step deltas are sent


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def parse_json(raw: bytes) -> dict:
    # UTF-8 only (RFC 8259; a BOM is skipped): json.loads(bytes) also took UTF-16 and UTF-32, whose escapes the
    # surrogate check below never saw, and decoded UTF-8-encoded surrogates ("surrogatepass"): both reached
    # the tokenizer as half a UTF-16 pair (a 500)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: not UTF-8 text ({exc})", code="invalid_json") from None
    try:
        body = json.loads(text)
    except json.JSONDecodeError as exc:
        raise bad_request(f"request body is not valid JSON: {exc}", code="invalid_json") from None
    except RecursionError:  # json's decoder recurses per nesting level: 30k '[' are a 500 otherwise
        raise bad_request("request body is not valid JSON: nested too deeply", code="invalid_json") from None
    except ValueError:  # Python refuses to convert an integer of over 4,300 digits: it was a 500
        raise bad_request(f"request body holds a number of more than {sys.get_int_max_str_digits()} digits",
                          code="invalid_json") from None
    if not isinstance(body, dict):
        raise bad_request("request body must be a JSON object", code="invalid_json")
    if _SURROGATE_ESCAPE.search(text):
        _refuse_lone_surrogates(body)
    return body


def _refuse_lone_surrogates(body: dict) -> None:
    """JSON lets a string hold half of a UTF-16 pair ("\\ud800"); no tokenizer can encode it (it failed deep in
    the engine as a 500). Pairs (escaped emoji) decode to one character and pass. A loop, not a recursion:
    json.dumps re-encoding a body nested just under the parser's limit ran out of stack (a 500)."""
    pending: list = [body]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            pending.extend(value.keys())
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
        elif isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                raise bad_request("request body is not valid JSON text: a string holds an unpaired UTF-16 "
                                  "surrogate escape (\\ud800-\\udfff)", code="invalid_json") from None


def validate(schema: type[_Strict], body: dict) -> _Strict:
    try:
        return schema.model_validate(body)
    except ValidationError as exc:
        raise _validation_error(exc) from None


def _validation_error(exc: ValidationError) -> APIError:
    """The first field's problem (its deepest error), phrased like OpenAI's messages; its dotted path is `param`."""
    err = _deepest(exc.errors())
    loc = err["loc"]
    # an unknown or missing field's last entry is the key itself, whatever it looks like: a typo such as
    # `Temperature` was taken for a union tag and reported as "Unrecognized request argument supplied: None"
    keyed = err["type"] in ("extra_forbidden", "missing")
    parts = [p for p in (loc[:-1] if keyed else loc) if not _is_type_tag(p)] + list(loc[-1:] if keyed else ())
    param = ".".join(str(p) for p in parts) or None
    if err["type"] == "extra_forbidden":
        return bad_request(f"Unrecognized request argument supplied: {param}", param, "unrecognized_argument")
    if err["type"] == "missing":
        return bad_request(f"Missing required parameter: '{param}'", param, "missing_required_parameter")
    got = repr(err.get("input"))
    got = got if len(got) <= 200 else got[:200] + "..."  # a wrong-typed 1 MB field is not echoed whole
    return bad_request(f"Invalid value for '{param}': {err['msg']} (got {got})", param, "invalid_type")


def _deepest(errors: list[dict]) -> dict:
    """Of one field's errors, the deepest: for a union (content: str | list of parts) pydantic lists each member's
    failure, and the one that got furthest is the form the client meant (`content.0.text`, not 'not a str')."""
    first = errors[0]["loc"][:1]
    return max((e for e in errors if e["loc"][:1] == first), key=lambda e: len(e["loc"]))


def _is_type_tag(part) -> bool:
    """pydantic names the union member in `loc` ('str', 'list[TextPart]'); clients know only fields."""
    return isinstance(part, str) and ("[" in part or part[:1].isupper() or part in ("str", "int", "float", "bool"))


def _refuse_unsupported(req: _Sampling) -> None:
    if req.n is not None and req.n < 1:
        raise bad_request(f"n={req.n} must be >= 1", "n")
    if req.n not in (None, 1):
        raise unsupported("n", "only n=1; send several requests for several answers")
    for name in ("presence_penalty", "frequency_penalty"):
        value = getattr(req, name)
        if value is not None and not -2 <= value <= 2:  # OpenAI's range; a wrong value first, as for n
            raise bad_request(f"{name}={value} must be between -2 and 2", name)
        if value:
            raise unsupported(name, "penalties would change the target's distribution; leave at 0")
    if req.logit_bias:
        raise unsupported("logit_bias", "leave it empty")
    if req.stream_options is not None and not req.stream:
        raise bad_request("stream_options is only allowed with stream=true", "stream_options")


def _refuse_chat_only(req: ChatRequest) -> None:
    if req.tools or req.functions:
        raise unsupported("tools" if req.tools else "functions", "tool and function calling are not implemented")
    for name in ("tool_choice", "function_call"):
        if getattr(req, name) not in (None, "none"):
            raise unsupported(name, "tool and function calling are not implemented")
    if req.logprobs:
        raise unsupported("logprobs", "log probabilities are not returned")
    if req.top_logprobs is not None and not 0 <= req.top_logprobs <= 20:  # a wrong value first, as for n
        raise bad_request(f"top_logprobs={req.top_logprobs} must be between 0 and 20", "top_logprobs")
    if req.top_logprobs:
        raise unsupported("top_logprobs", "log probabilities are not returned")
    if req.response_format is not None and req.response_format.get("type") != "text":
        raise unsupported("response_format", "only {'type': 'text'}; structured output is not implemented")


def _refuse_completion_only(req: CompletionRequest) -> None:
    if req.logprobs is not None:  # 0 too: OpenAI then still returns the sampled tokens' log probabilities
        raise unsupported("logprobs", "log probabilities are not returned")
    if req.best_of is not None and req.best_of < 1:
        raise bad_request(f"best_of={req.best_of} must be >= 1", "best_of")
    if req.best_of not in (None, 1):
        raise unsupported("best_of", "only best_of=1")
    if req.echo:
        raise unsupported("echo", "the prompt is not echoed back")
    if req.suffix:
        raise unsupported("suffix", "insertion (fill-in-the-middle) is not implemented")


def _message_text(m: Message, i: int) -> str:
    if m.role in ("tool", "function"):
        raise unsupported(f"messages.{i}.role", f"messages of role {m.role!r}: tool calling is not implemented")
    if m.tool_calls:
        raise unsupported(f"messages.{i}.tool_calls", "tool calling is not implemented")
    if m.function_call is not None:
        raise unsupported(f"messages.{i}.function_call", "function calling is not implemented")
    if m.audio is not None:
        raise unsupported(f"messages.{i}.audio", "audio is not implemented")
    if m.content is None:
        raise bad_request(f"messages.{i}.content is missing", f"messages.{i}.content")
    if isinstance(m.content, str):
        return m.content
    texts = []
    for j, part in enumerate(m.content):
        if part.type != "text":
            raise unsupported(f"messages.{i}.content.{j}", f"content part of type {part.type!r}: only text")
        if part.text is None:
            raise bad_request(f"Missing required parameter: 'messages.{i}.content.{j}.text' (a text part)",
                              f"messages.{i}.content.{j}.text", "missing_required_parameter")
        texts.append(part.text)
    return "\n".join(texts)


def _sampling_values(req: _Sampling) -> dict:
    temperature = 1.0 if req.temperature is None else req.temperature
    if not 0 <= temperature <= 2:
        raise bad_request(f"temperature={temperature} must be in [0, 2]", "temperature")
    top_p = 1.0 if req.top_p is None else req.top_p
    if not 0 < top_p <= 1:
        raise bad_request(f"top_p={top_p} must be in (0, 1]", "top_p")
    top_k = req.top_k or 0
    if top_k < -1:
        raise bad_request(f"top_k={top_k} must be >= 0 (-1 or 0 = off)", "top_k")
    stop = _stop_strings(req.stop)
    return dict(temperature=float(temperature), top_p=float(top_p), top_k=max(top_k, 0), seed=req.seed,
                stop=stop or None)


def _stop_strings(stop: str | list[str] | None) -> list[str] | None:
    stop = [stop] if isinstance(stop, str) else stop
    if stop is None:
        return None
    if not all(stop):
        raise bad_request("stop strings must be non-empty", "stop")
    if len(stop) > MAX_STOP_STRINGS:
        raise bad_request(f"{len(stop)} stop strings: at most {MAX_STOP_STRINGS}", "stop")
    for i, s in enumerate(stop):
        size = len(s.encode(errors="replace"))
        if size > MAX_STOP_BYTES:
            raise bad_request(f"stop string {i} ({s[:20]!r}...) is {size} bytes long (UTF-8): the server looks for "
                              f"stop strings of at most {MAX_STOP_BYTES} bytes", "stop")
    return stop


def _max_tokens(value: int | None, param: str) -> int | None:
    if value is not None and value < 1:
        raise bad_request(f"{param}={value} must be >= 1", param)
    return value


def chat_request(body: dict) -> tuple[ChatRequest, EngineRequest]:
    messages = body.get("messages")
    if isinstance(messages, list):  # counted before validation spends the time
        if len(messages) > MAX_MESSAGES:
            raise bad_request(f"{len(messages)} messages: at most {MAX_MESSAGES}", "messages")
        parts = sum(len(m["content"]) for m in messages if isinstance(m, dict) and isinstance(m.get("content"), list))
        if parts > MAX_CONTENT_PARTS:
            raise bad_request(f"{parts} content parts: at most {MAX_CONTENT_PARTS} in all messages", "messages")
    req = validate(ChatRequest, body)
    _refuse_unsupported(req)
    _refuse_chat_only(req)
    if not req.messages:
        raise bad_request("messages is empty: give at least one message", "messages")
    # OpenAI's `developer` is the newer name of `system`; open chat templates (Qwen2.5/3, ...) know only `system`
    # and dropped a developer message without a word (and added their default system prompt instead)
    messages = [{"role": "system" if m.role == "developer" else m.role, "content": _message_text(m, i)}
                for i, m in enumerate(req.messages)]
    # both are checked (a bad max_tokens beside max_completion_tokens was ignored); the newer name wins
    max_tokens = _max_tokens(req.max_tokens, "max_tokens")
    if req.max_completion_tokens is not None:
        max_tokens = _max_tokens(req.max_completion_tokens, "max_completion_tokens")
    return req, EngineRequest(messages=messages, prompt=None, max_tokens=max_tokens, default_max_tokens=None,
                              stream=bool(req.stream), **_sampling_values(req))


COMPLETION_DEFAULT_MAX_TOKENS = 16  # OpenAI's default for /v1/completions


def completion_request(body: dict) -> tuple[CompletionRequest, EngineRequest]:
    req = validate(CompletionRequest, body)
    _refuse_unsupported(req)
    _refuse_completion_only(req)
    prompt = req.prompt
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], (str, list)):
        if len(prompt) != 1:
            raise unsupported("prompt", "one prompt per request (got a batch of "
                              f"{len(prompt)}); send one request per prompt")
        prompt = prompt[0]
    if not prompt:
        raise bad_request("prompt is empty", "prompt")
    return req, EngineRequest(messages=None, prompt=prompt, max_tokens=_max_tokens(req.max_tokens, "max_tokens"),
                              default_max_tokens=COMPLETION_DEFAULT_MAX_TOKENS, stream=bool(req.stream),
                              **_sampling_values(req))
