"""The fast Gemma target equals the generic TargetModel and HF's own forward: logits, features, caches, generation."""

from __future__ import annotations

import copy

import pytest
import torch
from tiny_models import LAYER_TYPES, VOCAB, assert_same_forward, check_greedy_on_both_paths

from dflashkit.errors import ConfigError
from dflashkit.models.factory import make_target
from dflashkit.models.fast_gemma import FastGemmaTarget, unsupported_reason
from dflashkit.models.target import TargetModel

SHARED = dict(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, max_position_embeddings=512, eos_token_id=None, bos_token_id=None,
              pad_token_id=None, tie_word_embeddings=False, sliding_window=6, layer_types=LAYER_TYPES)
# tiny_config("gemma4"): per-layer inputs, 2 KV-sharing layers, wider global heads, proportional RoPE on full layers
GEMMA4 = dict(num_kv_shared_layers=2, hidden_size_per_layer_input=8, global_head_dim=32)
VARIANTS = {
    "gemma4": ("gemma4", {}),
    "gemma4-plain": ("gemma4", {"num_kv_shared_layers": 0, "hidden_size_per_layer_input": 0,
                                "final_logit_softcapping": 1.0, "tie_word_embeddings": True}),
    "gemma4-k-eq-v": ("gemma4", {"attention_k_eq_v": True, "num_global_key_value_heads": 1, "attention_bias": True,
                                 "use_double_wide_mlp": True, "num_kv_shared_layers": 3}),
    "gemma4-multimodal": ("gemma4-mm", {"pad_token_id": 0}),
    "gemma3": ("gemma3", {"final_logit_softcapping": 30.0, "query_pre_attn_scalar": 20}),
}
PLACEHOLDERS = {"image_token_id": 90, "video_token_id": 91, "audio_token_id": 92}  # in the tiny vocab: exercised
HF_TOL = {"rtol": 0, "atol": 1e-9}  # vs HF's forward (its own mask and dynamic cache)


def _config(family: str, **overrides):
    from transformers import Gemma3TextConfig
    from transformers.models.gemma4 import Gemma4Config, Gemma4TextConfig

    if family == "gemma3":
        return Gemma3TextConfig(**{**SHARED, **overrides})
    text = Gemma4TextConfig(**{**SHARED, **GEMMA4, **overrides})
    if family == "gemma4-mm":
        return Gemma4Config(text_config=text.to_dict(), vision_config=None, audio_config=None, **PLACEHOLDERS)
    return text


def _model(variant: str, seed: int = 0, **extra):
    """Tiny float64 model; norm weights, biases and layer scalars (ones / zeros at init) randomised so they matter."""
    from transformers import AutoModelForCausalLM
    from transformers.models.gemma4 import Gemma4ForConditionalGeneration

    family, overrides = VARIANTS[variant]
    config = _config(family, **{**overrides, **extra})
    torch.manual_seed(seed)
    if family == "gemma4-mm":
        model = Gemma4ForConditionalGeneration(config)
    else:
        model = AutoModelForCausalLM.from_config(config)
    model = model.to(torch.float64).eval()
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for _, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        for name, b in model.named_buffers():
            if name.endswith("layer_scalar"):
                b.uniform_(0.5, 1.5, generator=g)
    return model


def _triple(variant: str, batch: int = 4, capacity: int = 300):
    model = _model(variant)
    generic, fast = TargetModel(copy.deepcopy(model)), FastGemmaTarget(copy.deepcopy(model))
    for t in (generic, fast):
        t.allocate(batch, capacity)
    return generic, fast, model


_same = assert_same_forward


def _hf(reference, ids: list[int], layer_ids: list[int]):
    """HF's uncached forward over a whole sequence -> logits [T, V], features [T, len(layer_ids) * hidden]."""
    with torch.inference_mode():
        out = reference(input_ids=torch.tensor([ids]), output_hidden_states=True)
    features = torch.cat([out.hidden_states[i + 1][0] for i in layer_ids], dim=-1) if layer_ids else None
    return out.logits[0], features


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_prefill_and_decode_match_generic_and_hf(variant):
    generic, fast, reference = _triple(variant)
    assert fast.path == "fast" and generic.path == "generic"
    g = torch.Generator().manual_seed(1)
    history = {}  # slot -> its tokens so far, by position
    # one prompt into slot 2 (last logit only), then a right-padded group into slots 3, 0, 1
    ids = torch.randint(0, VOCAB, (1, 23), generator=g)
    ids[0, 4] = 90  # a multimodal placeholder id (read as padding by Gemma4ForConditionalGeneration)
    logits, _ = _same(generic, fast, ids, torch.arange(23)[None], slot=2, kv_len=64, logits_to_keep=1,
                      layer_ids=[0, 2, 5])
    history[2] = ids[0].tolist()
    torch.testing.assert_close(logits[0, -1], _hf(reference, history[2], [])[0][-1], **HF_TOL)
    lengths = [30, 7, 18]
    ids = torch.randint(0, VOCAB, (3, 30), generator=g)
    pos = torch.arange(30)[None].expand(3, -1)
    keep = torch.tensor(sorted({n - 1 for n in lengths}))
    _same(generic, fast, ids, pos, slot=torch.tensor([3, 0, 1]), kv_len=64, logits_to_keep=keep, layer_ids=[1, 5])
    for slot, row, n in zip((3, 0, 1), ids, lengths, strict=True):
        history[slot] = row[:n].tolist()
    # multi-token decode / verify at per-row positions (past the window of 6), two kv_len buckets, a partial batch
    start = torch.tensor([7, 18, 23, 30])
    for step, (rows, size, kv_len) in enumerate([(4, 5, 64), (4, 3, 256), (2, 1, 64), (4, 4, None), (4, 16, 128)]):
        pos = start[:rows, None] + torch.arange(size)
        ids = torch.randint(0, VOCAB, (rows, size), generator=g)
        layer_ids = [0, 3, 5] if step % 2 == 0 else None
        logits, features = _same(generic, fast, ids, pos, kv_len=kv_len, layer_ids=layer_ids)
        assert logits.shape == (rows, size, VOCAB)
        for r in range(rows):
            history[r] += ids[r].tolist()
            want_logits, want_features = _hf(reference, history[r], layer_ids or [])
            torch.testing.assert_close(logits[r], want_logits[-size:], **HF_TOL)
            if layer_ids is not None:
                torch.testing.assert_close(features[r], want_features[-size:], **HF_TOL)
        start[:rows] += size


SABOTAGE = {  # what the fast path would miss -> (variant that has it, how to remove it)
    "sliding window": ("gemma4", lambda t: setattr(t, "_windows", [None] * t.num_layers)),
    "final softcap": ("gemma4-plain", lambda t: setattr(t, "_softcap", None)),
    "layer scalars": ("gemma4", lambda t: setattr(t, "_weights", [w[:-1] + (None,) for w in t._weights])),
    "Gemma 4 norms": ("gemma4", lambda t: setattr(t, "_specs", [s[:-1] + (True,) for s in t._specs])),
    "Gemma 3 norms": ("gemma3", lambda t: setattr(t, "_specs", [s[:-1] + (False,) for s in t._specs])),
    "K/V sharing": ("gemma4", lambda t: setattr(t, "_sources", [1 if i == 4 else s for i, s in enumerate(t._sources)])),
    "per-layer inputs": ("gemma4", lambda t: setattr(t, "_weights", [w[:12] + (None,) * 3 + w[15:]
                                                                     for w in t._weights])),
    "placeholder ids": ("gemma4-multimodal", lambda t: setattr(t, "_placeholders", None)),
}


@pytest.mark.parametrize("what", list(SABOTAGE))
def test_comparison_catches_a_missing_feature(what):
    """Control: a fast path missing any one Gemma feature disagrees with the generic path (so the tests can fail)."""
    variant, remove = SABOTAGE[what]
    generic, fast, _ = _triple(variant, batch=1, capacity=64)
    remove(fast)
    ids = torch.randint(0, VOCAB, (1, 40), generator=torch.Generator().manual_seed(2))
    ids[0, 5] = 91
    with torch.inference_mode():
        a, _ = generic.forward(ids, torch.arange(40)[None], slot=0)
        b, _ = fast.forward(ids, torch.arange(40)[None], slot=0)
    assert (a - b).abs().max() > 1e-6, what  # far above the 1e-10 the paths agree to


def test_fused_weights_are_shared_and_hf_model_still_works():
    model = _model("gemma4-k-eq-v")
    reference = copy.deepcopy(model)
    fast = FastGemmaTarget(model)
    unique = {p.untyped_storage().data_ptr(): p.untyped_storage().nbytes() for p in model.parameters()}
    assert sum(unique.values()) == sum(p.numel() * p.element_size() for p in reference.parameters())
    attn = model.model.layers[0].self_attn
    assert attn.k_proj.weight.untyped_storage().data_ptr() == fast._weights[0][1].untyped_storage().data_ptr()
    assert [s[6] for s in fast._specs] == ["qkv", "qkv", "qk", "read", "read", "read"]  # V = K on full layers
    ids = torch.randint(0, VOCAB, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, rtol=0, atol=0)


@pytest.mark.parametrize("variant", ["gemma4", "gemma4-k-eq-v", "gemma4-multimodal", "gemma3"])
def test_generator_greedy_identical_on_both_paths(variant):
    check_greedy_on_both_paths(_model(variant, seed=5), variant)


def test_make_target_chooses_and_explains():
    for variant in ("gemma4", "gemma4-plain", "gemma4-k-eq-v", "gemma4-multimodal", "gemma3"):
        target = make_target(_model(variant))
        assert target.path == "fast" and isinstance(target, FastGemmaTarget), variant
    assert make_target(_model("gemma4"), fast=False).path == "generic"

    class PatchedLinear(torch.nn.Linear):
        pass

    patched = _model("gemma4")
    old = patched.model.layers[1].mlp.up_proj
    patched.model.layers[1].mlp.up_proj = PatchedLinear(old.in_features, old.out_features, bias=False,
                                                        dtype=old.weight.dtype)
    refused = {
        "moe": (_model("gemma4", enable_moe_block=True, num_experts=4, top_k_experts=2, moe_intermediate_size=32
                       ).float(), "mixture-of-experts"),  # float32: HF's grouped experts matmul has no float64
        "bidirectional": (_model("gemma4", use_bidirectional_attention="all"), "bidirectional"),
        "no-pad": (_model("gemma4-multimodal", pad_token_id=None), "pad_token_id"),
        "patched": (patched, r"layer 1 mlp\.up_proj is not a plain nn\.Linear"),
        "dynamic-rope": (_model("gemma4", rope_parameters={
            "sliding_attention": {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 10000.0},
            "full_attention": {"rope_type": "default", "rope_theta": 1e6}}), "sliding_attention rope type 'dynamic'"),
    }
    generic_refuses = {"bidirectional": "gemma4_text passes `is_causal` to its attention",  # a causal cache
                       "no-pad": "a 2-token forward at load failed"}  # HF's forward needs the pad id
    for name, (model, reason) in refused.items():
        assert unsupported_reason(model) is not None, name
        if name in generic_refuses:  # the generic path cannot run these either: refused at load
            with pytest.raises(ConfigError, match=generic_refuses[name]):
                make_target(copy.deepcopy(model))
        else:
            assert make_target(copy.deepcopy(model)).path == "generic", name
        with pytest.raises(ConfigError, match=reason):
            make_target(model, fast=True)


def test_eager_context_and_compile_flag():
    generic, fast, _ = _triple("gemma4", batch=2, capacity=64)
    fast.compile_layers()
    assert fast.compiled
    ids = torch.randint(0, VOCAB, (2, 6), generator=torch.Generator().manual_seed(6))
    with fast.eager():  # prefill: compiled layers run eagerly, so no compilation happens here
        _same(generic, fast, ids, torch.arange(6)[None].expand(2, -1), kv_len=64, layer_ids=[2])
