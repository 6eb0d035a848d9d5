"""The generic target path on attention variants beyond plain causal / sliding-window: its forward equals HF's."""

from __future__ import annotations

import copy

import torch

from tiny_models import random_prompts, reference_greedy
from dflashkit import Generator, SamplingParams
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
