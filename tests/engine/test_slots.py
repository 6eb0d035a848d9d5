"""The generator's per-slot host state (sampling mode, active rows) mirrors the slots across steps."""

from __future__ import annotations

from tiny_models import build_tiny, random_prompts

from dflashkit import Generator, SamplingParams


def test_slot_mirrors_follow_admissions_and_releases():
    """Mixed greedy / sampled / filtered requests, some finishing at admission (max_new_tokens=1) or aborted."""
    target, _ = build_tiny("llama", seed=5)
    gen = Generator(target, None, max_batch=6, max_length=96, speculative=False)
    kinds = [SamplingParams(max_new_tokens=n, temperature=t, top_p=p, seed=i if i % 3 else None)
             for i, (n, t, p) in enumerate([(1, 0.8, 1.0), (5, 0.0, 1.0), (9, 0.7, 0.9), (1, 0.0, 1.0),
                                            (4, 1.0, 1.0), (12, 0.0, 1.0), (3, 0.5, 0.8), (7, 0.0, 1.0)])]
    ids = [gen.add_request(p, k) for p, k in zip(random_prompts(len(kinds), seed=5), kinds, strict=True)]
    steps = 0
    while gen.has_work():
        gen.step()
        steps += 1
        if steps == 2:
            gen.abort(ids[2])
        occupied = [s is not None for s in gen.slots]
        assert gen.slot_sampled == [s is not None and not s.params.greedy for s in gen.slots]
        assert gen.slot_filtered == [s is not None and s.params.top_p < 1.0 for s in gen.slots]
        seeded = [s is not None and s.params.seed is not None for s in gen.slots]
        assert gen.slot_seeded == seeded
        assert gen.s_seeded[occupied].tolist() == [x for x, o in zip(seeded, occupied) if o]
        assert gen.active.tolist() == occupied  # finished rows stop advancing
        assert all(s.finish_reason is None for s in gen.slots if s is not None)
        assert gen.num_running == sum(occupied)
    results = [gen.pop_result(i) for i in ids]
    assert [r.finish_reason for r in results] == ["length"] * 2 + ["abort"] + ["length"] * 5
    assert [len(r.token_ids) for i, r in enumerate(results) if i != 2] == [1, 5, 1, 4, 12, 3, 7]
