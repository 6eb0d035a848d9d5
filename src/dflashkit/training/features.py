"""Frozen target features, computed on the fly per batch (no feature cache: the target is cheap to run).

Feature of target layer i is the output of decoder layer i (`hidden_states[i + 1]`), the same tensor the
engine hands the drafter at inference. Right padding needs no attention mask: attention is causal,
so real positions never see the padding after them.
"""

from __future__ import annotations

import torch
from torch import nn

from .forward import planned_attention_off


class TargetFeatures:
    """A plain transformers causal LM (not the engine's wrapped copy), frozen, in eval mode."""

    def __init__(self, model: nn.Module, layer_ids: list[int]):
        self.model = model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        self.layer_ids = list(layer_ids)
        self.embed_weight = model.get_input_embeddings().weight
        self.head_weight = model.get_output_embeddings().weight

    @torch.no_grad()
    def __call__(self, tokens: torch.Tensor) -> torch.Tensor:
        # tokens [B, L] -> features [B, L, len(layer_ids) * hidden]
        with planned_attention_off():
            out = self.model(input_ids=tokens, output_hidden_states=True, use_cache=False, logits_to_keep=1)
        return torch.cat([out.hidden_states[i + 1] for i in self.layer_ids], dim=-1)
