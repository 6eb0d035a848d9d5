"""Found by probing with edge values: body encodings, huge integers, values that were silently ignored."""

from __future__ import annotations

import pytest
import serving_harness
from serving_harness import MODEL

server = serving_harness.server  # the module's live server fixture

CHAT, COMP = "/v1/chat/completions", "/v1/completions"
HI = [{"role": "user", "content": "hi"}]
JSON = {"Content-Type": "application/json"}


def error_of(r, status: int = 400) -> dict:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
    return error


def test_integer_of_thousands_of_digits_is_400_not_500(server):
    """Python refuses to convert an integer literal of over 4,300 digits: json.loads raised a ValueError (500)."""
    body = b'{"messages": [{"role": "user", "content": "hi"}], "max_tokens": 3, "seed": ' + b"9" * 5000 + b"}"
    assert error_of(server.http.post(CHAT, content=body, headers=JSON))["code"] == "invalid_json"


@pytest.mark.parametrize("raw", [
    '{"prompt": "a\\ud800b", "max_tokens": 3}'.encode("utf-16"),  # the surrogate check read the raw bytes as UTF-8
    '{"prompt": "a\\ud800b", "max_tokens": 3}'.encode("utf-16-le"),
    '{"prompt": "a\\udc00b", "max_tokens": 3}'.encode("utf-32"),
    b'{"prompt": "a\xed\xa0\x80b", "max_tokens": 3}',  # a surrogate encoded as UTF-8: json decoded it (surrogatepass)
], ids=["utf16-bom", "utf16le", "utf32", "utf8-encoded-surrogate"])
def test_half_a_surrogate_pair_in_any_encoding_is_400_not_500(server, raw):
    """These reached the tokenizer as half a UTF-16 pair: 500 "could not start the request: TypeError"."""
    assert error_of(server.http.post(COMP, content=raw, headers=JSON))["code"] == "invalid_json"


def test_utf8_bom_is_still_accepted(server):
    r = server.http.post(COMP, content=b'\xef\xbb\xbf{"prompt": "hi", "max_tokens": 2}', headers=JSON)
    assert r.status_code == 200, r.text


def test_completion_logprobs_zero_is_refused_not_ignored(server):
    """logprobs=0 asks OpenAI for the sampled tokens' log probabilities; we answered `logprobs: null`."""
    error = error_of(server.http.post(COMP, json={"model": MODEL, "prompt": "hi", "max_tokens": 2, "logprobs": 0}))
    assert error["code"] == "unsupported_parameter" and error["param"] == "logprobs"


def test_bad_max_tokens_beside_max_completion_tokens_is_refused(server):
    """max_tokens=-3 was ignored without a word when max_completion_tokens was also given."""
    r = server.http.post(CHAT, json={"model": MODEL, "messages": HI, "max_tokens": -3, "max_completion_tokens": 2})
    assert error_of(r)["param"] == "max_tokens"
    r = server.http.post(CHAT, json={"model": MODEL, "messages": HI, "max_tokens": 9, "max_completion_tokens": 2,
                                     "temperature": 0})
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] <= 2  # the newer name still wins


def test_vanishing_top_p_keeps_the_top_token(server):
    """top_p=1e-300 is 0 in the engine's float32 filter: every token was masked, and token 0 (a special token,
    decoded as "") came out every step. The filter now always keeps the most likely token."""
    client = server.openai()
    greedy = client.completions.create(model=MODEL, prompt="Numbers:", max_tokens=12, temperature=0)
    tiny = client.completions.create(model=MODEL, prompt="Numbers:", max_tokens=12, temperature=1, top_p=1e-300)
    assert tiny.choices[0].text == greedy.choices[0].text and tiny.choices[0].text


@pytest.mark.parametrize("n", [0, -1])
def test_n_below_one_is_an_invalid_value(server, n):
    """n=0 was answered "only n=1 is supported", as if n=0 were a feature the server lacks."""
    error = error_of(server.http.post(CHAT, json={"model": MODEL, "messages": HI, "n": n}))
    assert error["param"] == "n" and error["code"] != "unsupported_parameter"


def test_text_part_without_text_names_the_missing_field(server):
    """It said "content part of type 'text' is not supported: only text"."""
    r = server.http.post(CHAT, json={"model": MODEL, "messages": [{"role": "user", "content": [{"type": "text"}]}]})
    error = error_of(r)
    assert error["param"] == "messages.0.content.0.text" and error["code"] == "missing_required_parameter"


def test_deep_nesting_beside_an_escaped_emoji_is_never_500(server):
    """The surrogate check re-encoded the body with json.dumps, a few frames deeper than json.loads had parsed
    it: a body nested just under the parser's limit, with an escaped pair anywhere, ran out of stack (500)."""
    statuses = set()
    for depth in range(800, 1001, 4):  # the exact limit depends on the server's stack depth: cover the range
        body = '{"prompt": "\\ud83d\\ude00", "max_tokens": 2, "metadata": ' + "[" * depth + "]" * depth + "}"
        statuses.add(server.http.post(COMP, content=body.encode(), headers=JSON).status_code)
    assert statuses == {400}
