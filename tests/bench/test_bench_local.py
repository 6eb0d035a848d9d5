"""The local backend against a fake engine: same prompts for AR and DFlash, waves, multi-turn, profile."""

from __future__ import annotations

import pytest
from benchkit import FakeGenerator

from dflashkit.bench.backends.local import LocalBackend
from dflashkit.bench.errors import BenchError
from dflashkit.bench.metrics import compare_modes, summarize
from dflashkit.bench.runner import parse_concurrency, run_suite
from dflashkit.bench.samples import Sample

SAMPLES = [Sample("a", ["one", "two"]), Sample("b", ["three"]), Sample("c", ["four", "five"])]


def test_concurrency_is_the_batch_size_and_turns_follow_answers():
    gen = FakeGenerator()
    backend = LocalBackend(generator=gen)
    backend.setup([2])
    records = backend.run(SAMPLES, 2, 6, mode="dflash")
    # wave 1 = a, b: turn 0 for both, then turn 1 for a only; wave 2 = c: turn 0, turn 1
    assert [c["batch"] for c in gen.calls] == [2, 1, 1, 1]
    assert all(c["speculative"] for c in gen.calls)
    assert [(r.sample_id, r.turn) for r in records] == [("a", 0), ("b", 0), ("a", 1), ("c", 0), ("c", 1)]
    second_turn_chat = gen.chats[2]
    assert [m["role"] for m in second_turn_chat] == ["user", "assistant", "user"]
    assert second_turn_chat[1]["content"] == records[0].text
    assert records[0].acceptance_lengths == [3, 3] and records[0].tau == 3.0


def test_ar_and_dflash_run_identical_prompts():
    gen = FakeGenerator()
    runs = run_suite(LocalBackend(generator=gen), SAMPLES, [1, 2], 5, warmup=1, progress=False)
    assert [(r.mode, r.concurrency) for r in runs] == [("ar", 1), ("dflash", 1), ("ar", 2), ("dflash", 2)]
    ar, dflash = runs[0], runs[1]
    assert [(r.sample_id, r.turn) for r in ar.records] == [(r.sample_id, r.turn) for r in dflash.records]
    assert all(r.acceptance_lengths is None for r in ar.records)
    summaries = [summarize(r) for r in runs]
    assert summaries[1]["acceptance_length"] == pytest.approx(5 / 2)  # steps of 3 and 2 tokens
    assert summaries[1]["acceptance_histogram"] == {"2": 5, "3": 5}
    cmp = compare_modes(runs, summaries)
    assert set(cmp) == {"1", "2"} and cmp["1"]["identical_outputs"] == 1.0
    warmups = [c for c in gen.calls if c["params"].max_new_tokens == 5]
    assert len(warmups) == len(gen.calls)  # warm-up uses the same settings, on other prompts


def test_profile_is_measured_on_an_extra_pass():
    gen = FakeGenerator()
    runs = run_suite(LocalBackend(generator=gen), SAMPLES[:1], [1], 6, warmup=0, progress=False, profile=True)
    dflash = next(r for r in runs if r.mode == "dflash")
    assert set(dflash.profile) == {"draft_ms", "verify_ms", "other_ms", "steps"}
    assert gen.profile is None  # profiling switched off again


def test_dflash_mode_without_a_drafter_is_a_clear_error():
    gen = FakeGenerator()
    gen.draft = None
    with pytest.raises(BenchError, match="no drafter"):
        LocalBackend(generator=gen).setup([1])
    LocalBackend(generator=gen, modes=("ar",)).setup([1])


@pytest.mark.parametrize("text", ["0", "1,-2", "x", ""])
def test_bad_concurrency_is_rejected(text):
    with pytest.raises(BenchError, match="--concurrency"):
        parse_concurrency(text)


def test_concurrency_list():
    assert parse_concurrency("1, 8,32,8") == [1, 8, 32]


def test_answers_cut_by_the_context_are_reported():
    """The engine stops an answer where the context ends; fewer tokens were timed than asked, so say so."""
    from dflashkit.bench.records import RequestRecord

    class ShortContext:
        modes = ("ar",)

        def setup(self, concurrencies):
            pass

        def sync(self):
            pass

        def run(self, samples, concurrency, max_new_tokens, *, mode, temperature=0.0, on_done=None):
            return [RequestRecord(s.id, 0, 3, n, 0.1, 0.01, finish_reason="length")
                    for s, n in zip(samples, [max_new_tokens, 5, max_new_tokens], strict=False)]

    lines = []
    samples = [Sample(f"s{i}", ["hi"]) for i in range(3)]
    run_suite(ShortContext(), samples, [1], 8, warmup=0, progress=False, log=lines.append)
    assert lines == ["warning: 1 of 3 answers (ar, c=1) ended at the context before --max-new-tokens 8: "
                     "lower it or raise --max-length"]


def test_max_length_beyond_the_model_is_refused():
    """The engine clamped it to the model's 512 positions while the report recorded 100000."""
    from types import SimpleNamespace

    gen = FakeGenerator()
    gen.target = SimpleNamespace(max_positions=512)
    with pytest.raises(BenchError, match="--max-length 100000 exceeds the model's context of 512"):
        LocalBackend(generator=gen, max_length=100000).setup([1])
    LocalBackend(generator=gen, max_length=512).setup([1])
