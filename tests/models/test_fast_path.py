"""The fast Llama-family target equals the generic TargetModel: logits, features, cache contents, generation."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import assert_same_forward, check_greedy_on_both_paths, random_prompts, reference_greedy, tiny_hf

from dflashkit import Generator, SamplingParams
from dflashkit.errors import ConfigError
from dflashkit.models.factory import make_target, random_draft
from dflashkit.models.fast_decoder import FastDecoderTarget
from dflashkit.models.target import TargetModel

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 32}
VARIANTS = {
    "llama": ("llama", {}),
    "llama3-rope": ("llama", {"rope_parameters": LLAMA3_ROPE}),
    "llama-tied": ("llama", {"tie_word_embeddings": True}),
    "llama-bias": ("llama", {"attention_bias": True, "mlp_bias": True}),
    "qwen2": ("qwen2", {}),
    "qwen3": ("qwen3", {}),
    "mistral": ("mistral", {}),
}


def _model(variant: str, seed: int = 0):
    """Tiny float64 model; norm weights and biases (ones / zeros at init) randomised so they matter."""
    family, overrides = VARIANTS[variant]
    model = tiny_hf(family, seed=seed, **overrides)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def _pair(variant: str, batch: int = 4, capacity: int = 300):
    model = _model(variant)
    generic, fast = TargetModel(copy.deepcopy(model)), FastDecoderTarget(copy.deepcopy(model))
    for t in (generic, fast):
        t.allocate(batch, capacity)
    return generic, fast


def _same(generic, fast, *args, **kwargs):
    return assert_same_forward(generic, fast, *args, **kwargs)[0]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefill_and_decode_match_generic(variant):
    generic, fast = _pair(variant)
    assert fast.path == "fast" and generic.path == "generic"
    g = torch.Generator().manual_seed(1)
    # one prompt into slot 2 (last logit only), then a right-padded group into slots 3, 0, 1
    ids = torch.randint(0, 96, (1, 23), generator=g)
    _same(generic, fast, ids, torch.arange(23)[None], slot=2, kv_len=64, logits_to_keep=1, layer_ids=[0, 2, 5])
    lengths = [30, 7, 18]
    ids = torch.randint(0, 96, (3, 30), generator=g)
    pos = torch.arange(30)[None].expand(3, -1)
    keep = torch.tensor(sorted({n - 1 for n in lengths}))
    _same(generic, fast, ids, pos, slot=torch.tensor([3, 0, 1]), kv_len=64, logits_to_keep=keep, layer_ids=[1, 5])
    # multi-token decode at per-row positions, over two kv_len buckets and a partial batch
    start = torch.tensor([7, 18, 23, 30])
    for step, (rows, size, kv_len) in enumerate([(4, 5, 64), (4, 3, 256), (2, 1, 64), (4, 4, None)]):
        pos = start[:rows, None] + torch.arange(size)
        ids = torch.randint(0, 96, (rows, size), generator=g)
        logits = _same(generic, fast, ids, pos, kv_len=kv_len, layer_ids=[0, 3, 5] if step % 2 == 0 else None)
        assert logits.shape == (rows, size, 96)
        start[:rows] += size


def test_scaled_rope_is_exercised():
    """Control: the llama3 comparison above would fail if the fast path ignored the rope scaling."""
    scaled = FastDecoderTarget(_model("llama3-rope"))
    plain = TargetModel(_model("llama"))  # same seed: same weights, default rope
    for t in (scaled, plain):
        t.allocate(1, 128)
    ids = torch.randint(0, 96, (1, 100), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        a, _ = scaled.forward(ids, torch.arange(100)[None], slot=0)
        b, _ = plain.forward(ids, torch.arange(100)[None], slot=0)
    assert (a - b).abs().max() > 1e-3


def test_fused_weights_are_shared_not_copied():
    model = _model("qwen2")
    reference = copy.deepcopy(model)
    fast = FastDecoderTarget(model)
    unique = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    assert sum(unique.values()) == sum(p.numel() * p.element_size() for p in reference.parameters())
    fused = {w.untyped_storage().data_ptr() for ws in fast._weights for w in ws if w is not None}
    assert fused <= set(unique)  # every fast-path tensor is the storage of some HF parameter
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.weight.untyped_storage().data_ptr() == fast._weights[0][1].untyped_storage().data_ptr()
    # the HF model, now reading slices of the fused weights, still computes what it did
    ids = torch.randint(0, 96, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["llama", "llama3-rope", "llama-tied", "qwen2", "qwen3"])
def test_generator_greedy_identical_on_both_paths(variant):
    check_greedy_on_both_paths(_model(variant, seed=5), variant)


def test_make_target_chooses_and_explains():
    for variant in ("llama", "qwen2", "qwen3", "mistral"):
        assert make_target(_model(variant)).path == "fast"
    assert make_target(_model("llama"), fast=False).path == "generic"
    refused = {
        "mistral-window": (tiny_hf("mistral", sliding_window=16), "sliding-window"),
        "qwen2-window": (tiny_hf("qwen2", use_sliding_window=True, sliding_window=16, max_window_layers=2),
                         "sliding-window"),
        "dynamic-rope": (tiny_hf("llama", rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                           "rope_theta": 10000.0}), "rope type 'dynamic'"),
    }
    for name, (model, reason) in refused.items():
        assert make_target(copy.deepcopy(model)).path == "generic", name
        with pytest.raises(ConfigError, match=reason):
            make_target(model, fast=True)


def test_eager_context_and_compile_flag():
    generic, fast = _pair("qwen3", batch=2, capacity=64)
    fast.compile_layers()
    assert fast.compiled
    ids = torch.randint(0, 96, (2, 6), generator=torch.Generator().manual_seed(6))
    with fast.eager():  # prefill: compiled layers run eagerly, so no compilation happens here
        _same(generic, fast, ids, torch.arange(6)[None].expand(2, -1), kv_len=64, layer_ids=[2])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("compile", [False, True])
def test_cuda_graphs_and_compile_on_the_fast_path(compile):
    """GPU: graph replay of (compiled) fast layers still gives plain greedy output, AR and DFlash."""
    model = _model("qwen3", seed=7)
    prompts = random_prompts(4, seed=8)
    expected = [reference_greedy(model, p, 24) for p in prompts]
    target = make_target(copy.deepcopy(model).to("cuda"), fast=True)
    gen = Generator(target, random_draft(target, block_size=8), block_size=8, max_batch=4, max_length=128,
                    compile=compile)
    params = SamplingParams(max_new_tokens=24)
    assert [r.token_ids for r in gen.generate(prompts, params, speculative=False)] == expected
    gen.set_oracle(5)
    assert [r.token_ids for r in gen.generate(prompts, params, references=expected)] == expected
    assert gen.graphs.graphs, "no CUDA graph was captured"
