"""A prompt too long for any tokenisation to fit the context is refused before the tokenizer runs
(tokenising a 4 MiB prompt on the engine thread stalled every other stream for seconds)."""

from __future__ import annotations

import pytest
from serving_harness import tiny_generator

from dflashkit.serving.errors import APIError
from dflashkit.serving.prompts import plan
from dflashkit.serving.protocol import EngineRequest


class _Tokenizer:
    def __init__(self):
        self.calls = 0

    def get_vocab(self):
        return {"a": 0, "bb": 1, "<|longest|>": 2}  # longest string: 11 characters

    def encode(self, text):
        self.calls += 1
        return [0] * len(text)

    def apply_chat_template(self, *a, **k):
        raise AssertionError("not reached")


class _Gen:
    max_length = 100

    def __init__(self):
        self.tokenizer = _Tokenizer()

    def chat_prompt(self, messages):
        return self.tokenizer.encode("".join(m["content"] for m in messages))


def _request(prompt=None, messages=None) -> EngineRequest:
    return EngineRequest(messages=messages, prompt=prompt, max_tokens=None, default_max_tokens=None,
                         temperature=0.0, top_p=1.0, top_k=0, seed=None, stop=None)


@pytest.mark.parametrize("field", ["prompt", "messages"])
def test_text_beyond_context_times_longest_token_is_refused_unencoded(field):
    gen = _Gen()
    text = "a" * (2 * 11 * 100 + 1)
    req = _request(prompt=text) if field == "prompt" else _request(messages=[{"role": "user", "content": text}])
    with pytest.raises(APIError) as err:
        plan(gen, req)
    assert gen.tokenizer.calls == 0
    assert err.value.status == 400 and err.value.code == "context_length_exceeded" and err.value.param == field


def test_text_within_the_bound_is_tokenised_and_judged_by_its_token_count():
    gen = _Gen()
    with pytest.raises(APIError) as err:  # 150 tokens: past the context, found by counting them
        plan(gen, _request(prompt="a" * 150))
    assert gen.tokenizer.calls == 1 and "the prompt has 150" in str(err.value)
    ids, params = plan(gen, _request(prompt="a" * 60))
    assert len(ids) == 60 and params.max_new_tokens == 40


def test_many_short_messages_are_judged_by_their_rendered_length_unencoded():
    """Empty messages have no content characters, but the template writes ~28 around each: 120k of them (a 4 MB
    body) spent 2.4 s in encode on the engine's thread before the context check refused them."""
    gen = tiny_generator(max_length=256)  # the char tokenizer's longest string: 12 characters; bound 6,144
    sizes = []
    encode = gen.tokenizer.encode
    gen.tokenizer.encode = lambda text, **kw: sizes.append(len(text)) or encode(text, **kw)
    with pytest.raises(APIError) as err:
        plan(gen, _request(messages=[{"role": "user", "content": ""}] * 1000))  # 28,000 characters rendered
    assert sizes == []
    assert err.value.code == "context_length_exceeded" and err.value.param == "messages"
    ids, _ = plan(gen, _request(messages=[{"role": "user", "content": ""}] * 20))  # 160 tokens: fits
    assert sizes == [20 * 28 + 22] and len(ids) == 20 * 8 + 11


def test_too_many_messages_are_refused_before_validation():
    """Validating 120k empty messages (a 4 MB body) held the event loop for ~1 s: the count is checked first."""
    from dflashkit.serving.protocol import MAX_MESSAGES, chat_request

    body = {"model": "tiny", "messages": [{"role": "user", "content": ""}] * (MAX_MESSAGES + 1)}
    with pytest.raises(APIError) as err:
        chat_request(body)
    assert err.value.status == 400 and err.value.param == "messages" and str(MAX_MESSAGES) in str(err.value)
    assert len(chat_request({**body, "messages": body["messages"][:MAX_MESSAGES]})[1].messages) == MAX_MESSAGES


def test_too_many_content_parts_are_refused_before_validation():
    """A 4 MB body holds ~150k empty text parts in one message: validating them held the event loop (every stream)
    for ~0.7 s, ~1.2 s for parts of another type, as many messages did before their count was checked first."""
    from dflashkit.serving.protocol import MAX_CONTENT_PARTS, chat_request

    parts = [{"type": "text", "text": ""}] * (MAX_CONTENT_PARTS // 2 + 1)
    body = {"model": "tiny", "messages": [{"role": "user", "content": parts}, {"role": "user", "content": parts}]}
    with pytest.raises(APIError) as err:
        chat_request(body)
    assert err.value.status == 400 and err.value.param == "messages" and str(MAX_CONTENT_PARTS) in str(err.value)
    within = [{"role": "user", "content": parts[:-1]}, {"role": "user", "content": parts[:-1]}]
    assert len(chat_request({**body, "messages": within})[1].messages) == 2
