"""The few-row CPU product equals F.linear (up to rounding) for every row count, shape, dtype and bias."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from dflashkit.models.linear import Linear, linear


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 2, 3, 8, 9, 40])
@pytest.mark.parametrize("bias", [False, True])
def test_matches_f_linear(dtype, rows, bias):
    gen = torch.Generator().manual_seed(rows)
    w = torch.randn(96, 48, generator=gen).to(dtype)
    b = torch.randn(96, generator=gen).to(dtype) if bias else None
    for shape in [(rows, 48), (1, rows, 48), (rows, 1, 48)]:
        x = torch.randn(*shape, generator=gen).to(dtype)
        got, want = linear(x, w, b), F.linear(x, w, b)
        assert got.shape == want.shape and got.dtype == want.dtype and got.is_contiguous()
        tol = 1e-2 if dtype == torch.bfloat16 else 1e-5
        torch.testing.assert_close(got, want, rtol=tol, atol=tol)


def test_empty_input():
    w = torch.randn(8, 4)
    assert linear(torch.zeros(0, 4), w).shape == (0, 8)


def test_module_keeps_state_dict_keys_and_gradients():
    lin = Linear(6, 5)
    assert set(lin.state_dict()) == {"weight", "bias"}
    x = torch.randn(2, 6, requires_grad=True)
    lin(x).sum().backward()
    ref = x.detach().clone().requires_grad_()
    F.linear(ref, lin.weight, lin.bias).sum().backward()
    torch.testing.assert_close(x.grad, ref.grad)
