"""Building blocks matched to a target: the target adapter itself (fast or generic path) and fresh drafters."""

from __future__ import annotations

from torch import nn

from ..config import DraftConfig
from ..errors import ConfigError
from . import fast_gemma
from .drafter import DFlashDraft
from .fast_decoder import FastDecoderTarget, unsupported_reason
from .loading import pick_mask_token
from .target import TargetBase, TargetModel


def make_target(hf_model: nn.Module, tokenizer=None, fast: bool | None = None) -> TargetBase:
    """The fast Llama-family or Gemma path when the model allows it (unless `fast` is False), else the generic adapter.

    `fast=True` insists on the fast path and raises ConfigError naming why a model cannot take it.
    The result's `path` attribute says which one was taken ("fast" or "generic")."""
    if fast is False:
        return TargetModel(hf_model, tokenizer)
    reason = unsupported_reason(hf_model)
    if reason is None:
        return FastDecoderTarget(hf_model, tokenizer)
    text_config = hf_model.config.get_text_config() if hasattr(hf_model.config, "get_text_config") else hf_model.config
    if getattr(text_config, "model_type", None) in fast_gemma.DISPATCHED:
        reason = fast_gemma.unsupported_reason(hf_model)
        if reason is None:
            return fast_gemma.FastGemmaTarget(hf_model, tokenizer)
    if fast:
        raise ConfigError(f"the fast target path cannot run {type(hf_model).__name__}: {reason}; "
                          "leave fast unset (or pass --generic-target) to use the generic path")
    return TargetModel(hf_model, tokenizer)


def draft_config_for(target: TargetBase, num_layers: int = 1, block_size: int = 16,
                     mask_token_id: int | None = None, target_layer_ids: list[int] | None = None) -> DraftConfig:
    """Qwen3-style layers of the target's width; heads and RoPE base follow the target."""
    cfg = _Lenient(target.config)
    heads = int(cfg.num_attention_heads)
    rope = getattr(cfg, "rope_parameters", None) or {}
    if mask_token_id is None:
        mask_token_id = (pick_mask_token(target.tokenizer, target.vocab_size) if target.tokenizer
                         else target.vocab_size - 1)
    return DraftConfig(
        hidden_size=target.hidden_size,
        intermediate_size=int(getattr(cfg, "intermediate_size", None) or 4 * target.hidden_size),
        num_hidden_layers=num_layers,
        num_attention_heads=heads,
        num_key_value_heads=int(getattr(cfg, "num_key_value_heads", None) or heads),
        head_dim=int(getattr(cfg, "head_dim", None) or target.hidden_size // heads),
        vocab_size=target.vocab_size,
        num_target_layers=target.num_layers,
        mask_token_id=int(mask_token_id),
        block_size=block_size,
        target_layer_ids=target_layer_ids,
        rms_norm_eps=float(getattr(cfg, "rms_norm_eps", 1e-6)),
        rope_theta=float(rope.get("rope_theta", getattr(cfg, "rope_theta", 10000.0))),
        max_position_embeddings=int(getattr(cfg, "max_position_embeddings", 32768)),
    )


class _Lenient:
    """Config reader that treats per-layer-ambiguous attributes (Gemma 4) as missing."""

    def __init__(self, config):
        self._config = config

    def __getattr__(self, name):
        try:
            return getattr(self._config, name)
        except AttributeError:
            raise
        except Exception:
            return None


def random_draft(target: TargetBase, num_layers: int = 1, block_size: int = 16, seed: int = 0) -> DFlashDraft:
    draft = DFlashDraft(draft_config_for(target, num_layers, block_size)).init_weights(seed)
    return draft.to(device=target.device, dtype=target.dtype).eval()
