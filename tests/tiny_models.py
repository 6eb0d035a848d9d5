"""Tiny random targets of several families, built from transformers configs (float64: exact argmax).

A plain module (not conftest) so tests import it by name whatever other conftest files exist."""

from __future__ import annotations

import copy

import torch

VOCAB = 96
LAYER_TYPES = ["sliding_attention", "sliding_attention", "full_attention"] * 2


def tiny_config(family: str, vocab: int = VOCAB, **overrides):
    """`overrides` replace the shared fields (rope_parameters, tie_word_embeddings, sliding_window ...)."""
    from transformers import Gemma3TextConfig, LlamaConfig, MistralConfig, Qwen2Config, Qwen3Config
    from transformers.models.gemma4 import Gemma4TextConfig

    common = dict(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=6, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=512, eos_token_id=None,
                  bos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    common.update(overrides)
    if family == "llama":
        return LlamaConfig(**common)
    if family == "qwen2":
        return Qwen2Config(**common)
    if family == "qwen3":
        return Qwen3Config(**common)
    if family == "mistral":
        return MistralConfig(**{"sliding_window": None, **common})
    if family == "gemma2":
        from transformers import Gemma2Config

        return Gemma2Config(**common, sliding_window=6, attn_logit_softcapping=20.0, final_logit_softcapping=30.0)
    if family == "gemma3":
        return Gemma3TextConfig(**common, sliding_window=6, layer_types=LAYER_TYPES, final_logit_softcapping=30.0)
    if family == "gemma4":
        return Gemma4TextConfig(**common, sliding_window=6, layer_types=LAYER_TYPES, num_kv_shared_layers=2,
                                hidden_size_per_layer_input=8, global_head_dim=32)
    raise ValueError(family)


FAMILIES = ["llama", "qwen3", "gemma3", "gemma4"]


def tiny_hf(family: str, seed: int = 0, vocab: int = VOCAB, dtype=torch.float64, **overrides):
    """A random transformers causal LM of `family` (seeded)."""
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(tiny_config(family, vocab, **overrides)).to(dtype).eval()


def build_tiny(family: str, seed: int = 0, vocab: int = VOCAB, dtype=torch.float64):
    """-> (TargetModel, untouched reference HF model with the same weights)."""
    from dflashkit import TargetModel

    model = tiny_hf(family, seed, vocab, dtype)
    reference = copy.deepcopy(model)
    return TargetModel(model), reference


def reference_greedy(model, prompt: list[int], max_new_tokens: int) -> list[int]:
    with torch.no_grad():
        ids = torch.tensor([prompt])
        out = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                             do_sample=False, eos_token_id=None, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def random_prompts(n: int, seed: int, vocab: int = VOCAB, lengths=(1, 2, 5, 9, 17, 30)) -> list[list[int]]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, vocab, (lengths[i % len(lengths)],), generator=g).tolist() for i in range(n)]
