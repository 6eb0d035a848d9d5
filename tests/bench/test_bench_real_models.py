"""The hf and local backends on a real (tiny, random) transformers model: the plumbing runs end to end."""

from __future__ import annotations

import pytest
import torch
from benchkit import ByteTokenizer

from dflashkit.bench.backends.hf import HFBackend
from dflashkit.bench.backends.local import LocalBackend
from dflashkit.bench.metrics import compare_modes, summarize
from dflashkit.bench.runner import run_suite
from dflashkit.bench.samples import Sample

VOCAB = 96
SAMPLES = [Sample("a", ["hello there", "and again"]), Sample("b", ["second prompt"])]


@pytest.fixture(scope="module")
def tiny_llama():
    from transformers import AutoModelForCausalLM, LlamaConfig

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=4,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                         eos_token_id=None, bos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    return AutoModelForCausalLM.from_config(config).to(torch.float64).eval()


def test_hf_backend_generates_greedy_batch_one(tiny_llama):
    backend = HFBackend(hf_model=tiny_llama, tokenizer=ByteTokenizer(VOCAB))
    (run,) = run_suite(backend, SAMPLES, [1], 6, warmup=0, progress=False)
    assert [(r.sample_id, r.turn) for r in run.records] == [("a", 0), ("a", 1), ("b", 0)]
    for r in run.records:
        assert r.completion_tokens == 6 and r.finish_reason == "length" and r.ttft_s is not None
        assert r.acceptance_lengths is None
    assert backend.info()["device"] == "cpu"


def test_local_backend_on_the_real_engine_is_lossless(tiny_llama):
    import copy

    from dflashkit import Generator, TargetModel
    from dflashkit.models.factory import random_draft

    target = TargetModel(copy.deepcopy(tiny_llama))
    gen = Generator(target, random_draft(target, block_size=4), ByteTokenizer(VOCAB), max_batch=2, max_length=256)
    runs = run_suite(LocalBackend(generator=gen), SAMPLES, [2], 5, warmup=0, progress=False)
    summaries = [summarize(r) for r in runs]
    assert compare_modes(runs, summaries)["2"]["identical_outputs"] == 1.0  # greedy, float64
    dflash = summaries[1]
    assert dflash["mode"] == "dflash" and dflash["acceptance_length"] >= 1.0
    assert all(r.completion_tokens == 5 for run in runs for r in run.records)
