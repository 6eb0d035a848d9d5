"""A prompt too long for any tokenisation to fit the context is refused before the tokenizer runs
(tokenising a 4 MiB prompt on the engine thread stalled every other stream for seconds)."""

from __future__ import annotations

import pytest

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
