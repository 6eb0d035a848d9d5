"""Grouped-query attention with an arbitrary mask, without materialising repeated K/V heads.

Two kernels, picked by shape:
  * decode / verify (few query rows per K/V head): two batched matmuls and a softmax. The fused SDPA
    kernels parallelise over (batch, head, query tile) only, so batch-1 decode runs on a handful of
    SMs, each streaming the whole cache; a matmul over the keys splits the key axis across the GPU.
  * prefill (many query rows): SDPA's memory-efficient kernel. `enable_gqa=True` with a mask falls back
    to the math kernel, which repeats K/V for every query head, so each group's query heads are folded
    into the query-length axis instead, keeping K/V as they are.
`DFLASHKIT_ATTENTION=sdpa|matmul` (or `attention.MODE`) forces one kernel (benchmarks compare them).
"""

from __future__ import annotations

import os

import torch
from torch.nn import functional as F

# query rows (batch x query heads per K/V head x tokens) up to which the matmul kernel is used. H100, Qwen3-8B
# shape, 2k keys: matmul wins at 4 rows (6.6 vs 7.8 ms a forward), 64 (7.2 vs 8.3), 128 (10.2 vs 10.5), and
# loses at 2,048 (20.7 vs 17.1): its fp32 score matrix grows with the rows.
MATMUL_MAX_ROWS = 256
MODE = os.environ.get("DFLASHKIT_ATTENTION", "auto")  # a module global: torch.compile guards on it


def gqa_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor,
                  scale: float | None = None) -> torch.Tensor:
    """q [B, Hq, T, D], k/v [B, Hkv, S, D], mask [B, 1, T, S] or [B, 1, G*T, S] (bool or additive) -> [B, Hq, T, D]."""
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    groups = hq // hkv
    q = q.reshape(b, hkv, groups * t, d)  # query head h = kv head h // groups, as transformers' repeat_kv
    if groups > 1 and mask.shape[2] == t:
        mask = mask.repeat(1, 1, groups, 1)
    if MODE == "matmul" or (MODE == "auto" and b * groups * t <= MATMUL_MAX_ROWS and q.device.type == "cuda"):
        out = _matmul_attention(q, k, v, mask, scale)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale)
    return out.reshape(b, hq, t, v.shape[-1])  # values may be narrower than queries (MLA)


def _matmul_attention(q, k, v, mask, scale):
    """Folded q [B, Hkv, R, D]. Softmax in fp32 (at least); scores come out of the matmul in the input dtype."""
    scale = scale if scale is not None else q.shape[-1] ** -0.5
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = torch.matmul(q, k.transpose(-1, -2)).to(acc) * scale  # [B, Hkv, R, S]
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.matmul(scores.softmax(-1).to(v.dtype), v)
