"""The generic target path on attention variants beyond plain causal / sliding-window: its forward equals HF's."""

from __future__ import annotations

import copy

import pytest
import torch

from tiny_models import random_prompts, reference_greedy, tiny_hf
from dflashkit import Generator, SamplingParams
from dflashkit.errors import ConfigError
from dflashkit.models.factory import random_draft
from dflashkit.models.target import TargetModel

COMMON = dict(vocab_size=96, hidden_size=64, intermediate_size=96, num_hidden_layers=4, num_attention_heads=4,
              num_key_value_heads=2, max_position_embeddings=512, eos_token_id=None, bos_token_id=None,
              pad_token_id=None, tie_word_embeddings=False)


def _model(config, dtype=torch.float32):
    """Random model; 1-D parameters (norms, biases, GPT-OSS's sinks) made large enough to matter."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.ndim == 1:
                p.add_(torch.randn(p.shape, generator=g).to(p.dtype))
    return model


def _check_forward_and_greedy(model, tol: float = 1e-5):
    """A prefill then a 5-token block at the next positions: logits equal HF's uncached forward of the whole
    sequence; greedy DFlash (oracle drafts: long accepts) equals HF greedy."""
    target = TargetModel(copy.deepcopy(model))
    target.allocate(2, 128)
    ids = torch.randint(0, 96, (1, 35), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        want = model(ids).logits
    with torch.inference_mode():
        head, _ = target.forward(ids[:, :30], torch.arange(30)[None], slot=1, kv_len=64)
        target.forward(ids[:, :30], torch.arange(30)[None], kv_len=64)  # row 0 through the batch path
        tail, _ = target.forward(ids[:, 30:], torch.arange(30, 35)[None], kv_len=64)
    torch.testing.assert_close(head, want[:, :30], rtol=0, atol=tol)
    torch.testing.assert_close(tail, want[:, 30:], rtol=0, atol=tol)
    prompts = random_prompts(3, seed=3, lengths=(4, 17, 30))
    expected = [reference_greedy(model, p, 16) for p in prompts]
    gen = Generator(target, random_draft(target, num_layers=1, block_size=8), block_size=8, max_batch=2,
                    max_length=96)
    gen.set_oracle(6)
    got = gen.generate(prompts, SamplingParams(max_new_tokens=16), references=expected)
    assert [r.token_ids for r in got] == expected


def test_gpt_oss_attention_sinks_are_kept():
    """GPT-OSS passes per-head sink logits (`s_aux`) to the attention function: they join each query's softmax.
    The static cache's attention dropped them, so every logit of a GPT-OSS model was wrong."""
    from transformers import GptOssConfig

    config = GptOssConfig(**COMMON, head_dim=16, num_local_experts=4, num_experts_per_tok=2, sliding_window=8,
                          layer_types=["sliding_attention", "full_attention"] * 2)
    _check_forward_and_greedy(_model(config))


def test_mla_values_narrower_than_keys():
    """DeepSeek V2/V3 attention (MLA): values have their own head size (v_head_dim 12, keys 16). The value
    cache took the keys' shape and the first forward failed on a shape mismatch."""
    from transformers import DeepseekV3Config

    config = DeepseekV3Config(**{**COMMON, "num_key_value_heads": 4}, q_lora_rank=None, kv_lora_rank=16,
                              qk_rope_head_dim=8, qk_nope_head_dim=8, v_head_dim=12, n_routed_experts=4,
                              num_experts_per_tok=2, moe_intermediate_size=32, first_k_dense_replace=1, n_group=1,
                              topk_group=1)
    _check_forward_and_greedy(_model(config))


def _llama4(**overrides):
    from transformers import Llama4TextConfig

    return Llama4TextConfig(**COMMON, head_dim=16, num_local_experts=2, num_experts_per_tok=1,
                            intermediate_size_mlp=96, no_rope_layers=[1, 1, 1, 0], interleave_moe_layer_step=2,
                            **overrides)


def test_llama4_context_stops_where_its_attention_stops_being_causal():
    """Llama 4's chunked layers attend within chunks of `attention_chunk_size` tokens, and its NoPE layers scale
    queries by absolute position past `floor_scale` (from a KV cache the engine does not pass): the static
    cache's plain causal attention equals HF's only before both. Past them the answers differed from plain
    decoding silently; now the context stops there (a prompt past it is refused, as any over-long one)."""
    chunked = _model(_llama4(attention_chunk_size=16, floor_scale=10 ** 6))
    target = TargetModel(copy.deepcopy(chunked))
    assert target.max_positions == 16
    gen = Generator(target, random_draft(target, num_layers=1, block_size=4), block_size=4, max_length=96)
    assert gen.max_length == 16
    prompts = random_prompts(2, seed=5, lengths=(3, 11))
    got = gen.generate(prompts, SamplingParams(max_new_tokens=30))
    assert [r.token_ids for r in got] == [reference_greedy(chunked, p, 16 - len(p)) for p in prompts]
    tuned = TargetModel(_model(_llama4(attention_chunk_size=64, floor_scale=20)))
    assert tuned.max_positions == 19  # the query at position 18 still has scale 1: log1p(floor(19 / 20)) = 0
    plain = TargetModel(_model(_llama4(attention_chunk_size=4096, attn_temperature_tuning=False)))
    assert plain.max_positions == 512


def _inject(model, **extra):
    """Every attention module passes `extra` on to the attention function (as a model's own code would)."""
    import functools

    for name, module in model.named_modules():
        if name.endswith("self_attn"):
            module.forward = functools.partial(module.forward, **extra)
    return model


@pytest.mark.parametrize("extra, refused", [
    ({"my_bias": torch.ones(1, 4, 1, 1)}, "my_bias"),
    ({"my_scale": 0.5}, "my_scale"),
    ({"is_causal": False}, "is_causal"),  # bidirectional: the cache's mask is causal
    ({"position_bias": torch.zeros(1, 4, 2, 2)}, "position_bias"),  # T5-style additive bias: implemented by SDPA
    ({"my_flag": None, "my_other": False, "is_causal": True}, None),  # trivial values change nothing: loads
])
def test_attention_kwargs_the_static_cache_would_drop_are_refused_at_load(extra, refused):
    """static_attention takes any **kwargs; one it does not implement used to be dropped silently (GPT-OSS's
    sinks were), every output wrong. Now the load-time probe refuses the model, naming the model and the kwarg."""
    model = _inject(tiny_hf("llama", dtype=torch.float32), **extra)
    if refused is None:
        TargetModel(model).allocate(1, 16)
        return
    with pytest.raises(ConfigError, match=rf"^llama passes `{refused}` to its attention, .* does not implement"):
        TargetModel(model)


def test_bidirectional_attention_module_is_refused_at_load():
    """A module marked non-causal (SDPA's default for it) would be run causally over the cache."""
    model = tiny_hf("llama", dtype=torch.float32)
    model.model.layers[1].self_attn.is_causal = False
    with pytest.raises(ConfigError, match="`is_causal`"):
        TargetModel(model)


def _config(model_type: str, **extra):
    from transformers import AutoConfig

    return AutoConfig.for_model(model_type, **{**COMMON, "head_dim": 16, **extra})


@pytest.mark.parametrize("model_type, extra", [
    ("stablelm", {}),  # passes position_ids to its attention explicitly
    ("phi3", {}),  # sliding_window=None
    ("cohere2", {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"] * 2}),
    ("qwen3_moe", {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32}),  # output_router_logits
])
def test_architectures_passing_only_known_kwargs_still_load_and_match_hf(model_type, extra):
    """Architectures the load-time attention-kwargs check lets through (survey of transformers' decoders: they pass
    scaling, dropout 0, sliding_window, position_ids and their forward's flags) still equal HF's forward and greedy."""
    _check_forward_and_greedy(_model(_config(model_type, **extra)))


def test_the_check_would_have_caught_gpt_oss_sinks(monkeypatch):
    """Control: with `s_aux` not declared handled, GPT-OSS (whose sinks were once dropped silently) is refused."""
    from transformers import GptOssConfig

    from dflashkit.models import static_cache

    monkeypatch.setattr(static_cache, "HANDLED_KWARGS", static_cache.HANDLED_KWARGS - {"s_aux"})
    config = GptOssConfig(**COMMON, head_dim=16, num_local_experts=4, num_experts_per_tok=2)
    with pytest.raises(ConfigError, match="^gpt_oss passes `s_aux` to its attention"):
        TargetModel(_model(config))


def test_a_mask_of_the_models_own_is_refused_at_load():
    """transformers builds no mask for the static cache's attention (it masks by position), so a mask reaching it
    is the module's own: Doge's learned dynamic mask was dropped silently. A plain causal one is harmless."""
    from torch import nn

    from dflashkit.models.static_cache import unsupported_kwargs

    causal = torch.ones(3, 3, dtype=torch.bool).tril()
    additive = torch.zeros(3, 3).masked_fill(~causal, float("-inf"))
    assert unsupported_kwargs(nn.Module(), causal[None, None], {}) == []
    assert unsupported_kwargs(nn.Module(), additive[None, None], {}) == []
    assert unsupported_kwargs(nn.Module(), (additive + 0.5)[None, None], {}) == ["attention_mask"]
    assert unsupported_kwargs(nn.Module(), causal.T[None, None], {}) == ["attention_mask"]
    with pytest.raises(ConfigError, match="^doge passes `attention_mask` to its attention"):
        TargetModel(_model(_config("doge")))
