"""The drafter's forward for training: many blocks per row, one mask per layer kind, K/V heads expanded.

Same maths as `DFlashDraft.forward` (a test pins them equal), but grouped-query K/V are repeated up to
the query heads before attention: SDPA with both `enable_gqa` and a mask falls back to the math kernel
(full fp32 score matrices), while expanded heads keep the memory-efficient kernel.
"""

from __future__ import annotations

import contextlib

import torch
from torch.nn import functional as F

from ..models.drafter import DFlashDraft
from ..models.layers import apply_rope
from .blocks import block_attention_mask
from .flex_mask import block_mask, flex_attention


def planned_attention_off():
    """SDPA without the cuDNN backend: it builds an execution plan per new shape (tens of ms on the host),
    and training shapes change every step. Flash / memory-efficient kernels need no plan."""
    try:
        from torch.nn.attention import SDPBackend, sdpa_kernel
    except ImportError:  # older torch: nothing to switch off
        return contextlib.nullcontext()
    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


def layer_masks(draft: DFlashDraft, anchors: torch.Tensor, context_len: int, flex: bool = False) -> list:
    """One mask per drafter layer, built once per distinct (causal, window) kind: dense bool tensors for
    SDPA, or FlexAttention BlockMasks (`flex`), which skip the tiles no query sees."""
    cfg, built, out = draft.config, {}, []
    build = block_mask if flex else block_attention_mask
    for i in range(cfg.num_hidden_layers):
        kind = (cfg.layer_is_causal(i), cfg.layer_window(i))
        if kind not in built:
            built[kind] = build(anchors, context_len, cfg.block_size, *kind)
        out.append(built[kind])
    return out


def _attention(attn, x, cos, sin, ctx_k, ctx_v, mask):
    b, t, _ = x.shape
    q = attn.q_norm(attn.q_proj(x).view(b, t, attn.n_heads, attn.head_dim)).transpose(1, 2)
    q = apply_rope(q, cos, sin)
    k_blk, v_blk = attn.kv(x, cos, sin)
    k = torch.cat([ctx_k, k_blk.to(ctx_k.dtype)], dim=2)
    v = torch.cat([ctx_v, v_blk.to(ctx_v.dtype)], dim=2)
    dtype = torch.get_autocast_dtype(x.device.type) if torch.is_autocast_enabled(x.device.type) else q.dtype
    if not isinstance(mask, torch.Tensor):  # a BlockMask
        out = flex_attention(q.to(dtype), k.to(dtype), v.to(dtype), mask)
        return attn.o_proj(out.transpose(1, 2).reshape(b, t, -1))
    rep = attn.n_heads // attn.n_kv
    if rep > 1:
        k, v = k.repeat_interleave(rep, dim=1), v.repeat_interleave(rep, dim=1)
    out = F.scaled_dot_product_attention(q.to(dtype), k.to(dtype), v.to(dtype), attn_mask=mask)
    return attn.o_proj(out.transpose(1, 2).reshape(b, t, -1))


def draft_blocks(draft: DFlashDraft, noise_embeds: torch.Tensor, positions: torch.Tensor,
                 ctx_kv: list[tuple[torch.Tensor, torch.Tensor]], masks: list[torch.Tensor]) -> torch.Tensor:
    """noise_embeds [B, Q, hidden] at positions [B, Q]; masks (bool [B, 1, Q, S+Q] or BlockMask) per layer
    -> hidden [B, Q, hidden]."""
    cos, sin = draft.rotary(positions, noise_embeds.dtype)
    x = noise_embeds
    for layer, (ctx_k, ctx_v), mask in zip(draft.layers, ctx_kv, masks, strict=True):
        x = x + _attention(layer.self_attn, layer.input_layernorm(x), cos, sin, ctx_k, ctx_v, mask)
        x = x + layer.mlp(layer.post_attention_layernorm(x))
    return draft.norm(x)
