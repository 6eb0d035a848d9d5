"""Both attention kernels (matmul for decode/verify, SDPA for prefill) compute the same thing."""

import pytest
import torch

from dflashkit.models import attention


@pytest.mark.parametrize("hq,hkv,t", [(4, 4, 1), (8, 2, 1), (9, 3, 16), (8, 2, 40)])
@pytest.mark.parametrize("additive", [False, True])
def test_matmul_kernel_equals_sdpa(monkeypatch, hq, hkv, t, additive):
    g = torch.Generator().manual_seed(hq * 100 + t)
    b, s, d = 3, 67, 16
    q = torch.randn(b, hq, t, d, generator=g, dtype=torch.float64)
    k = torch.randn(b, hkv, s, d, generator=g, dtype=torch.float64)
    v = torch.randn(b, hkv, s, d, generator=g, dtype=torch.float64)
    pos = torch.randint(t, s, (b, 1)) - torch.arange(t).flip(0)  # [b, t] query positions, ascending
    allowed = (torch.arange(s) <= pos[:, :, None])[:, None]  # [b, 1, t, s]
    groups = hq // hkv
    mask = allowed.repeat(1, 1, groups, 1)  # as StepState.grouped_mask: query heads folded into rows
    if additive:
        mask = torch.zeros(mask.shape, dtype=q.dtype).masked_fill(~mask, float("-inf"))
    outs = {}
    for mode in ("sdpa", "matmul"):
        monkeypatch.setattr(attention, "MODE", mode)
        outs[mode] = attention.gqa_attention(q, k, v, mask if groups > 1 else mask[:, :, :t], 0.3)
    torch.testing.assert_close(outs["matmul"], outs["sdpa"], rtol=1e-10, atol=1e-10)
    # and against the definition, one query head at a time
    kk, vv = k.repeat_interleave(groups, 1), v.repeat_interleave(groups, 1)
    ref = ((q @ kk.transpose(-1, -2)) * 0.3).masked_fill(~allowed, float("-inf")).softmax(-1) @ vv
    torch.testing.assert_close(outs["matmul"], ref, rtol=1e-10, atol=1e-10)
