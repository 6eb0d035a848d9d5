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


def check_greedy_on_both_paths(model, label: str) -> None:
    """Plain decoding, DFlash with a random drafter and oracle drafts, on the generic and the fast target path,
    all equal HF greedy: prompts of lengths 1..17 (grouped padded prefill, a late joiner), long accepts and
    rollbacks through the fast verify."""
    from dflashkit import Generator, SamplingParams
    from dflashkit.models.factory import make_target, random_draft

    prompts = random_prompts(5, seed=4)
    expected = [reference_greedy(model, p, 12) for p in prompts]
    params = SamplingParams(max_new_tokens=12)
    for fast in (False, True):
        target = make_target(copy.deepcopy(model), fast=fast)
        assert target.path == ("fast" if fast else "generic")
        ar = Generator(target, None, max_batch=4, max_length=64).generate(prompts, params)
        assert [r.token_ids for r in ar] == expected, (label, target.path, "AR")
        draft = random_draft(target, num_layers=1, block_size=4, seed=1)
        got = Generator(target, draft, block_size=4, max_batch=4, max_length=64).generate(prompts, params)
        assert [r.token_ids for r in got] == expected, (label, target.path, "DFlash")
        oracle = Generator(target, draft, block_size=4, max_batch=4, max_length=64)
        oracle.set_oracle(4)
        got = oracle.generate(prompts, params, references=expected)
        assert [r.token_ids for r in got] == expected, (label, target.path, "oracle")
        assert max(max(r.acceptance_lengths) for r in got) == 4


def assert_same_forward(generic, fast, *args, **kwargs):
    """One forward on both target paths (float64): logits, features and every cache layer agree to 1e-10.
    Returns the fast path's (logits, features)."""
    tol = {"rtol": 0, "atol": 1e-10}
    with torch.inference_mode():
        (lg, fg), (lf, ff) = generic.forward(*args, **kwargs), fast.forward(*args, **kwargs)
    torch.testing.assert_close(lf, lg, **tol)
    if kwargs.get("layer_ids") is None:
        assert fg is None and ff is None
    else:
        torch.testing.assert_close(ff, fg, **tol)
    for i in range(generic.num_layers):
        assert (fast.state.k[i] is None) == (generic.state.k[i] is None), i  # KV-sharing layers hold none
        if generic.state.k[i] is not None:
            torch.testing.assert_close(fast.state.k[i], generic.state.k[i], **tol)
            torch.testing.assert_close(fast.state.v[i], generic.state.v[i], **tol)
    return lf, ff
