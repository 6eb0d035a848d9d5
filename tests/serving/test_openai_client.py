"""The official openai client against our server: whole and streamed answers, usage and `dflash` stats."""

from __future__ import annotations

import pytest
from serving_harness import MODEL, server  # noqa: F401  (fixture)

MESSAGES = [{"role": "system", "content": "You are terse."}, {"role": "user", "content": "Say hello."}]


def check_dflash(stats: dict, completion_tokens: int) -> None:
    assert stats["steps"] == len(stats["acceptance_lengths"])
    # the first token comes from the prefill; every later one from a speculative step
    assert sum(stats["acceptance_lengths"]) == completion_tokens - 1
    assert all(1 <= a <= 8 for a in stats["acceptance_lengths"])


def test_chat_completion_reports_usage_and_acceptance(server):
    r = server.openai().chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=24, temperature=0)
    assert r.object == "chat.completion" and r.model == MODEL and r.id.startswith("chatcmpl-")
    choice = r.choices[0]
    assert choice.message.role == "assistant" and isinstance(choice.message.content, str)
    assert choice.finish_reason in ("stop", "length")
    assert r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 0
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    check_dflash(r.model_extra["dflash"], r.usage.completion_tokens)


def test_chat_stream_equals_whole_answer(server):
    client = server.openai()
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=40, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert all(c.object == "chat.completion.chunk" and c.id == chunks[0].id for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finish) == 1 and finish[0].choices[0].finish_reason == whole.choices[0].finish_reason
    assert finish[0].model_extra["dflash"]["acceptance_lengths"] == whole.model_extra["dflash"]["acceptance_lengths"]
    last = chunks[-1]
    assert last.choices == [] and last.usage.completion_tokens == whole.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])


def test_max_completion_tokens_and_length_finish(server):
    r = server.openai().chat.completions.create(model=MODEL, messages=MESSAGES, max_completion_tokens=3,
                                                temperature=0, stop=None)
    assert r.usage.completion_tokens <= 3
    if r.usage.completion_tokens == 3:
        assert r.choices[0].finish_reason == "length"


def test_completions_text_and_token_prompt_agree(server):
    client = server.openai()
    prompt = "The quick brown fox"
    ids = server.gen.tokenizer.encode(prompt)
    by_text = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0)
    by_ids = client.completions.create(model=MODEL, prompt=ids, max_tokens=20, temperature=0)
    assert by_text.object == "text_completion" and by_text.id.startswith("cmpl-")
    assert by_text.choices[0].text == by_ids.choices[0].text
    assert by_text.usage.prompt_tokens == len(ids)
    check_dflash(by_text.model_extra["dflash"], by_text.usage.completion_tokens)


def test_completions_default_max_tokens_is_16(server):
    r = server.openai().completions.create(model=MODEL, prompt="abc", temperature=0)
    assert r.usage.completion_tokens <= 16


def test_completions_stream(server):
    client = server.openai()
    whole = client.completions.create(model=MODEL, prompt="Once upon", max_tokens=30, temperature=0)
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon", max_tokens=30, temperature=0,
                                            stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == whole.choices[0].text
    assert chunks[-1].usage.total_tokens == whole.usage.total_tokens


def test_stop_string_cuts_the_answer(server):
    client = server.openai()
    free = client.completions.create(model=MODEL, prompt="Numbers:", max_tokens=40, temperature=0).choices[0]
    text = free.text
    if len(text) < 8:
        pytest.skip(f"the random model stopped early: {text!r}")
    stop = text[5:7]
    cut = client.completions.create(model=MODEL, prompt="Numbers:", max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].text == text[:text.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_seeded_sampling_repeats(server):
    client = server.openai()
    kwargs = dict(model=MODEL, messages=MESSAGES, max_tokens=20, temperature=0.9, top_p=0.9, seed=1234,
                  extra_body={"top_k": 20})
    a = client.chat.completions.create(**kwargs).choices[0].message.content
    b = client.chat.completions.create(**kwargs).choices[0].message.content
    assert a == b


def test_models_lists_the_served_name(server):
    models = server.openai().models.list().data
    assert [m.id for m in models] == [MODEL]
