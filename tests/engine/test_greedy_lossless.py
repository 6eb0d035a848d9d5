"""Greedy DFlash output equals plain greedy decoding token for token, on every family and block size."""

from __future__ import annotations

import pytest
import torch

from tiny_models import build_tiny, random_prompts, reference_greedy
from dflashkit import Generator, SamplingParams
from dflashkit.models.factory import random_draft


@pytest.mark.parametrize("block_size", [2, 3, 8, 16])
def test_greedy_equals_autoregressive_random_drafter(family_target, block_size):
    family, target, reference = family_target
    draft = random_draft(target, num_layers=2, seed=block_size)
    gen = Generator(target, draft, block_size=block_size, max_batch=2, max_length=128)
    prompts = random_prompts(4, seed=block_size)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=24))
    for prompt, result in zip(prompts, results):
        assert result.token_ids == reference_greedy(reference, prompt, 24), (family, block_size, prompt)
        assert result.finish_reason == "length"


@pytest.mark.parametrize("tau", [1, 2, 5, 16])
def test_greedy_equals_autoregressive_at_high_acceptance(family_target, tau):
    """Oracle drafts (replayed from the AR answer, cut to tau) exercise long accepts and rollback."""
    family, target, reference = family_target
    gen = Generator(target, random_draft(target), block_size=16, max_batch=3, max_length=160)
    prompts = random_prompts(3, seed=tau)
    expected = [reference_greedy(reference, p, 40) for p in prompts]
    gen.set_oracle(tau)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=40), references=expected)
    for want, got in zip(expected, results):
        assert got.token_ids == want, family
    if tau > 1:
        assert max(max(r.acceptance_lengths) for r in results) == tau


def test_oracle_with_wrong_reference_is_still_lossless(family_target):
    """Drafts that are right for a while and then wrong (a stale reference) must be corrected by verification."""
    family, target, reference = family_target
    gen = Generator(target, random_draft(target), block_size=8, max_batch=2, max_length=128)
    prompts = random_prompts(2, seed=7)
    expected = [reference_greedy(reference, p, 30) for p in prompts]
    stale = [e[:10] + [(t + 3) % 96 for t in e[10:]] for e in expected]
    gen.set_oracle(8)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=30), references=stale)
    assert [r.token_ids for r in results] == expected


@pytest.mark.parametrize("block_size", [4, 16])
def test_stop_tokens_and_max_length(block_size):
    target, reference = build_tiny("llama", seed=3)
    gen = Generator(target, random_draft(target), block_size=block_size, max_batch=4, max_length=96)
    prompts = random_prompts(6, seed=11)
    expected = [reference_greedy(reference, p, 30) for p in prompts]
    gen.set_oracle(block_size)
    for want, prompt in zip(expected, prompts):
        stop = want[7]
        cut = want[:want.index(stop) + 1]
        got = gen.generate([prompt], SamplingParams(max_new_tokens=30, stop_token_ids=[stop]), references=[want])[0]
        assert got.token_ids == cut and got.finish_reason == "stop"
        for limit in (1, 2, 5, 17):
            got = gen.generate([prompt], SamplingParams(max_new_tokens=limit), references=[want])[0]
            assert got.token_ids == want[:limit] and got.finish_reason == "length"


def test_context_limit_stops_with_length():
    target, reference = build_tiny("qwen3", seed=4)
    gen = Generator(target, random_draft(target), block_size=8, max_batch=1, max_length=40)
    prompt = random_prompts(1, seed=2, lengths=(30,))[0]
    want = reference_greedy(reference, prompt, 10)
    gen.set_oracle(8)
    got = gen.generate([prompt], SamplingParams(max_new_tokens=100), references=[want])[0]
    assert got.token_ids == want and got.finish_reason == "length"


def test_batch_rows_equal_batch_one_with_staggered_arrivals():
    """Every sequence of a batch (mixed lengths, joining and leaving between steps) = its batch-1 output."""
    target, reference = build_tiny("gemma3", seed=5)
    gen = Generator(target, random_draft(target, num_layers=2), block_size=6, max_batch=8, max_length=128)
    prompts = random_prompts(12, seed=5)
    limits = [3, 20, 7, 1, 15, 25, 9, 2, 30, 11, 5, 18]
    expected = [reference_greedy(reference, p, n) for p, n in zip(prompts, limits)]
    ids, done = {}, {}
    pending = list(range(len(prompts)))
    steps = 0
    while pending or gen.has_work():
        if pending and steps % 2 == 0:  # two new arrivals every other step
            for _ in range(2):
                if pending:
                    i = pending.pop(0)
                    ids[gen.add_request(prompts[i], SamplingParams(max_new_tokens=limits[i]))] = i
        for update in gen.step():
            if update.finished:
                done[ids[update.seq_id]] = gen.pop_result(update.seq_id).token_ids
        steps += 1
    assert [done[i] for i in range(len(prompts))] == expected


def test_abort_frees_slot_and_others_unaffected():
    target, reference = build_tiny("llama", seed=6)
    gen = Generator(target, random_draft(target), block_size=4, max_batch=2, max_length=96)
    a, b, c = random_prompts(3, seed=9)
    ida = gen.add_request(a, SamplingParams(max_new_tokens=40))
    idb = gen.add_request(b, SamplingParams(max_new_tokens=12))
    gen.step(); gen.step()
    gen.abort(ida)
    assert gen.num_running == 1
    idc = gen.add_request(c, SamplingParams(max_new_tokens=12))  # reuses a's slot with stale cache behind it
    results = {}
    while gen.has_work():
        for u in gen.step():
            if u.finished:
                results[u.seq_id] = gen.pop_result(u.seq_id).token_ids
    assert results[idb] == reference_greedy(reference, b, 12)
    assert results[idc] == reference_greedy(reference, c, 12)


def test_autoregressive_mode_equals_reference(family_target):
    family, target, reference = family_target
    gen = Generator(target, None, max_batch=3, max_length=96)
    prompts = random_prompts(3, seed=1)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=16))
    assert [r.token_ids for r in results] == [reference_greedy(reference, p, 16) for p in prompts]


@pytest.mark.parametrize("tau, pattern", [(5, [5]), (4.5, [4, 5])])
def test_forced_oracle_commits_exactly_tau_tokens(tau, pattern):
    """Benchmark mode: tau tokens per step whatever the target says (the drafter and verify still run);
    a fractional tau alternates the nearest whole lengths, so the mean sits on it."""
    target, _ = build_tiny("llama", seed=13)
    gen = Generator(target, random_draft(target), block_size=8, max_batch=2, max_length=128)
    prompts = random_prompts(2, seed=4)
    fake = [[(7 * i) % 96 for i in range(60)] for _ in prompts]
    gen.set_oracle(tau, force=True)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=55), references=fake)
    for r, ref in zip(results, fake):
        assert r.token_ids[1:] == ref[1:55]
        whole = r.acceptance_lengths[:-1]  # the last step may be cut by max_new_tokens
        assert len(whole) >= 8 and whole == (pattern * len(whole))[:len(whole)]


def test_gemma2_softcapped_attention_is_lossless():
    target, reference = build_tiny("gemma2", seed=14)
    gen = Generator(target, random_draft(target), block_size=8, max_batch=2, max_length=128)
    prompts = random_prompts(3, seed=14)
    expected = [reference_greedy(reference, p, 24) for p in prompts]
    gen.set_oracle(5)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=24), references=expected)
    assert [r.token_ids for r in results] == expected


@pytest.mark.parametrize("prefill_tokens", [1, 40, 8192])
def test_prompts_prefilled_together_equal_reference(family_target, prefill_tokens):
    """Right-padded group prefill (one group, several, or one prompt each) = each prompt decoded alone."""
    family, target, reference = family_target
    gen = Generator(target, random_draft(target, num_layers=2), block_size=4, max_batch=6, max_length=128,
                    prefill_tokens=prefill_tokens)
    prompts = random_prompts(6, seed=11)
    assert len({len(p) for p in prompts}) > 1  # padding is exercised
    results = gen.generate(prompts, SamplingParams(max_new_tokens=12))
    assert [r.token_ids for r in results] == [reference_greedy(reference, p, 12) for p in prompts], family


def test_seeded_sampling_does_not_depend_on_prefill_grouping():
    target, _ = build_tiny("qwen3", seed=3)
    draft = random_draft(target, num_layers=2)
    prompts = random_prompts(5, seed=4)
    outs = []
    for budget in (1, 8192):
        gen = Generator(target, draft, block_size=4, max_batch=5, max_length=128, prefill_tokens=budget)
        params = [SamplingParams(max_new_tokens=10, temperature=0.9, top_p=0.95, seed=100 + i) for i in range(5)]
        outs.append([r.token_ids for r in gen.generate(prompts, params)])
    assert outs[0] == outs[1]


def test_grouped_admission_waits_for_free_slots_and_stays_lossless():
    """admit_min (datagen's setting): waiting requests join only once that many slots are free."""
    target, reference = build_tiny("llama", seed=8)
    gen = Generator(target, random_draft(target), block_size=4, max_batch=4, max_length=96)
    gen.admit_min = 3
    prompts = random_prompts(7, seed=8)
    limits = [2, 9, 4, 12, 3, 6, 5]
    ids = {gen.add_request(p, SamplingParams(max_new_tokens=n)): i
           for i, (p, n) in enumerate(zip(prompts, limits, strict=True))}
    calls, admit = [], gen._admit

    def spy():
        free, waiting = gen.slots.count(None), len(gen.waiting)
        updates = admit()
        calls.append((free, waiting, len(updates)))
        return updates

    gen._admit = spy
    done = {}
    while gen.has_work():
        for update in gen.step():
            if update.finished:
                done[ids[update.seq_id]] = gen.pop_result(update.seq_id).token_ids
    admitted = [(free, waiting) for free, waiting, n in calls if n]
    assert all(free >= 3 or free >= waiting or free == 4 for free, waiting in admitted)
    assert any(0 < free < 3 and waiting > free and n == 0 for free, waiting, n in calls)  # it did wait
    assert [done[i] for i in range(len(prompts))] == [reference_greedy(reference, p, n)
                                                     for p, n in zip(prompts, limits, strict=True)]


@pytest.mark.parametrize("kernel", ["matmul", "sdpa"])
def test_greedy_equals_autoregressive_with_either_attention_kernel(family_target, kernel, monkeypatch):
    """The GPU picks the matmul kernel for decode/verify shapes: forced here on CPU, output stays exact."""
    from dflashkit.models import attention

    monkeypatch.setattr(attention, "MODE", kernel)
    family, target, reference = family_target
    gen = Generator(target, random_draft(target, num_layers=2, seed=7), block_size=8, max_batch=3, max_length=128)
    prompts = random_prompts(3, seed=11)
    gen.set_oracle(5)
    expected = [reference_greedy(reference, p, 24) for p in prompts]
    results = gen.generate(prompts, SamplingParams(max_new_tokens=24), references=expected)
    for want, got in zip(expected, results, strict=True):
        assert got.token_ids == want, (family, kernel)
