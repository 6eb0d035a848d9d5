"""Length-dependent RoPE (`longrope`, `dynamic`) on the generic path: HF picks the frequencies of a forward from
max(position_ids) + 1. The engine's padded prefill, verify blocks past the anchor and other rows of the batch
must not change a sequence's frequencies: output equals HF's own cached greedy decoding of that sequence alone."""

from __future__ import annotations

import copy

import pytest
from tiny_models import random_prompts, reference_greedy, tiny_hf

from dflashkit import Generator, SamplingParams
from dflashkit.models.factory import make_target, random_draft

LONGROPE = {"rope_type": "longrope", "rope_theta": 10000.0, "original_max_position_embeddings": 40,
            "short_factor": [1.0] * 8, "long_factor": [4.0 + i for i in range(8)]}  # head_dim 16: 8 frequencies


@pytest.mark.parametrize("batch, block", [(1, 1), (1, 4), (4, 4)])
def test_longrope_frequencies_follow_each_sequence_not_the_forward(batch, block):
    """Prompts of 5 and 38 tokens are padded to 64 in prefill (long factors for all, before), and a 60-token
    prompt in the batch switched every row to the long factors."""
    model = tiny_hf("llama", seed=3, rope_parameters=LONGROPE, max_position_embeddings=512)
    target = make_target(copy.deepcopy(model))
    assert target.path == "generic"
    prompts = random_prompts(4, seed=1, lengths=(5, 60, 30, 38))
    expected = [reference_greedy(copy.deepcopy(model), p, 12) for p in prompts]
    draft = random_draft(target, block_size=4) if block > 1 else None
    gen = Generator(target, draft, block_size=block if block > 1 else None, max_batch=batch, max_length=128)
    assert [r.token_ids for r in gen.generate(prompts, SamplingParams(max_new_tokens=12))] == expected


def test_dynamic_rope_is_not_scaled_by_a_verify_block_past_the_context():
    """Near max_position_embeddings a verify block reaches past it: HF's update then scaled the whole batch's
    frequencies, which plain decoding (never past the limit) does not."""
    rope = {"rope_type": "dynamic", "rope_theta": 10000.0, "factor": 4.0}
    model = tiny_hf("llama", seed=3, rope_parameters=rope, max_position_embeddings=64)
    target = make_target(copy.deepcopy(model))
    assert target.path == "generic"
    prompts = random_prompts(4, seed=1, lengths=(50, 40, 10, 60))
    expected = [reference_greedy(copy.deepcopy(model), p, 64 - len(p)) for p in prompts]
    gen = Generator(target, random_draft(target, block_size=16), block_size=16, max_batch=4, max_length=64)
    gen.set_oracle(16)
    results = gen.generate(prompts, SamplingParams(max_new_tokens=64), references=expected)
    assert [r.token_ids for r in results] == expected
