"""Adaptive block size: the cost model's arithmetic, and losslessness while the block size changes."""

from __future__ import annotations

from tiny_models import build_tiny, random_prompts, reference_greedy
from dflashkit import Generator, SamplingParams
from dflashkit.engine.block_size import BlockSizeController
from dflashkit.models.factory import random_draft


def test_expected_tokens_formula():
    c = BlockSizeController(16)
    for depth in range(1, 16):
        c.trials[depth], c.hits[depth] = 1e9, 0.5e9  # a = 0.5 at every depth
    assert abs(c.expected_tokens(1) - 1.0) < 1e-6
    assert abs(c.expected_tokens(4) - (1 + 0.5 + 0.25 + 0.125)) < 1e-6


def test_picks_block_that_maximises_tokens_per_second():
    c = BlockSizeController(16)
    for depth in range(1, 16):
        c.trials[depth], c.hits[depth] = 1e9, 0.9e9
    c.step_time = {(1, b): 1.0 for b in c.candidates}  # GPU-like: verify cost flat in block size
    c.steps = 1
    assert c.choose(1) == 16
    c.step_time = {(1, b): 1.0 + 0.5 * b for b in c.candidates}  # CPU-like: cost grows with the block
    assert c.choose(1) in (2, 4)
    for depth in range(1, 16):
        c.hits[depth] = 0.0  # a drafter that is never right: plain decoding wins
    assert c.choose(1) == 1


def test_observe_counts_depths():
    c = BlockSizeController(8)
    c.observe(1, 8, 0.1, [3, 8, 1])
    assert c.trials[1] == 3 and c.hits[1] == 2 and c.trials[3] == 2 and c.hits[3] == 1 and c.hits[7] == 1


def test_adaptive_engine_is_lossless():
    target, reference = build_tiny("qwen3", seed=12)
    gen = Generator(target, random_draft(target, num_layers=1), max_batch=3, max_length=160)
    assert gen.controller.fixed is None
    prompts = random_prompts(5, seed=3)
    expected = [reference_greedy(reference, p, 50) for p in prompts]
    gen.set_oracle(6)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=50), references=expected)
    assert [r.token_ids for r in results] == expected
    tried = {b for (_, b) in gen.controller.step_time}
    assert len(tried) > 1  # the block size really changed during the run


def _record_drafts(gen: Generator, pattern: list[int]) -> list:
    """Force the block sizes of successive steps; record the drafter's logits of every drafting step."""
    sizes = iter(pattern * 100)
    gen.controller.choose = lambda rows: next(sizes)
    seen = []
    logits = gen.draft.logits

    def spy(hidden, head):
        out = logits(hidden, head)
        seen.append(out.detach().clone())
        return out

    gen.draft.logits = spy
    return seen


def test_deferred_absorption_gives_the_drafter_the_same_context():
    """Single-token steps leave features pending; the drafter must still see exactly the context it would
    have seen had every step absorbed at once (same draft logits at every drafting step, batch of 3)."""
    target, reference = build_tiny("llama", seed=21)
    draft = random_draft(target, block_size=8, seed=5)
    prompts = random_prompts(3, seed=22)
    params = SamplingParams(max_new_tokens=100)
    pattern = [1, 1, 1, 4, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 8, 1, 2]  # runs longer than the 8-token chunk
    runs = {}
    for defer in (True, False):
        gen = Generator(target, draft, max_batch=4, max_length=160, cuda_graphs=False)
        gen.defer_absorb = defer
        seen = _record_drafts(gen, pattern)
        outputs = [r.token_ids for r in gen.generate(prompts, params)]
        del gen.draft.logits  # back to the class method for the next engine
        runs[defer] = (outputs, seen)
    assert runs[True][0] == runs[False][0] == [reference_greedy(reference, p, 100) for p in prompts]
    assert len(runs[True][1]) == len(runs[False][1]) > 10
    for a, b in zip(runs[True][1], runs[False][1], strict=True):
        assert a.shape == b.shape
        assert (a - b).abs().max().item() < 1e-9


def test_a_slow_outlier_step_does_not_lock_in_a_small_block():
    """A compile or graph capture in the middle of a run (new cache length) must not make a block look slow."""
    c = BlockSizeController(16)
    for depth in range(1, 16):
        c.trials[depth], c.hits[depth] = 1e9, 0.9e9
    for b in c.candidates:
        for _ in range(3):
            c.observe(1, b, 1.0 + 0.001 * b, [])
    c.steps = 1
    assert c.choose(1) == 16
    c.observe(1, 16, None, [2])  # the step that compiled: acceptance counts, its time does not
    assert c.choose(1) == 16
    c.observe(1, 16, 500.0, [])  # an untagged outlier still hurts...
    assert c.choose(1) != 16
    c.observe(1, 16, 1.1, [])  # ...until the next typical sample, which replaces it
    assert c.choose(1) == 16


def test_exploration_tries_the_next_size_as_often_as_its_cost_allows():
    """CPU-like costs: block 4 is best; block 8 is tried now and then, block 16 (3x the cost) never."""
    c = BlockSizeController(16)
    for depth in range(1, 16):
        c.trials[depth], c.hits[depth] = 1e9, (0.45 if depth < 4 else 0.2) * 1e9
    c.step_time = {(1, 1): 1.0, (1, 2): 1.2, (1, 4): 1.4, (1, 8): 2.8, (1, 16): 4.2}
    picks = [c.choose(1) for _ in range(1000)]
    assert picks.count(16) == 0
    assert 10 <= picks.count(8) <= 30  # extra cost 100% -> every ~50 steps: ~2% of the time
    assert picks.count(4) == 1000 - picks.count(8)
    c.step_time = {(1, b): 1.0 for b in c.candidates}  # GPU-like: flat costs, the largest block is best
    for depth in range(1, 16):
        c.hits[depth] = 0.9e9
    assert set(c.choose(1) for _ in range(100)) == {16}
