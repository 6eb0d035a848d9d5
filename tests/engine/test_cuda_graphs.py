"""GPU only: CUDA-graph replay agrees with the eager path, and DFlash == AR on the device (skipped on CPU)."""

from __future__ import annotations

import pytest
import torch

from tiny_models import build_tiny, random_prompts, reference_greedy
from dflashkit import Generator, SamplingParams
from dflashkit.models.factory import random_draft

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]


def _on_gpu(family: str, seed: int):
    target, reference = build_tiny(family, seed=seed)
    target.model.to("cuda")
    target.embed_weight = target.model.get_input_embeddings().weight
    target.lm_head_weight = target.model.get_output_embeddings().weight
    return target, reference


@pytest.mark.parametrize("family", ["llama", "gemma3", "gemma4"])
@pytest.mark.parametrize("tau", [1, 4, 8])
def test_graphs_equal_eager_and_autoregressive(family, tau):
    target, reference = _on_gpu(family, seed=tau)
    draft = random_draft(target, num_layers=2, block_size=8)
    prompts = random_prompts(6, seed=tau)
    expected = [reference_greedy(reference, p, 40) for p in prompts]
    outputs = {}
    for graphs in (False, True):
        gen = Generator(target, draft, block_size=8, max_batch=4, max_length=200, cuda_graphs=graphs)
        gen.set_oracle(tau)
        outputs[graphs] = gen.generate(prompts, SamplingParams(max_new_tokens=40), references=expected)
        if graphs:
            assert gen.graphs.graphs, "no CUDA graph was captured"
    for eager, graphed, want in zip(outputs[False], outputs[True], expected):
        assert eager.token_ids == want
        assert graphed.token_ids == want
        assert graphed.acceptance_lengths == eager.acceptance_lengths


def test_graphs_sampling_runs_and_is_seeded():
    target, _ = _on_gpu("qwen3", seed=3)
    gen = Generator(target, random_draft(target, block_size=8), block_size=8, max_batch=4, max_length=128)
    p = SamplingParams(max_new_tokens=30, temperature=0.9, top_p=0.95, seed=7)
    first = gen.generate([[1, 2, 3]] * 3, p)
    again = gen.generate([[1, 2, 3]] * 3, p)
    assert [r.token_ids for r in first] == [r.token_ids for r in again]
