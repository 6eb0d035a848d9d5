"""The block objective: features + blocks -> position-decayed cross-entropy, as one nn.Module for DDP.

Early offsets matter most (a wrong token k ends acceptance there), so offset k >= 1 is weighted
exp(-(k-1)/gamma). The target's embedding and LM head are frozen, shared, and kept out of the parameters.
With a pruned loss vocabulary (`kept` ids, models/draft_vocab.py) logits cover those rows of the head only: the
head matmul and the fp32 softmax shrink with it, and the drafter learns the choice the pruned engine makes.
Distillation (`distill` W > 0) mixes in the target's own next-token distribution at each label: a label says
which token came, the target says how sure it was and what else it would have accepted.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ..models.drafter import DFlashDraft
from .blocks import Blocks
from .forward import draft_blocks, planned_attention_off


def default_gamma(block_size: int) -> float:
    """The published decay: 7 for block 16, 5 for 10, 4 for 8 (interpolated elsewhere)."""
    return {16: 7.0, 10: 5.0, 8: 4.0}.get(block_size, max(1.0, 7.0 * block_size / 16))


def offset_weights(block_size: int, gamma: float) -> torch.Tensor:
    # [T]: 0 for the anchor itself, exp(-(k-1)/gamma) for k >= 1
    k = torch.arange(block_size, dtype=torch.float32)
    w = torch.exp(-(k - 1) / gamma)
    w[0] = 0.0
    return w


class BlockObjective(nn.Module):
    """Wraps the drafter (its only parameters); forward returns (loss, detached stats)."""

    def __init__(self, draft: DFlashDraft, embed_weight: torch.Tensor, head_weight: torch.Tensor,
                 gamma: float | None = None, kept: torch.Tensor | None = None, distill: float = 0.0):
        super().__init__()
        self.draft = draft
        self.distill = distill
        # frozen target tensors: plain attributes, so DDP neither broadcasts nor reduces them
        self.frozen = {"embed": embed_weight.detach(), "head": head_weight.detach()}
        self.remap: torch.Tensor | None = None  # pruned loss vocabulary: vocab id -> row of the kept head, -1 dropped
        if kept is not None:
            kept = kept.to(head_weight.device)
            self.frozen["head"] = head_weight.detach()[kept]  # taken once, not per step
            self.remap = label_remap(kept, head_weight.shape[0])
        t = draft.config.block_size
        self.weights = offset_weights(t, gamma if gamma is not None else default_gamma(t))

    def label_sources(self, blocks: Blocks) -> tuple[torch.Tensor, torch.Tensor]:
        """(row, position a+k-1) of the target output that predicted each label in the loss, in forward's order."""
        rows, slots = self._in_loss(blocks)[1].nonzero(as_tuple=True)
        return rows, blocks.positions[rows, slots] - 1

    def _in_loss(self, blocks: Blocks) -> tuple[torch.Tensor, torch.Tensor]:
        labels, in_loss = blocks.labels, blocks.label_mask
        if self.remap is not None:  # a label the pruned vocabulary drops is left out: no draft could propose it
            labels = self.remap[labels]
            in_loss = in_loss & (labels >= 0)
        return labels, in_loss

    def forward(self, features: torch.Tensor, blocks: Blocks, masks: list[torch.Tensor],
                target_logits: torch.Tensor | None = None):
        # features [B, L, n*hidden] frozen target features at every position of the padded rows;
        # target_logits [N, kept or vocab] at label_sources(blocks), needed iff distill > 0
        if (target_logits is None) != (self.distill == 0):
            raise ValueError(f"distill={self.distill}: pass the target's logits exactly when distill > 0")
        draft = self.draft
        b, length, _ = features.shape
        ctx = draft.project_context(features)
        ctx_pos = torch.arange(length, device=features.device)[None].expand(b, -1)
        ctx_kv = draft.context_kv(ctx, ctx_pos)
        # fp32 residual stream (matmuls still run in bf16 under autocast)
        noise = F.embedding(blocks.input_ids, self.frozen["embed"]).float() * draft.config.input_embedding_scale
        with planned_attention_off():
            hidden = draft_blocks(draft, noise, blocks.positions, ctx_kv, masks)  # [B, Q, hidden]
        sel = blocks.label_mask
        labels, in_loss = self._in_loss(blocks)
        logits = draft.logits(hidden[in_loss], self.frozen["head"])  # [N, vocab or kept], N = slots in the loss
        labels = labels[in_loss]
        if target_logits is None:
            ce = per_slot = F.cross_entropy(logits.float(), labels, reduction="none")
        else:
            per_slot, ce, soft_ce = self._distilled(logits, labels, target_logits)
        t = draft.config.block_size
        offset = torch.arange(sel.shape[1], device=sel.device) % t
        w = self.weights.to(sel.device)[offset][None].expand_as(sel)[in_loss]
        loss = (per_slot * w).sum() / w.sum().clamp(min=1e-6)
        with torch.no_grad():
            correct = logits.argmax(-1) == labels
            if self.remap is not None:  # ... but still a wrong draft: acc and tau stay comparable to full runs
                full = torch.zeros_like(sel)
                full[in_loss] = correct
                correct = full[sel]
            stats = block_stats(correct, sel, t)
            stats["ce"] = ce.mean() if ce.numel() else ce.sum()
            if self.remap is not None:
                stats["in_vocab"] = in_loss.sum() / sel.sum().clamp(min=1)  # share of labels the loss covers
            if target_logits is not None:
                stats["soft_ce"] = soft_ce.mean() if soft_ce.numel() else soft_ce.sum()
        return loss, stats

    def _distilled(self, logits: torch.Tensor, labels: torch.Tensor, target_logits: torch.Tensor):
        """-> per-slot loss (1-W) CE(label) + W CE(target), CE(label), CE(target) (the last two detached).

        Taken as one CE against the mixed distribution: a single [N, vocab] gradient, not one per term.
        """
        logp = F.log_softmax(logits.float(), -1)
        with torch.no_grad():
            # softmax over the kept ids (renormalised, like logp), in place on an fp32 copy: no second [N, vocab]
            mix = target_logits.to(torch.float32, copy=True)
            mix = mix.sub_(mix.amax(-1, keepdim=True)).exp_()
            mix = mix.div_(mix.sum(-1, keepdim=True))
            soft_ce = -_rowdot(mix, logp)
            ce = F.nll_loss(logp, labels, reduction="none")
            mix.mul_(self.distill)
            mix[torch.arange(labels.numel(), device=labels.device), labels] += 1.0 - self.distill
        return _CrossEntropy.apply(mix, logp), ce, soft_ce


def _rowdot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Row-wise dot product [N, V] x [N, V] -> [N] in fp32, without an [N, V] product in between."""
    with torch.autocast(a.device.type, enabled=False):  # autocast would run the bmm in bf16
        return torch.einsum("nv,nv->n", a, b)


class _CrossEntropy(torch.autograd.Function):
    """-(q . logp) per row. Autograd's own backward of the einsum is a k=1 batched GEMM: on an H100 it took
    47 ms of a 290 ms step at N=61k, V=25k; the elementwise product here is bandwidth-bound, a few ms."""

    @staticmethod
    def forward(ctx, q: torch.Tensor, logp: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(q)
        return -_rowdot(q, logp)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (q,) = ctx.saved_tensors
        return None, q * -grad[:, None]


def label_remap(kept: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """[vocab] lookup: id -> its index in `kept` (any order), -1 for ids left out."""
    table = torch.full((vocab_size,), -1, dtype=torch.long, device=kept.device)
    table[kept] = torch.arange(kept.numel(), device=kept.device)
    return table


def block_stats(correct: torch.Tensor, sel: torch.Tensor, block_size: int) -> dict[str, torch.Tensor]:
    """Top-1 accuracy and the acceptance length greedy verification would give these blocks.

    correct [N] over labelled slots; sel [B, A*T]. A block accepts its leading run of correct drafts.
    `tau` averages that over anchors (every position weighs the same); the engine's tau is lower, since it
    crosses easy stretches in few steps: on unseen answers it lay between `tau_h` (harmonic mean) and `tau`.
    """
    full = torch.zeros(sel.shape, dtype=torch.bool, device=sel.device)
    full[sel] = correct
    per_block = full.view(sel.shape[0], -1, block_size)[:, :, 1:]
    has = sel.view(sel.shape[0], -1, block_size)[:, :, 1:].any(-1)
    run = per_block.long().cumprod(-1).sum(-1).float()  # drafted tokens accepted per block
    n = has.sum().clamp(min=1)
    acc_k = (per_block.float().sum((0, 1)) /
             sel.view(sel.shape[0], -1, block_size)[:, :, 1:].float().sum((0, 1)).clamp(min=1))
    return {"acc": correct.float().mean() if correct.numel() else correct.float().sum(),
            "tau": 1.0 + (run * has).sum() / n, "tau_h": n / (has / (1.0 + run)).sum().clamp(min=1e-6),
            "acc_k": acc_k, "blocks": has.sum()}

