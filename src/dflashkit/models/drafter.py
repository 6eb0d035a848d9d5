"""The DFlash drafter: a few Qwen3-style layers that denoise a whole block in one pass.

Target features (several target layers, concatenated) are projected by `fc` + `hidden_norm` into a
context stream. Every layer projects that context with its own k_proj/v_proj (+k_norm, RoPE) and puts it
in front of the block's keys/values. Only context K/V are ever cached; the block's own K/V are transient.
Weight names match the published checkpoints, so `save_pretrained` output loads in the authors' code.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from ..config import DraftConfig
from ..errors import ConfigError
from .attention import gqa_attention
from .draft_vocab import load_counts, save_counts
from .layers import RMSNorm, Rotary, SwiGLU, apply_rope
from .linear import Linear, linear

SAFETENSORS_NAME = "model.safetensors"


class DraftAttention(nn.Module):
    def __init__(self, config: DraftConfig, layer: int):
        super().__init__()
        h, d = config.hidden_size, config.head_dim
        self.n_heads, self.n_kv, self.head_dim = config.num_attention_heads, config.num_key_value_heads, d
        bias = config.attention_bias
        self.q_proj = Linear(h, self.n_heads * d, bias=bias)
        self.k_proj = Linear(h, self.n_kv * d, bias=bias)
        self.v_proj = Linear(h, self.n_kv * d, bias=bias)
        self.o_proj = Linear(self.n_heads * d, h, bias=bias)
        self.q_norm = RMSNorm(d, config.rms_norm_eps)
        self.k_norm = RMSNorm(d, config.rms_norm_eps)

    def kv(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # x [B, N, hidden] -> k, v [B, n_kv, N, head_dim] (k normed and rotated)
        b, n, _ = x.shape
        k = self.k_norm(self.k_proj(x).view(b, n, self.n_kv, self.head_dim)).transpose(1, 2)
        v = self.v_proj(x).view(b, n, self.n_kv, self.head_dim).transpose(1, 2)
        return apply_rope(k, cos, sin), v

    def forward(self, x, cos, sin, ctx_k, ctx_v, mask):
        # x [B, T, hidden]; ctx_k/v [B, n_kv, S, D]; mask [B, 1, T, S + T] bool (True = attend)
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.n_heads, self.head_dim)).transpose(1, 2)
        q = apply_rope(q, cos, sin)
        k_blk, v_blk = self.kv(x, cos, sin)
        k = torch.cat([ctx_k, k_blk], dim=2)
        v = torch.cat([ctx_v, v_blk], dim=2)
        out = gqa_attention(q, k, v, mask)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class DraftLayer(nn.Module):
    def __init__(self, config: DraftConfig, layer: int):
        super().__init__()
        self.self_attn = DraftAttention(config, layer)
        self.mlp = SwiGLU(config.hidden_size, config.intermediate_size)
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, x, cos, sin, ctx_k, ctx_v, mask):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, ctx_k, ctx_v, mask)
        return x + self.mlp(self.post_attention_layernorm(x))


@dataclass
class MaskSpec:
    """Which keys a block query may see, by absolute position; one mask is built per layer kind."""

    q_pos: torch.Tensor  # [B, T] positions of the block tokens
    k_pos: torch.Tensor  # [B, S] positions of the context keys
    k_valid: torch.Tensor  # [B, S] context keys that hold real (accepted) tokens

    def build(self, causal: bool, window: int | None) -> torch.Tensor:
        keys = torch.cat([self.k_pos, self.q_pos], dim=1)[:, None, :]  # [B, 1, S+T]
        valid = torch.cat([self.k_valid, torch.ones_like(self.q_pos, dtype=torch.bool)], dim=1)[:, None, :]
        q = self.q_pos[:, :, None]  # [B, T, 1]
        mask = valid.expand(-1, q.shape[1], -1)
        if causal:
            mask = mask & (keys <= q)
        if window is not None:
            mask = mask & (q - keys < window)
            if not causal:
                mask = mask & (keys - q < window)
        return mask[:, None]  # [B, 1, T, S+T]


class DFlashDraft(nn.Module):
    """Drafter weights + forward. Embedding and LM head are the target's, passed in by the caller."""

    def __init__(self, config: DraftConfig):
        super().__init__()
        self.config = config
        self.layers = nn.ModuleList(DraftLayer(config, i) for i in range(config.num_hidden_layers))
        self.fc = Linear(len(config.target_layer_ids) * config.hidden_size, config.hidden_size, bias=False)
        self.hidden_norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.rotary = Rotary(config)
        self._layer_kinds = [(config.layer_is_causal(i), config.layer_window(i)) for i in range(len(self.layers))]
        self.token_counts: torch.Tensor | None = None  # the target's tokens in the training answers (draft_vocab.py)

    # --------------------------------------------------------------- properties
    @property
    def block_size(self) -> int:
        return self.config.block_size

    @property
    def mask_token_id(self) -> int:
        return self.config.mask_token_id

    @property
    def target_layer_ids(self) -> list[int]:
        return self.config.target_layer_ids

    @property
    def dtype(self) -> torch.dtype:
        return self.fc.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.fc.weight.device

    # ------------------------------------------------------------------ forward
    def project_context(self, features: torch.Tensor) -> torch.Tensor:
        # features [B, N, n_target_layers * hidden] -> context [B, N, hidden]
        return self.hidden_norm(self.fc(features))

    def context_kv(self, context: torch.Tensor, positions: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Per-layer K/V of projected context tokens at their absolute positions (what the cache stores)."""
        cos, sin = self.rotary(positions, context.dtype)
        return [layer.self_attn.kv(context, cos, sin) for layer in self.layers]

    def forward(self, noise_embeds: torch.Tensor, positions: torch.Tensor,
                ctx_kv: list[tuple[torch.Tensor, torch.Tensor]], mask_spec: MaskSpec | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Denoise blocks. noise_embeds [B, T, hidden] at positions [B, T] -> final hidden [B, T, hidden].

        `mask_spec` builds per-layer-kind masks from positions (inference); `mask` [B, 1, T, S+T] overrides
        it for every layer (training, where many blocks share one pass).
        """
        cos, sin = self.rotary(positions, noise_embeds.dtype)
        masks: dict[tuple, torch.Tensor] = {}
        x = noise_embeds
        for layer, kind, (ctx_k, ctx_v) in zip(self.layers, self._layer_kinds, ctx_kv):
            if mask is not None:
                layer_mask = mask
            else:
                if kind not in masks:
                    masks[kind] = mask_spec.build(*kind)
                layer_mask = masks[kind]
            x = layer(x, cos, sin, ctx_k, ctx_v, layer_mask)
        return self.norm(x)

    def logits(self, hidden: torch.Tensor, lm_head_weight: torch.Tensor) -> torch.Tensor:
        """Target LM head, then the drafter's own output multiplier and softcap (published config fields)."""
        logits = linear(hidden, lm_head_weight)
        if self.config.output_multiplier != 1.0:
            logits = logits * self.config.output_multiplier
        cap = self.config.final_logit_softcapping
        if cap:
            logits = torch.tanh(logits / cap) * cap
        return logits

    # ------------------------------------------------------------ construction
    def init_weights(self, seed: int = 0, std: float = 0.02) -> "DFlashDraft":
        gen = torch.Generator().manual_seed(seed)
        for name, p in self.named_parameters():
            with torch.no_grad():
                if name.endswith("norm.weight"):
                    p.fill_(1.0)
                elif name.endswith("bias"):
                    p.zero_()
                else:
                    p.copy_(torch.randn(p.shape, generator=gen) * std)
        return self

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, dtype: torch.dtype | None = None,
                        device: str | torch.device | None = None) -> "DFlashDraft":
        """Load a published or dflashkit drafter from a local dir or a Hugging Face hub id."""
        from .loading import load_state_dict, resolve_dir

        directory = resolve_dir(name_or_path, ("config.json", "*.safetensors", "*.json"))
        config = DraftConfig.from_file(directory / "config.json")
        model = cls(config)
        state = load_state_dict(directory)
        state = {k.removeprefix("model."): v for k, v in state.items() if not k.endswith("rotary_emb.inv_freq")}
        expected = set(model.state_dict())
        missing, unexpected = sorted(expected - set(state)), sorted(set(state) - expected)
        if missing or unexpected:
            raise ConfigError(f"drafter weights in {directory} do not match its config: "
                              f"missing {missing[:6]}, unexpected {unexpected[:6]}")
        for key, tensor in state.items():
            want = model.state_dict()[key].shape
            if tensor.shape != want:
                raise ConfigError(f"drafter weight {key} has shape {tuple(tensor.shape)}, config implies {tuple(want)}")
        model.load_state_dict(state)
        model.token_counts = load_counts(directory)
        if dtype is None:
            dtype = next(iter(state.values())).dtype
        return model.to(device=device, dtype=dtype).eval()

    def save_pretrained(self, directory: str | Path) -> Path:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.config.save(directory / "config.json")
        tensors = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        save_file(tensors, str(directory / SAFETENSORS_NAME), metadata={"format": "pt"})
        if self.token_counts is not None:
            save_counts(directory, self.token_counts)
        return directory
