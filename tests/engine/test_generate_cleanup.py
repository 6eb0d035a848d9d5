"""generate() leaves the engine idle whatever fails, and a request the engine cannot serve is refused up front."""

from __future__ import annotations

import pytest
from tiny_models import build_tiny

from dflashkit import Generator, SamplingParams
from dflashkit.errors import RequestError
from dflashkit.models.factory import random_draft


def _engine():
    target, _ = build_tiny("llama", seed=2)
    return Generator(target, random_draft(target, block_size=4), max_batch=2, max_length=32)


def test_a_refused_prompt_does_not_leave_the_earlier_ones_queued():
    gen = _engine()
    with pytest.raises(RequestError, match="context holds 32"):
        gen.generate([[1, 2], [3, 4], [1] * 40], SamplingParams(max_new_tokens=4))
    assert not gen.has_work() and not gen.sequences  # was: two queued requests, and every later generate() refused
    assert len(gen.generate([[1, 2]], SamplingParams(max_new_tokens=4))[0].token_ids) == 4


def test_wrong_references_or_a_failing_callback_leave_the_engine_idle():
    gen = _engine()
    with pytest.raises(RequestError, match="references"):
        gen.generate([[1, 2], [3]], SamplingParams(max_new_tokens=4), references=[[5, 6]])
    assert not gen.has_work()

    def fail(update):
        raise ValueError("callback")

    with pytest.raises(ValueError, match="callback"):
        gen.generate([[1, 2], [3]], SamplingParams(max_new_tokens=6), on_update=fail)
    assert not gen.has_work() and not gen.sequences
    assert len(gen.generate([[1, 2]], SamplingParams(max_new_tokens=4))[0].token_ids) == 4


def test_stop_strings_without_a_tokenizer_are_refused_at_add_request():
    """They failed the whole batch's step (AttributeError on decode) when the first token was committed."""
    gen = _engine()
    assert gen.tokenizer is None
    with pytest.raises(RequestError, match="stop strings need a tokenizer"):
        gen.add_request([1, 2], SamplingParams(max_new_tokens=4, stop=["x"]))
    assert not gen.has_work()


def test_ignore_eos_keeps_explicit_stop_token_ids():
    gen = _engine()
    free = gen.generate([[1, 2]], SamplingParams(max_new_tokens=8, ignore_eos=True))[0].token_ids
    stop = free[3]
    got = gen.generate([[1, 2]], SamplingParams(max_new_tokens=8, ignore_eos=True, stop_token_ids=[stop]))[0]
    assert got.token_ids == free[:free.index(stop) + 1]  # was: the explicit id was dropped with the end tokens


def test_stream_forgets_its_request_whether_finished_or_abandoned():
    """stream() left every request it served in `sequences` (with all its tokens): a process streaming
    answers grew without bound."""
    gen = _engine()
    whole = list(gen.stream([1, 2, 3], SamplingParams(max_new_tokens=6, ignore_eos=True)))
    assert whole[-1].finished and sum(len(u.token_ids) for u in whole) == 6
    assert not gen.sequences
    for update in gen.stream([4, 5], SamplingParams(max_new_tokens=20, ignore_eos=True)):
        break  # the caller stops reading: the request is aborted and forgotten
    assert not gen.sequences and not gen.has_work()


@pytest.mark.parametrize("kwargs, message", [
    ({"stop_token_ids": 2}, "stop_token_ids=2: must be a list"),  # was TypeError: 'int' object is not iterable
    ({"stop": 5}, "stop=5: must be a string or a list"),
    ({"stop_token_ids": (i for i in [3])}, "stop_token_ids=<generator"),  # the check used it up: no stops left
])
def test_stop_settings_that_are_not_lists_are_request_errors(kwargs, message):
    with pytest.raises(RequestError, match=message):
        SamplingParams(**kwargs)
    assert SamplingParams(stop_token_ids=(3, 4), stop=("a",)).stop_token_ids == (3, 4)


def test_prompts_of_text_or_of_array_ids():
    """Text was refused as 'token ids outside the vocabulary'; a tensor or numpy array of ids failed on its truth
    value. Text is a clear error, integer ids of any kind are read as ints."""
    import numpy as np
    import torch

    gen = _engine()
    with pytest.raises(RequestError, match="not text: encode it first"):
        gen.generate(["hello"], SamplingParams(max_new_tokens=2))
    with pytest.raises(RequestError, match="integer token ids"):
        gen.generate([[1.0, 2.0]], SamplingParams(max_new_tokens=2))
    want = gen.generate([[5, 6, 7]], SamplingParams(max_new_tokens=4))[0].token_ids
    for prompt in (torch.tensor([5, 6, 7]), np.array([5, 6, 7]), [np.int64(5), 6, 7]):
        result = gen.generate([prompt], SamplingParams(max_new_tokens=4))[0]
        assert result.token_ids == want and result.prompt_tokens == 3
    assert not gen.has_work()


def test_a_chat_template_that_refuses_the_messages_is_a_request_error():
    """Gemma 2's template raises 'System role not supported': `generate --system` and bench showed jinja's traceback."""
    from jinja2 import TemplateError

    from dflashkit.engine.generator import chat_prompt

    class Refusing:
        chat_template = "{{ raise_exception('System role not supported') }}"

        def apply_chat_template(self, *args, **kwargs):
            raise TemplateError("System role not supported")

    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}]
    with pytest.raises(RequestError, match="chat template rejected these messages: System role not supported"):
        chat_prompt(Refusing(), messages)


def test_interleaved_streams_each_get_all_their_tokens():
    """Two streams read in turns, a caller's step() between: each stream read only the steps it ran itself, so it
    missed tokens, and one whose last update another step had taken stepped an idle engine forever (run in a
    thread here, so that a hang fails instead of stalling the suite)."""
    import threading

    gen = _engine()
    prompts, limits = [[1, 2, 3], [4, 5]], [5, 12]
    params = [SamplingParams(max_new_tokens=n, ignore_eos=True) for n in limits]
    want = [r.token_ids for r in gen.generate(prompts, params, speculative=False)]  # plain decoding
    assert [r.token_ids for r in gen.generate(prompts, params)] == want
    streams = [gen.stream(p, SamplingParams(max_new_tokens=n, ignore_eos=True)) for p, n in zip(prompts, limits)]
    got: list[list[int]] = [[], []]

    def read_in_turns():
        live = [0, 1]
        while live:
            for i in list(live):
                update = next(streams[i], None)
                if update is None:
                    live.remove(i)
                else:
                    got[i] += update.token_ids
            gen.step()  # the caller's own step: its updates reach the streams too

    reader = threading.Thread(target=read_in_turns, daemon=True)
    reader.start()
    reader.join(timeout=60)
    assert not reader.is_alive(), "a stream stepped an idle engine forever"
    assert got == want
    assert not gen.sequences and not gen.has_work() and not gen._inboxes
