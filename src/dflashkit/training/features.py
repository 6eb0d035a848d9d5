"""Frozen target features, computed on the fly per batch (no feature cache: the target is cheap to run).

Feature of target layer i is the output of decoder layer i (`hidden_states[i + 1]`), the same tensor the
engine hands the drafter at inference. Right padding needs no attention mask: attention is causal,
so real positions never see the padding after them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

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
        return self._cat(out)

    @torch.no_grad()
    def with_logits(self, tokens: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor,
                    kept: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and, from the same forward, the target's logits at positions (rows[i], cols[i]) over the
        `kept` ids (all: None) -> [N, kept or vocab], the target's dtype.

        The model's own forward applies its head, so its logit softcap or scale stays; the head it calls only
        sees those N positions and kept rows: [B, L, vocab] logits would not fit at training batch sizes.
        """
        head = self.model.get_output_embeddings()
        self.model.set_output_embeddings(_HeadAt(head, rows, cols, kept))
        try:
            with planned_attention_off():
                out = self.model(input_ids=tokens, output_hidden_states=True, use_cache=False, logits_to_keep=0)
        finally:
            self.model.set_output_embeddings(head)
        width = head.weight.shape[0] if kept is None else kept.numel()
        if tuple(out.logits.shape) != (rows.numel(), width):
            raise RuntimeError(f"{type(self.model).__name__} reshaped its head's output to "
                               f"{tuple(out.logits.shape)}: cannot take its logits at chosen positions")
        return self._cat(out), out.logits

    @torch.no_grad()
    def with_greedy(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Features and, from the same forward, the target's greedy token after every position -> [B, L] long.

        The head's input is caught and its argmax taken in chunks of positions ([B, L, vocab] logits would not
        fit); what the model does to logits after its head (a softcap, a positive scale) keeps the argmax.
        """
        head = self.model.get_output_embeddings()
        catch = _HeadInput()
        self.model.set_output_embeddings(catch)
        try:
            with planned_attention_off():
                out = self.model(input_ids=tokens, output_hidden_states=True, use_cache=False, logits_to_keep=0)
        finally:
            self.model.set_output_embeddings(head)
        hidden = catch.hidden.flatten(0, -2)  # [B*L, H]
        bias = getattr(head, "bias", None)
        chunk = max(1, (1 << 27) // head.weight.shape[0])  # positions per [chunk, vocab] logits block (~256 MB bf16)
        greedy = torch.cat([F.linear(h, head.weight, bias).argmax(-1) for h in hidden.split(chunk)])
        return self._cat(out), greedy.view(tokens.shape)

    def _cat(self, out) -> torch.Tensor:
        return torch.cat([out.hidden_states[i + 1] for i in self.layer_ids], dim=-1)


class _HeadAt(nn.Module):
    """Stands in for the LM head during one forward: logits at the chosen positions over the kept rows only."""

    def __init__(self, head: nn.Module, rows: torch.Tensor, cols: torch.Tensor, kept: torch.Tensor | None):
        super().__init__()
        self.head, self.rows, self.cols, self.kept = head, rows, cols, kept

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        hidden = hidden[self.rows, self.cols]  # [B, L, H] -> [N, H]
        if self.kept is None:
            return self.head(hidden)
        bias = getattr(self.head, "bias", None)
        return F.linear(hidden, self.head.weight[self.kept], None if bias is None else bias[self.kept])


class _HeadInput(nn.Module):
    """Stands in for the LM head during one forward: keeps the head's input, returns a one-column stand-in."""

    hidden: torch.Tensor

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        self.hidden = hidden
        return hidden[..., :1]
