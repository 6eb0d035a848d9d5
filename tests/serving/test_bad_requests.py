"""Every bad request gets the right status and OpenAI's error JSON; the server stays healthy after all of them."""

from __future__ import annotations

import json

import httpx
import pytest
from serving_harness import API_KEY, MODEL, server  # noqa: F401  (fixture)

from dflashkit.serving.protocol import MAX_STOP_BYTES, MAX_STOP_STRINGS

CHAT, COMP = "/v1/chat/completions", "/v1/completions"
HI = [{"role": "user", "content": "hi"}]


def chat(**extra):
    return {"model": MODEL, "messages": HI, "max_tokens": 4, **extra}


def comp(**extra):
    return {"model": MODEL, "prompt": "hi", "max_tokens": 4, **extra}


# (case id, path, body (dict = JSON, bytes = raw), headers, status, error code, param)
CASES = [
    ("malformed-json", CHAT, b'{"model": "tiny", "messages": [', None, 400, "invalid_json", None),
    ("json-not-object", CHAT, b"[1, 2]", None, 400, "invalid_json", None),
    ("not-utf8", CHAT, b"\xff\xfe{", None, 400, "invalid_json", None),
    ("max-tokens-string", CHAT, chat(max_tokens="5"), None, 400, "invalid_type", "max_tokens"),
    ("temperature-string", CHAT, chat(temperature="hot"), None, 400, "invalid_type", "temperature"),
    ("messages-not-list", CHAT, chat(messages="hi"), None, 400, "invalid_type", "messages"),
    ("content-number", CHAT, chat(messages=[{"role": "user", "content": 5}]), None, 400, "invalid_type",
     "messages.0.content"),
    ("bad-role", CHAT, chat(messages=[{"role": "wizard", "content": "x"}]), None, 400, "invalid_type",
     "messages.0.role"),
    ("stream-not-bool", CHAT, chat(stream="yes"), None, 400, "invalid_type", "stream"),
    ("missing-messages", CHAT, {"model": MODEL}, None, 400, "missing_required_parameter", "messages"),
    ("unknown-field", CHAT, chat(frobnicate=1), None, 400, "unrecognized_argument", "frobnicate"),
    ("unknown-model", CHAT, chat(model="gpt-17"), None, 404, "model_not_found", "model"),
    ("empty-messages", CHAT, chat(messages=[]), None, 400, None, "messages"),
    ("negative-max-tokens", CHAT, chat(max_tokens=-3), None, 400, None, "max_tokens"),
    ("zero-max-completion-tokens", CHAT, chat(max_completion_tokens=0), None, 400, None, "max_completion_tokens"),
    ("temperature-too-high", CHAT, chat(temperature=3.5), None, 400, None, "temperature"),
    ("top-p-zero", CHAT, chat(top_p=0), None, 400, None, "top_p"),
    ("empty-stop", CHAT, chat(stop=[""]), None, 400, None, "stop"),
    ("huge-prompt", CHAT, chat(messages=[{"role": "user", "content": "x" * 2000}]), None, 400,
     "context_length_exceeded", "messages"),
    ("max-tokens-past-context", CHAT, chat(max_tokens=10_000), None, 400, "context_length_exceeded", "max_tokens"),
    ("n-2", CHAT, chat(n=2), None, 400, "unsupported_parameter", "n"),
    ("tools", CHAT, chat(tools=[{"type": "function", "function": {"name": "f"}}]), None, 400,
     "unsupported_parameter", "tools"),
    ("tool-choice", CHAT, chat(tool_choice="auto"), None, 400, "unsupported_parameter", "tool_choice"),
    ("functions", CHAT, chat(functions=[{"name": "f"}]), None, 400, "unsupported_parameter", "functions"),
    ("logprobs", CHAT, chat(logprobs=True), None, 400, "unsupported_parameter", "logprobs"),
    ("top-logprobs", CHAT, chat(top_logprobs=3), None, 400, "unsupported_parameter", "top_logprobs"),
    ("json-mode", CHAT, chat(response_format={"type": "json_object"}), None, 400, "unsupported_parameter",
     "response_format"),
    ("penalty", CHAT, chat(presence_penalty=0.5), None, 400, "unsupported_parameter", "presence_penalty"),
    ("image-part", CHAT, chat(messages=[{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]),
     None, 400, "unsupported_parameter", "messages.0.content.0"),
    ("stream-options-without-stream", CHAT, chat(stream_options={"include_usage": True}), None, 400, None,
     "stream_options"),
    ("completion-echo", COMP, comp(echo=True), None, 400, "unsupported_parameter", "echo"),
    ("completion-suffix", COMP, comp(suffix="end"), None, 400, "unsupported_parameter", "suffix"),
    ("completion-best-of", COMP, comp(best_of=2), None, 400, "unsupported_parameter", "best_of"),
    ("completion-logprobs", COMP, comp(logprobs=2), None, 400, "unsupported_parameter", "logprobs"),
    ("completion-batch", COMP, comp(prompt=["a", "b"]), None, 400, "unsupported_parameter", "prompt"),
    ("completion-empty", COMP, comp(prompt=""), None, 400, None, "prompt"),
    ("completion-token-out-of-vocab", COMP, comp(prompt=[1, 2, 10**6]), None, 400, None, "prompt"),
    ("body-too-large", CHAT, chat(messages=[{"role": "user", "content": "x" * 100_000}]), None, 413,
     "request_too_large", None),
    ("no-api-key", CHAT, chat(), {"Authorization": ""}, 401, "invalid_api_key", None),
    ("wrong-api-key", CHAT, chat(), {"Authorization": "Bearer nope"}, 401, "invalid_api_key", None),
    ("wrong-scheme", CHAT, chat(), {"Authorization": f"Basic {API_KEY}"}, 401, "invalid_api_key", None),
    ("models-without-key", "/v1/models", None, {"Authorization": ""}, 401, "invalid_api_key", None),
    ("unknown-route", "/v1/embeddings", chat(), None, 404, "not_found", None),
    # json's decoder recursed into a RecursionError (500); half a UTF-16 pair failed in the tokenizer (500)
    ("nested-too-deeply", CHAT, b"[" * 30_000 + b"]" * 30_000, None, 400, "invalid_json", None),
    ("lone-surrogate-prompt", COMP, b'{"prompt": "a\\ud800b", "max_tokens": 4}', None, 400, "invalid_json", None),
    ("lone-surrogate-content", CHAT, b'{"messages": [{"role": "user", "content": "\\udc00"}]}', None, 400,
     "invalid_json", None),
    ("tool-message", CHAT, chat(messages=[{"role": "tool", "content": "42", "tool_call_id": "call_1"}]), None, 400,
     "unsupported_parameter", "messages.0.role"),
    # a union's error names the member the client meant, not "should be a valid string" for the whole field
    ("content-part-text-number", CHAT, chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]),
     None, 400, "invalid_type", "messages.0.content.0.text"),
    ("stop-list-number", CHAT, chat(stop=["a", 1]), None, 400, "invalid_type", "stop.1"),
    ("too-many-stops", CHAT, chat(stop=[str(i) for i in range(MAX_STOP_STRINGS + 1)]), None, 400, None, "stop"),
    ("stop-too-long", CHAT, chat(stop="y" * (MAX_STOP_BYTES + 1)), None, 400, None, "stop"),
    ("unknown-model-card", "/v1/models/gpt-17", None, None, 404, "model_not_found", "model"),
]


@pytest.mark.parametrize("path,body,headers,status,code,param", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_gets_openai_error(server, path, body, headers, status, code, param):
    if body is None:
        r = server.http.get(path, headers=headers)
    else:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        r = server.http.post(path, content=raw, headers={"Content-Type": "application/json", **(headers or {})})
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["message"]
    assert error["type"] == "invalid_request_error"
    if code is not None:
        assert error["code"] == code
    if param is not None:
        assert error["param"] == param


def test_wrong_method_is_405_json(server):
    r = server.http.get(CHAT)
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"
    assert r.headers["allow"] == "POST"  # HTTP requires a 405 to name the allowed methods


def test_trailing_slash_is_a_json_404_with_a_hint_not_an_empty_redirect(server):
    """Starlette redirected `POST /v1/chat/completions/` with an empty 307 to a URL built from the Host header."""
    r = server.http.post(CHAT + "/", json=chat(), follow_redirects=False, headers={"Host": "inner:1"})
    assert r.status_code == 404 and "location" not in r.headers, r.headers
    error = r.json()["error"]
    assert error["code"] == "not_found" and "no trailing slash: /v1/chat/completions" in error["message"]
    listed = server.http.get("/v1/models/", follow_redirects=False)
    assert listed.status_code == 200 and listed.json()["data"][0]["id"] == MODEL  # as without the slash


def test_wrong_typed_huge_field_is_not_echoed_whole(server):
    r = server.http.post(CHAT, json=chat(messages="x" * 50_000))
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    assert len(r.json()["error"]["message"]) < 500


def test_surrogate_pair_escape_is_one_character(server):
    """Escaped emoji (a valid pair, as json.dumps writes them) must pass the lone-surrogate check."""
    r = server.http.post(COMP, content=b'{"prompt": "hi \\ud83d\\ude00", "max_tokens": 2, "temperature": 0}',
                         headers={"Content-Type": "application/json"})
    assert r.status_code == 200, r.text


def test_huge_top_k_is_off_not_a_failed_step(server):
    """top_k past int64 failed the whole batch's step (a 500 for every running request); >= vocab means off."""
    kwargs = dict(model=MODEL, prompt="Numbers:", max_tokens=12, temperature=0.8, seed=7)
    client = server.openai()
    off = client.completions.create(**kwargs, extra_body={"top_k": 0}).choices[0].text
    huge = client.completions.create(**kwargs, extra_body={"top_k": 10**30}).choices[0].text
    assert huge == off


def test_vanishing_temperature_is_greedy(server):
    """logits / 1e-39 overflow float32: the answer was NaN-sampled garbage (token 0 over and over)."""
    client = server.openai()
    greedy = client.completions.create(model=MODEL, prompt="Numbers:", max_tokens=12, temperature=0)
    tiny = client.completions.create(model=MODEL, prompt="Numbers:", max_tokens=12, temperature=1e-39)
    assert tiny.choices[0].text == greedy.choices[0].text


def test_a_long_stop_string_is_found(server):
    """The engine looked for stops in its last 48 tokens' text only: a longer stop was silently never found."""
    client = server.openai()
    text = client.completions.create(model=MODEL, prompt="Numbers:", max_tokens=90, temperature=0).choices[0].text
    if len(text) < 75:
        pytest.skip(f"the random model stopped early: {text!r}")
    stop = text[5:70]  # one character a token (tiny tokenizer): spans 65 tokens
    cut = client.completions.create(model=MODEL, prompt="Numbers:", max_tokens=90, temperature=0, stop=stop)
    assert cut.choices[0].text == text[:text.index(stop)] and cut.choices[0].finish_reason == "stop"


def test_model_card_by_name(server):
    card = server.openai().models.retrieve(MODEL)
    assert card.id == MODEL and card.model_extra["max_model_len"] == server.gen.max_length


def test_openai_client_raises_typed_errors(server):
    import openai

    client = server.openai()
    with pytest.raises(openai.BadRequestError, match="not supported"):
        client.chat.completions.create(model=MODEL, messages=HI, n=2)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=HI)
    with pytest.raises(openai.AuthenticationError):
        server.openai().with_options(api_key="wrong").models.list()


def test_healthy_after_bad_requests(server):
    assert httpx.get(server.url + "/health").json()["status"] == "ok"
    r = server.openai().chat.completions.create(model=MODEL, messages=HI, max_tokens=4, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length")
    server.wait_idle()
