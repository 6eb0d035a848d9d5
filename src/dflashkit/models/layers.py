"""Small building blocks shared by the drafter: RMSNorm, rotary embedding, SwiGLU MLP."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..config import DraftConfig
from .linear import Linear


class RMSNorm(nn.Module):
    """Qwen3-style RMSNorm: normalise in fp32, scale by `weight` (no +1 offset)."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(dim))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * x.to(dtype)


class SwiGLU(nn.Module):
    def __init__(self, hidden: int, intermediate: int):
        super().__init__()
        self.gate_proj = Linear(hidden, intermediate, bias=False)
        self.up_proj = Linear(hidden, intermediate, bias=False)
        self.down_proj = Linear(intermediate, hidden, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class Rotary(nn.Module):
    """cos/sin tables for absolute positions; scaled RoPE types come from transformers' own init functions."""

    def __init__(self, config: DraftConfig):
        super().__init__()
        # kept fp32 and out of the module's buffers so `.to(bfloat16)` never rounds the frequencies
        self.inv_freq, self.scale = _inv_freq(config)

    def forward(self, positions: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        # positions [B, N] -> cos, sin [B, 1, N, head_dim]
        if self.inv_freq.device != positions.device:
            self.inv_freq = self.inv_freq.to(positions.device)
        freqs = positions.float()[..., None] * self.inv_freq
        emb = torch.cat([freqs, freqs], dim=-1)
        cos, sin = emb.cos() * self.scale, emb.sin() * self.scale
        return cos.to(dtype)[:, None], sin.to(dtype)[:, None]


def _inv_freq(config: DraftConfig) -> tuple[torch.Tensor, float]:
    scaling = dict(config.rope_scaling or {})
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        exponent = torch.arange(0, config.head_dim, 2, dtype=torch.float64) / config.head_dim
        return (1.0 / (config.rope_theta ** exponent)).float(), 1.0
    from transformers import Qwen3Config
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf = Qwen3Config(hidden_size=config.hidden_size, num_attention_heads=config.num_attention_heads,
                     head_dim=config.head_dim, max_position_embeddings=config.max_position_embeddings,
                     rope_parameters={"rope_theta": config.rope_theta, **scaling, "rope_type": rope_type})
    inv_freq, scale = ROPE_INIT_FUNCTIONS[rope_type](hf, torch.device("cpu"))
    return inv_freq.float(), float(scale)


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat([-x[..., half:], x[..., :half]], dim=-1)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    # x [B, H, N, D], cos/sin [B, 1, N, D]
    return x * cos + rotate_half(x) * sin
