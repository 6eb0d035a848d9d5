"""The training mask as a FlexAttention BlockMask: the same rule as `blocks.block_attention_mask`, kept sparse.

Why: with a dense mask every query of a row scores every context key and every other block's keys
(L + A*T keys), though it sees only the context before its anchor and its own T keys. SDPA must compute
(and, with a mask, in its slower memory-efficient kernel) all of them; FlexAttention skips the 128x128
tiles nobody sees: on a 32 x 128-anchor batch of 1,152-token rows that is most of them.

The rule is written as arithmetic on indices (one [B, Q] tensor of anchors), never as a dense tensor.
"""

from __future__ import annotations

import functools

import torch


def flex_available() -> bool:
    try:
        from torch.nn.attention.flex_attention import create_block_mask, flex_attention  # noqa: F401
    except ImportError:
        return False
    return True


def block_mask(anchors: torch.Tensor, context_len: int, block_size: int, causal: bool = False,
               window: int | None = None):
    """BlockMask over queries [B, A*T] and keys [context 0..L-1, then the A*T block keys] (True = attend)."""
    from torch.nn.attention.flex_attention import create_block_mask

    b, a = anchors.shape
    rule = mask_rule(anchors, context_len, block_size, causal, window)
    compiled = anchors.device.type == "cuda"  # the eager builder materialises B x Q x KV: fine for tests only
    n_q = a * block_size
    return create_block_mask(rule, b, None, n_q, context_len + n_q, device=anchors.device, _compile=compiled)


def mask_rule(anchors: torch.Tensor, context_len: int, block_size: int, causal: bool = False,
              window: int | None = None):
    """The mask_mod (batch, head, query, key index tensors -> may attend), broadcasting like the indices."""
    t, n_ctx = block_size, context_len
    q_anchor = anchors.repeat_interleave(t, dim=1)  # [B, Q]

    def mask_mod(bi, h, q, kv):
        k_off = (kv - n_ctx) % t
        q_off = q % t
        in_ctx = kv < n_ctx
        see_ctx = kv < q_anchor[bi, q]
        see_blk = (kv - n_ctx) // t == q // t
        if causal:
            see_blk = see_blk & (k_off <= q_off)
        if window is not None:
            see_ctx = see_ctx & (q_anchor[bi, q] + q_off - kv < window)
            see_blk = see_blk & (q_off - k_off < window)
            if not causal:
                see_blk = see_blk & (k_off - q_off < window)
        return (in_ctx & see_ctx) | (~in_ctx & see_blk)

    return mask_mod


def flex_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask) -> torch.Tensor:
    """q [B, Hq, Q, D], k/v [B, Hkv, KV, D] (grouped heads are shared, not copied) -> [B, Hq, Q, D]."""
    return _kernel(q.device.type)(q, k, v, block_mask=mask, enable_gqa=q.shape[1] != k.shape[1])


@functools.cache
def _kernel(device_type: str):
    """Compiled once per process on a GPU (shapes marked dynamic: training rows change length every step);
    eager on the CPU, where it is only ever used by tests on tiny shapes."""
    from torch.nn.attention.flex_attention import flex_attention as flex

    if device_type != "cuda":
        return flex
    return torch.compile(flex, dynamic=True)
