"""Grouped-query attention with an arbitrary mask, without materialising repeated K/V heads.

`F.scaled_dot_product_attention(..., enable_gqa=True)` with a mask falls back to the math kernel,
which repeats K/V for every query head (at batch 32 and 2k context that is most of a decode step).
Folding each group's query heads into the query-length axis keeps K/V as they are and lets the
memory-efficient kernel take the mask.
"""

from __future__ import annotations

import torch
from torch.nn import functional as F


def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                  scale: float | None = None) -> torch.Tensor:
    """q [B, Hq, T, D], k/v [B, Hkv, S, D], mask [B, 1, T, S] (bool or additive) -> [B, Hq, T, D]."""
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    if hq == hkv:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    groups = hq // hkv
    q = q.reshape(b, hkv, groups * t, d)  # query head h = kv head h // groups, as transformers' repeat_kv
    mask = mask.repeat(1, 1, groups, 1) if mask.shape[2] == t else mask
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.reshape(b, hq, t, out.shape[-1])
