"""`x @ weight.T` for the few-row products of decoding, in the orientation that is fast on MKL CPUs.

Decoding multiplies 1-16 rows by every weight matrix, so a step is bound by streaming the weights. With
MKL on x86, `F.linear` on a handful of rows streams them at well under the memory bandwidth, while the
same product written as `weight @ x.T` runs at it; one row takes the slow matrix-vector path either way,
so it is doubled. Measured on SmolLM2's layer shapes (90 matrices of 1536 x 576, float32, 2 threads): 1 row
21 -> 10 ms, 4 rows 31 -> 10 ms, 8 rows 25 -> 16 ms, while at 256 rows `F.linear` wins (210 vs 229 ms).
bfloat16 takes oneDNN's path, already flat in the rows, so it is left alone, as are GPUs.
`DFLASHKIT_CPU_LINEAR=plain` (or `linear.MODE`) turns this off.
"""

from __future__ import annotations

import os
import platform

import torch
from torch import nn
from torch.nn import functional as F

# rows up to which `weight @ x.T` is used (float64's crossover is lower: 4 rows 24 vs 30 ms, 8 rows 65 vs 35)
SKINNY_MAX_ROWS = {torch.float32: 8, torch.float64: 4}
MODE = os.environ.get("DFLASHKIT_CPU_LINEAR", "auto")
_MKL_X86 = torch.backends.mkl.is_available() and platform.machine().lower() in ("x86_64", "amd64")


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """F.linear, same result up to float rounding."""
    if MODE != "auto" or not _MKL_X86 or x.device.type != "cpu" or x.dtype != weight.dtype:
        return F.linear(x, weight, bias)
    width = x.shape[-1]
    rows = x.numel() // width if width else 0
    if not 0 < rows <= SKINNY_MAX_ROWS.get(x.dtype, 0):
        return F.linear(x, weight, bias)
    flat = x.reshape(rows, width)
    if rows == 1:
        flat = torch.cat([flat, flat])
    out = (weight @ flat.T).T[:rows].contiguous()
    if bias is not None:
        out = out + bias
    return out.reshape(*x.shape[:-1], weight.shape[0])


class Linear(nn.Linear):
    """nn.Linear (same parameters and state-dict keys) that runs through `linear`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)
