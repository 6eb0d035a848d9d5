"""Seeded sampling: the counter-based hash uniforms are uniform and uncorrelated, and a seeded request gives
the same tokens whatever else is batched, in whatever slot, in plain AR and DFlash mode."""

from __future__ import annotations

import pytest
import torch
from scipy.stats import chisquare

from tiny_models import build_tiny, random_prompts
from dflashkit import Generator, SamplingParams
from dflashkit.engine import sampling
from dflashkit.engine.sampling import hash_uniforms
from dflashkit.models.factory import random_draft

ALPHA = 1e-3
MASK = (1 << 64) - 1


def _mix_reference(x: int) -> int:
    """splitmix64's finaliser on Python ints (unsigned, explicit mod 2**64)."""
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & MASK
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & MASK
    return x ^ (x >> 31)


def _uniform_reference(seed: int, n: int) -> float:
    x = _mix_reference((_mix_reference(seed & MASK) + n * 0x9E3779B97F4A7C15) & MASK)
    return (x >> 40) / 2**24


def _grid(seeds: int, count: int) -> torch.Tensor:
    """[seeds, count]: numbers 0..count-1 of seeds 0..seeds-1."""
    return hash_uniforms(torch.arange(seeds), torch.zeros(seeds, dtype=torch.long), count)


def test_hash_uniforms_equal_unsigned_reference():
    """torch's arithmetic >> is masked into a logical shift and int64 products wrap: bit-exact splitmix64."""
    seeds = [0, 1, 2, 12345, -1, -(2**63), 2**63 - 1, 7 * 1_000_003 + 31]
    counters = [0, 1, 5, 2**40 + 3]
    width = 3
    got = hash_uniforms(torch.tensor(seeds).repeat_interleave(len(counters)),
                        torch.tensor(counters).repeat(len(seeds)), width)
    want = [[_uniform_reference(s, c + j) for j in range(width)] for s in seeds for c in counters]
    assert got.dtype == torch.float32
    assert got.tolist() == want


def test_hash_uniforms_are_uniform_in_unit_interval():
    u = _grid(1000, 1000).flatten()  # a million numbers: 1000 neighbouring seeds x their first 1000
    assert 0 <= u.min() and u.max() < 1
    assert torch.equal(u * 2**24, (u * 2**24).floor())  # the top 24 bits, exact in float32
    assert chisquare(torch.bincount((u * 1000).long(), minlength=1000).numpy()).pvalue > ALPHA
    assert len(u.unique()) > 0.96 * len(u)  # of 2**24 values: ~3% of a million collide by chance


def test_hash_uniforms_all_ones_word_stays_below_one(monkeypatch):
    """The largest hash maps to 1 - 2**-24, not 1.0 (an inverse-CDF draw of 1.0 would run off the end)."""
    monkeypatch.setattr(sampling, "_mix64", lambda x: x)  # then the hash word is seed + n * golden
    u = hash_uniforms(torch.tensor([-1]), torch.tensor([0]), 1)
    assert u.item() == 1 - 2**-24


@pytest.mark.parametrize("seed_step,lag", [(0, 1), (0, 7), (1, 0), (31, 0), (1_000_003, 0), (1, 1)])
def test_hash_uniforms_pairs_are_independent(seed_step, lag):
    """Pairs (seed s, number n) and (seed s + seed_step, number n + lag) fill a 32 x 32 grid evenly and are
    uncorrelated: consecutive numbers of a stream, and neighbouring seeds (datagen's are s*1_000_003 + 31c + t)."""
    seeds, count = 2000, 256
    base = torch.arange(seeds) * 3  # disjoint seeds, so the pairs do not share a number
    zero = torch.zeros(seeds, dtype=torch.long)
    a = hash_uniforms(base, zero, count)
    b = hash_uniforms(base + seed_step, zero + lag, count)
    if seed_step == 0:  # pairs within one stream: keep every other window so no number is in two pairs
        a, b = a[:, ::2 * lag], b[:, ::2 * lag]
    a, b = a.flatten(), b.flatten()
    cells = (a * 32).long() * 32 + (b * 32).long()
    assert chisquare(torch.bincount(cells, minlength=32 * 32).numpy()).pvalue > ALPHA
    r = torch.corrcoef(torch.stack([a, b]).double())[0, 1].abs().item()
    assert r < 4 / len(a) ** 0.5


def _engine(speculative: bool, max_batch: int = 6) -> Generator:
    target, _ = build_tiny("qwen3", seed=4)
    draft = random_draft(target, num_layers=1, block_size=4, seed=3) if speculative else None
    return Generator(target, draft, block_size=4 if speculative else None, max_batch=max_batch, max_length=96,
                     cuda_graphs=False)


def test_fill_uniforms_continues_each_stream_across_widths_and_slots():
    gen = _engine(speculative=True)
    gen.allocate()
    seeds = [7, None, 7, 99, None, 7]
    with torch.inference_mode():
        for slot, seed in enumerate(seeds):
            gen.slot_seeded[slot] = seed is not None
            gen.s_seeded[slot] = seed is not None
            gen.s_seed[slot] = seed or 0
            gen.s_drawn[slot] = 0
        drawn = []
        for width in (3, 8, 1, 5):  # the buffer holds 2 x block size = 8 per row
            gen._fill_uniforms(0, len(seeds), width)
            drawn.append(gen.uniforms[:len(seeds), :width].clone())
        drawn = torch.cat(drawn, dim=1)
        for slot, seed in enumerate(seeds):
            if seed is not None:
                want = hash_uniforms(torch.tensor([seed]), torch.tensor([0]), drawn.shape[1])[0]
                assert torch.equal(drawn[slot], want), slot
        assert gen.s_drawn[0].item() == drawn.shape[1]
        unseeded = drawn[[1, 4]]
        assert 0 <= unseeded.min() and unseeded.max() < 1
        assert not torch.equal(unseeded[0], unseeded[1])
        assert not any(torch.equal(unseeded[0], drawn[s]) for s in (0, 3))


@pytest.mark.parametrize("speculative", [False, True], ids=["ar", "dflash"])
def test_seeded_request_gives_the_same_tokens_whatever_the_batch(speculative):
    gen = _engine(speculative)
    prompt = [5, 17, 2, 40]
    mine = SamplingParams(max_new_tokens=24, temperature=0.9, top_p=0.95, seed=2024)
    alone = gen.generate([prompt], mine)[0].token_ids
    assert len(alone) == 24
    assert gen.generate([prompt], mine)[0].token_ids == alone

    others = [SamplingParams(max_new_tokens=n, temperature=t, top_p=p, top_k=k, seed=s) for n, t, p, k, s in
              [(30, 1.0, 1.0, 0, None), (9, 0.7, 0.9, 5, 2025), (24, 0.0, 1.0, 0, None), (17, 1.2, 1.0, 0, 3)]]
    prompts = random_prompts(len(others), seed=8)
    # in slots 2 and 4, with sampled, filtered, greedy, seeded and unseeded neighbours (the first to finish
    # frees its slot for a late joiner, which then prefills alone)
    batch = gen.generate(prompts[:2] + [prompt] + prompts[2:] + [prompt, prompt],
                         others[:2] + [mine] + others[2:] + [mine, mine])
    assert [batch[i].token_ids for i in (2, 5, 6)] == [alone] * 3

    gen.add_request(prompts[0], others[0])  # joins a running batch: admitted at a later step, another prefill
    gen.step()
    gen.step()
    late = gen.add_request(prompt, mine)
    while gen.has_work():
        gen.step()
    assert gen.pop_result(late).token_ids == alone

    other_seed = gen.generate([prompt], SamplingParams(max_new_tokens=24, temperature=0.9, top_p=0.95, seed=2023))
    assert other_seed[0].token_ids != alone
    wrapped = SamplingParams(max_new_tokens=24, temperature=0.9, top_p=0.95, seed=2024 + 2**64)  # taken mod 2**64
    assert gen.generate([prompt], wrapped)[0].token_ids == alone
