"""A sequence that reaches the context limit inside an accepted block leaves its row's anchor past max_length;
the row is still stepped (empty) while a later slot runs, and its block must stay inside the caches."""

from __future__ import annotations

from tiny_models import build_tiny, random_prompts, reference_greedy

from dflashkit import Generator, SamplingParams
from dflashkit.models.factory import random_draft


def test_row_stopped_at_the_context_limit_mid_block_does_not_overflow_the_cache():
    target, reference = build_tiny("llama", seed=1)
    max_length = 48  # capacity round_up(48 + 16, 64) = 64: one block of slack, not two
    gen = Generator(target, random_draft(target, num_layers=1), block_size=16, max_batch=2, max_length=max_length)
    near_limit, short = random_prompts(2, seed=3, lengths=(max_length - 3, 5))
    past_limit = reference_greedy(reference, near_limit, 20)  # HF's own context is longer
    want = [past_limit[:3], reference_greedy(reference, short, 40)]
    gen.set_oracle(16)  # whole blocks accepted: the first row's anchor jumps 16 past its 3-token room
    results = gen.generate([near_limit, short], [SamplingParams(max_new_tokens=100), SamplingParams(max_new_tokens=40)],
                           references=[past_limit, want[1]])
    assert [r.token_ids for r in results] == want
    assert [r.finish_reason for r in results] == ["length", "length"]
