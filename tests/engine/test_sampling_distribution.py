"""Sampling is lossless: DFlash samples follow the target's processed distribution (chi-square tests)."""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest
import torch
from scipy.stats import chisquare

from tiny_models import build_tiny
from dflashkit import Generator, SamplingParams
from dflashkit.engine import sampling
from dflashkit.engine.sampling import BatchSampling
from dflashkit.models.factory import random_draft

ALPHA = 1e-3


def _chi2_pvalue(samples: torch.Tensor, expected: torch.Tensor) -> float:
    observed = torch.bincount(samples, minlength=expected.numel()).double()
    keep = expected > 0
    expected = expected.double() / expected.double()[keep].sum() * observed.sum()
    assert observed[~keep].sum() == 0, "sampled a token of probability zero"
    exp = expected[keep].numpy()
    exp = exp * observed[keep].sum().item() / exp.sum()
    return float(chisquare(observed[keep].numpy(), exp).pvalue)


@pytest.mark.parametrize("k", [1, 3])
def test_rejection_rule_preserves_target_distribution(k):
    """Unit test of the rule alone: first and second committed tokens ~ p, whatever q is."""
    torch.manual_seed(0)
    n, vocab = 60000, 6
    p_rows = torch.softmax(torch.randn(k + 1, vocab) * 1.5, -1)
    q_rows = torch.softmax(torch.randn(k, vocab) * 1.5, -1)
    q_rows[:, 0] = 0  # the drafter never proposes token 0: only the residual can produce it
    q_rows = q_rows / q_rows.sum(-1, keepdim=True)
    p = p_rows.expand(n, -1, -1)
    q = q_rows.expand(n, -1, -1)
    drafts = sampling.sample(q, torch.rand(n, k))
    accepted, nxt = sampling.accept_rejection(drafts, p, q, torch.rand(n, k), torch.rand(n))
    tokens = torch.cat([drafts, drafts[:, :1]], 1).scatter(1, accepted[:, None], nxt[:, None])
    assert _chi2_pvalue(tokens[:, 0], p_rows[0]) > ALPHA
    if k > 1:
        second = tokens[accepted >= 1, 1]
        assert _chi2_pvalue(second, p_rows[1]) > ALPHA
    # the test can fail: the drafter's own distribution is rejected
    assert _chi2_pvalue(drafts[:, 0], p_rows[0]) < ALPHA


def test_probs_apply_temperature_top_k_top_p():
    logits = torch.tensor([[[2.0, 1.0, 0.5, 0.0, -1.0]]])
    s = BatchSampling.build([SamplingParams(temperature=0.5, top_k=3, top_p=0.9)], "cpu")
    got = sampling.probs(logits, s)[0, 0]
    ref = torch.softmax(logits[0, 0, :3] / 0.5, -1)
    keep = (ref.cumsum(-1) - ref) < 0.9
    ref = torch.where(keep, ref, torch.zeros_like(ref))
    ref = torch.cat([ref / ref.sum(), torch.zeros(2)])
    assert torch.allclose(got, ref, atol=1e-6)


def test_a_top_p_below_float32_range_keeps_the_top_token():
    logits = torch.tensor([[[0.5, 2.0, 1.0]]])
    s = BatchSampling.build([SamplingParams(temperature=1.0, top_p=1e-300)], "cpu")
    got = sampling.probs(logits, s)[0, 0]
    assert torch.equal(got, torch.tensor([0.0, 1.0, 0.0]))
    assert sampling.sample(got, torch.tensor(0.7)).item() == 1


def _exact_marginals(reference, prompt, s, vocab):
    """Exact distributions of the 1st, 2nd and 3rd generated token under the processed target."""
    with torch.no_grad():
        p1 = sampling.probs(reference(torch.tensor([prompt])).logits[:, -1:], s)[0, 0]
        seqs2 = torch.tensor([prompt + [a] for a in range(vocab)])
        p2_given = sampling.probs(reference(seqs2).logits[:, -1:], _rows(s, vocab))[:, 0]  # [v1, v2]
        seqs3 = torch.tensor([prompt + [a, b] for a, b in itertools.product(range(vocab), repeat=2)])
        p3_given = sampling.probs(reference(seqs3).logits[:, -1:], _rows(s, vocab * vocab))[:, 0]
    joint12 = p1[:, None] * p2_given
    p2 = joint12.sum(0)
    p3 = (joint12.reshape(-1, 1) * p3_given).sum(0)
    return p1, p2, p3


def _rows(s: BatchSampling, n: int) -> BatchSampling:
    return BatchSampling(s.temperature.expand(n), s.top_p.expand(n), s.top_k.expand(n), s.greedy.expand(n),
                         s.all_greedy, s.needs_filter)


def sharp_draft(target):
    """A random drafter, sharpened so that acceptance is neither ~0 nor ~1."""
    draft = random_draft(target, num_layers=1, block_size=4, seed=2)
    with torch.no_grad():
        draft.norm.weight.mul_(4.0)
    return draft


def check_samples_match_target(gen, reference, params: SamplingParams, vocab: int, seeded: bool = False) -> None:
    """3,000 samples of 3 tokens from one prompt follow the exact target marginals (chi-square), and some
    drafts were accepted (so more than the rejection path was tested). `seeded`: request i has seed i, so the
    samples come from the hash streams of 3,000 neighbouring seeds."""
    prompt = [3, 1, 4, 1, 5]
    n = 3000
    results = gen.generate([prompt] * n, [replace(params, seed=i) for i in range(n)] if seeded else params)
    samples = torch.tensor([r.token_ids for r in results])
    s = BatchSampling.build([params], "cpu")
    for position, exact in enumerate(_exact_marginals(reference, prompt, s, vocab)):
        assert _chi2_pvalue(samples[:, position], exact) > ALPHA, f"token {position + 1}"
    accepted = [a for r in results for a in r.acceptance_lengths]
    assert 1 < max(accepted), "the rejection path alone was tested; the drafter never got accepted"


@pytest.mark.parametrize("temperature,top_p,top_k,seeded", [(1.0, 1.0, 0, False), (1.0, 1.0, 0, True),
                                                           (0.7, 0.9, 0, False), (1.3, 1.0, 5, False),
                                                           (0.9, 0.8, 6, False), (0.9, 0.8, 6, True)])
def test_dflash_samples_match_target_distribution(temperature, top_p, top_k, seeded):
    vocab = 12
    target, reference = build_tiny("qwen3", seed=1, vocab=vocab)
    torch.manual_seed(0)
    gen = Generator(target, sharp_draft(target), block_size=4, max_batch=64, max_length=32)
    params = SamplingParams(max_new_tokens=3, temperature=temperature, top_p=top_p, top_k=top_k)
    check_samples_match_target(gen, reference, params, vocab, seeded)


def test_seed_reproducible_regardless_of_batch():
    target, _ = build_tiny("llama", seed=2)
    gen = Generator(target, random_draft(target), block_size=4, max_batch=4, max_length=64)
    p = SamplingParams(max_new_tokens=12, temperature=1.0, seed=1234)
    alone = gen.generate([[1, 2, 3]], p)[0].token_ids
    noisy = SamplingParams(max_new_tokens=12, temperature=1.0)
    batched = gen.generate([[5, 6], [1, 2, 3], [7]], [noisy, p, noisy])[1].token_ids
    assert alone == batched


def test_block_size_one_sampling_is_plain_sampling():
    """Adaptive block size may pick 1 (no drafts): rejection sampling with K = 0 samples from p."""
    torch.manual_seed(1)
    p_row = torch.softmax(torch.randn(1, 6), -1)
    n = 20000
    p = p_row.expand(n, 1, 6)
    accepted, nxt = sampling.accept_rejection(torch.zeros(n, 0, dtype=torch.long), p, p.new_zeros(n, 0, 6),
                                              torch.rand(n, 0), torch.rand(n))
    assert (accepted == 0).all()
    assert _chi2_pvalue(nxt, p_row[0]) > ALPHA
    target, _ = build_tiny("llama", seed=3)
    gen = Generator(target, random_draft(target), block_size=4, max_batch=2, max_length=64)
    gen.controller.fixed = 1
    out = gen.generate([[1, 2], [3]], SamplingParams(max_new_tokens=8, temperature=1.0))
    assert all(len(r.token_ids) == 8 for r in out)


def test_generate_leaves_engine_usable_after_an_error(monkeypatch):
    target, _ = build_tiny("llama", seed=3)
    gen = Generator(target, random_draft(target), block_size=4, max_batch=2, max_length=64)
    real = gen._step_body
    monkeypatch.setattr(gen, "_step_body", lambda *a: (_ for _ in ()).throw(RuntimeError("boom")))
    with pytest.raises(RuntimeError, match="boom"):
        gen.generate([[1, 2, 3]], SamplingParams(max_new_tokens=8))
    monkeypatch.setattr(gen, "_step_body", real)
    assert not gen.has_work()
    assert len(gen.generate([[1, 2, 3]], SamplingParams(max_new_tokens=8))[0].token_ids) == 8


def test_vanishing_temperature_is_greedy_and_a_huge_top_k_is_off():
    """logits / 1e-39 overflow float32 (NaN-sampled tokens), and a top_k past int64 failed the batch's step for
    every request in it: the first samples as greedy, the second keeps every token."""
    target, _ = build_tiny("llama", seed=2)
    gen = Generator(target, random_draft(target), block_size=4, max_batch=4, max_length=64)
    greedy = gen.generate([[1, 2, 3]], SamplingParams(max_new_tokens=12))[0].token_ids
    tiny = SamplingParams(max_new_tokens=12, temperature=1e-39)
    assert tiny.greedy and gen.generate([[1, 2, 3]], tiny)[0].token_ids == greedy
    plain = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7)
    huge = SamplingParams(max_new_tokens=12, temperature=1.0, seed=7, top_k=10**30)
    out = gen.generate([[1, 2, 3], [4, 5]], [huge, plain])
    assert len(out[0].token_ids) == 12 and len(out[1].token_ids) == 12
