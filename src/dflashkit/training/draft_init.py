"""A fresh drafter for a target: config from the target's shape, weights random or from its top layers.

Starting from the target's last layers gives the drafter working attention and MLP weights of the
right width on step 0; it only has to learn the block task, not language from scratch.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch
from torch import nn

from ..config import DraftConfig
from ..models.drafter import DFlashDraft
from ..models.factory import draft_config_for


def draft_config(hf_model: nn.Module, tokenizer, num_layers: int, block_size: int,
                 target_layer_ids: list[int] | None = None, mask_token_id: int | None = None) -> DraftConfig:
    """Read the shape off a plain transformers model (no engine wrapper: that would rebind its attention)."""
    cfg = hf_model.config.get_text_config() if hasattr(hf_model.config, "get_text_config") else hf_model.config
    info = SimpleNamespace(config=cfg, tokenizer=tokenizer, hidden_size=int(cfg.hidden_size),
                           num_layers=int(cfg.num_hidden_layers),
                           vocab_size=int(hf_model.get_output_embeddings().weight.shape[0]))
    return draft_config_for(info, num_layers=num_layers, block_size=block_size, mask_token_id=mask_token_id,
                            target_layer_ids=target_layer_ids)


def new_draft(hf_model: nn.Module, config: DraftConfig, init: str = "target", seed: int = 0) -> DFlashDraft:
    """init: 'random' (std 0.02) or 'target' (copy the target's last decoder layers where shapes match)."""
    draft = DFlashDraft(config).init_weights(seed)
    if init == "target":
        copy_top_layers(hf_model, draft)
    elif init != "random":
        raise ValueError(f"unknown init '{init}': choose 'target' or 'random'")
    return draft


def copy_top_layers(hf_model: nn.Module, draft: DFlashDraft) -> int:
    """Copy matching tensors of the target's last len(draft.layers) layers and final norm; -> tensors copied."""
    layers = _decoder_layers(hf_model)
    if layers is None:
        return 0
    src_layers = list(layers)[-len(draft.layers):]
    # Gemma norms scale by (1 + w): their weights mean something else in the drafter's RMSNorm
    norms_ok = not str(getattr(hf_model.config, "model_type", "")).startswith("gemma")
    copied = 0
    with torch.no_grad():
        for dst, src in zip(draft.layers, src_layers, strict=True):
            src_state = src.state_dict()
            for name, p in dst.named_parameters():
                if "norm" in name and not norms_ok:
                    continue
                if name in src_state and src_state[name].shape == p.shape:
                    p.copy_(src_state[name].float())
                    copied += 1
        norm = getattr(getattr(hf_model, "model", None), "norm", None)
        weight = getattr(norm, "weight", None)
        if norms_ok and weight is not None and weight.shape == draft.norm.weight.shape:
            draft.norm.weight.copy_(weight.float())
            copied += 1
    return copied


def _decoder_layers(hf_model: nn.Module):
    for module in hf_model.modules():
        if isinstance(module, nn.ModuleList) and len(module) == hf_model.config.num_hidden_layers:
            return module
    return None
