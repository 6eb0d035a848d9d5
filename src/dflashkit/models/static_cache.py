"""Static, batched KV cache for any transformers model, plugged in through its attention interface.

Every transformers decoder routes attention through `ALL_ATTENTION_FUNCTIONS[config._attn_implementation]`.
We register one more implementation that writes the step's K/V into a preallocated cache slot at the
tokens' absolute positions and attends over the cache with a position mask. Consequences that the
engine relies on:
  * rollback is free: entries at positions >= a sequence's length are never read before being rewritten
    (each layer writes its K/V before it attends, and queries only see keys at positions <= their own);
  * every sequence of a batch has its own positions; shapes are static, so CUDA graphs can replay it;
  * the model's own code (norms, RoPE variants, Gemma's KV sharing, softcaps) stays untouched.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from .attention import gqa_attention

ATTN_IMPLEMENTATION = "dfk_static_kv"  # must not contain "flash": transformers treats those as kernels


@dataclass
class StepState:
    """What one forward needs besides the tokens: shared by all attention modules of one target."""

    k: list[torch.Tensor] = field(default_factory=list)  # per cached layer [B, n_kv, S, D]
    v: list[torch.Tensor] = field(default_factory=list)
    positions: torch.Tensor | None = None  # [b, T] absolute positions of this step's tokens
    slot: int | torch.Tensor | None = None  # None: the whole batch; int / [b] slots: prefill into those
    kv_len: int | None = None  # attend over cache[:kv_len] only (None: everything)
    prompt_lens: torch.Tensor | None = None  # [b] prompt lengths in a prefill (length-dependent RoPE, target.py)
    masks: dict = field(default_factory=dict)

    def begin(self, positions: torch.Tensor, slot: int | torch.Tensor | None, kv_len: int | None,
              prompt_lens: torch.Tensor | None = None) -> None:
        self.positions, self.slot, self.kv_len, self.masks = positions, slot, kv_len, {}
        self.prompt_lens = prompt_lens

    def mask(self, window: int | None, length: int, dtype: torch.dtype | None = None) -> torch.Tensor:
        """[b, 1, T, S]: bool (True = attend), or additive in `dtype` (built once per forward, not per layer)."""
        key = (window, dtype)
        if key not in self.masks:
            if dtype is not None:
                allowed = self.mask(window, length)
                self.masks[key] = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
                    ~allowed, float("-inf"))
            else:
                keys = torch.arange(length, device=self.positions.device)
                q = self.positions[:, :, None]  # [b, T, 1]
                allowed = keys <= q
                if window is not None:
                    allowed = allowed & (q - keys < window)
                self.masks[key] = allowed[:, None]
        return self.masks[key]

    def grouped_mask(self, window: int | None, length: int, dtype: torch.dtype, groups: int) -> torch.Tensor:
        """The additive mask repeated for `groups` query heads folded into the query axis (see attention.py)."""
        key = (window, dtype, "groups", groups)
        if key not in self.masks:
            mask = self.mask(window, length, dtype)
            self.masks[key] = mask.repeat(1, 1, groups, 1) if groups > 1 else mask
        return self.masks[key]


@dataclass
class Binding:
    state: StepState
    cache_layer: int
    writes: bool  # False for layers that reuse another layer's K/V (Gemma 3n/4 KV sharing)


# What static_attention does with the keyword arguments a model's attention module passes it. The function takes
# any `**kwargs`, so one it does not implement would be dropped without a word and the outputs silently differ from
# the model's (GPT-OSS's `s_aux` sinks once were). `unsupported_kwargs` names every other one whose value is not
# None / False / 0 (and `is_causal=False`), and TargetModel refuses the model at load (its probe forward), never
# mid-generation. The lists come from a survey of transformers 5.17's decoders (Llama, Mistral, Qwen 2/3, Phi-3,
# Gemma 1-3, OLMo 2, Granite, StableLM, Cohere 1/2, Starcoder2, Mixtral, Qwen3-MoE, GPT-OSS, DeepSeek V2/V3,
# Llama 4, SmolLM3, GLM-4, EXAONE 4, Helium, ERNIE 4.5, Seed-OSS): they pass scaling, dropout 0.0, sliding_window,
# softcap (Gemma 2), s_aux (GPT-OSS), position_ids and the forward's flags. Passed elsewhere and refused:
# DeepSeek V3.2's sparse `indices`, MiniMax's `block_indices`, T5-style `position_bias`.
HANDLED_KWARGS = frozenset({
    "scaling", "sliding_window", "softcap",  # the score scale, the window (a mask), Gemma 2's logit softcap
    "s_aux",  # GPT-OSS's per-head sink logits (_manual_attention)
    "dropout",  # the model is in eval mode: always 0.0 (a non-zero value is refused)
    "is_causal",  # True or None: the cache's mask is causal; False (bidirectional) is refused
})
HARMLESS_KWARGS = frozenset({
    "position_ids",  # RoPE is applied before attention; HF's eager/SDPA ignore it (flash only detects packing)
    "use_cache", "output_hidden_states",  # TargetModel.forward's own flags, passed down by the model's **kwargs
})


def unsupported_kwargs(module, attention_mask, kwargs: dict) -> list[str]:
    """Names of the attention arguments (from one call of `module`) whose effect static_attention would drop.

    `attention_mask` too: transformers builds none for this implementation (no padding; the cache masks by
    position), so a mask at the probe is the module's own (Doge's learned dynamic mask) unless plainly causal."""
    bad = [] if attention_mask is None or _plain_causal(attention_mask) else ["attention_mask"]
    for name, value in kwargs.items():
        if name == "is_causal":
            ok = value is not False
        elif name == "dropout":
            ok = not value
        else:
            ok = name in HANDLED_KWARGS or name in HARMLESS_KWARGS or _trivial(value)
        if not ok:
            bad.append(name)
    if "is_causal" not in kwargs and getattr(module, "is_causal", True) is False:  # SDPA's default: bidirectional
        bad.append("is_causal")
    return bad


def _plain_causal(mask: torch.Tensor) -> bool:
    allowed = mask if mask.dtype == torch.bool else mask == 0
    t, s = allowed.shape[-2:]
    causal = torch.ones(t, s, dtype=torch.bool, device=mask.device).tril(s - t)
    return bool((allowed == causal).all())


def _trivial(value) -> bool:
    return value is None or (isinstance(value, (bool, int, float)) and not value)


def static_attention(module, query, key, value, attention_mask, scaling=None, sliding_window=None,
                     softcap=None, dropout=0.0, **kwargs):
    """transformers attention signature: query [b, Hq, T, D], key/value [b, Hkv, T, D] -> [b, T, Hq, D]."""
    binding: Binding = module._dflashkit_binding
    state = binding.state
    k_cache, v_cache = state.k[binding.cache_layer], state.v[binding.cache_layer]
    if state.slot is None:  # rows 0..b-1 of the batch
        k_view, v_view = k_cache[:query.shape[0]], v_cache[:query.shape[0]]
        if binding.writes:
            rows = torch.arange(query.shape[0], device=query.device)[:, None].expand_as(state.positions)
            k_view[rows, :, state.positions] = key.transpose(1, 2).to(k_view.dtype)  # [b, T, Hkv, D]
            v_view[rows, :, state.positions] = value.transpose(1, 2).to(v_view.dtype)
    elif isinstance(state.slot, torch.Tensor):  # batched prefill: rows of the batch are these slots
        if binding.writes:
            rows = state.slot[:, None].expand_as(state.positions)
            k_cache[rows, :, state.positions] = key.transpose(1, 2).to(k_cache.dtype)
            v_cache[rows, :, state.positions] = value.transpose(1, 2).to(v_cache.dtype)
        length = state.kv_len or k_cache.shape[2]
        k_view, v_view = k_cache[state.slot, :, :length], v_cache[state.slot, :, :length]  # gathered copies
    else:
        k_view, v_view = k_cache[state.slot:state.slot + 1], v_cache[state.slot:state.slot + 1]
        if binding.writes:
            k_view[0].index_copy_(1, state.positions[0], key[0].to(k_view.dtype))
            v_view[0].index_copy_(1, state.positions[0], value[0].to(v_view.dtype))
    if state.kv_len is not None:
        k_view, v_view = k_view[:, :, :state.kv_len], v_view[:, :, :state.kv_len]
    sinks = kwargs.get("s_aux")  # GPT-OSS: a learned logit per head joins every softmax (and takes its share)
    if softcap or sinks is not None:  # Gemma 2's tanh-capped scores, sinks: neither expressible in SDPA
        mask = state.mask(sliding_window, k_view.shape[2])
        out = _manual_attention(query, k_view, v_view, mask, scaling, softcap, sinks)
    else:
        mask = state.grouped_mask(sliding_window, k_view.shape[2], query.dtype, query.shape[1] // k_view.shape[1])
        out = gqa_attention(query, k_view, v_view, mask, scaling)
    return out.transpose(1, 2).contiguous(), None


def _manual_attention(q, k, v, mask, scaling, softcap=None, sinks=None):
    """Attention as HF's eager code computes it, with a softcap and/or per-head sink logits [Hq]."""
    groups = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
    scale = scaling if scaling is not None else q.shape[-1] ** -0.5
    scores = (q @ k.transpose(-1, -2)) * scale
    if softcap:
        scores = torch.tanh(scores / softcap) * softcap
    scores = scores.masked_fill(~mask, float("-inf"))
    if sinks is None:
        return scores.softmax(-1).to(v.dtype) @ v
    sink = sinks.to(scores.dtype).reshape(1, -1, 1, 1).expand(*scores.shape[:-1], 1)
    scores = torch.cat([scores, sink], dim=-1)
    probs = (scores - scores.amax(-1, keepdim=True)).softmax(-1)[..., :-1]  # the sink's share is dropped
    return probs.to(v.dtype) @ v


def register() -> None:
    from transformers import AttentionInterface

    AttentionInterface.register(ATTN_IMPLEMENTATION, static_attention)
