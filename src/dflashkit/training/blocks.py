"""The DFlash training geometry: anchors inside responses, the blocks they start, and who sees whom.

An anchor `a` is a response token the target has already committed. Its block holds that token then
B-1 mask tokens at positions a..a+B-1, and learns the real tokens at a+1..a+B-1. Context is the target's
features at positions < a, exactly what the engine has cached when it drafts after token a.
All blocks of a batch train in one pass: a block sees context before its own anchor and its own
block (bidirectional, or causal/windowed for sliding layers), never another block.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch


@dataclass
class Blocks:
    """One batch of blocks: A anchors per row (padded), T = block size."""

    anchors: torch.Tensor  # [B, A] anchor positions
    valid: torch.Tensor  # [B, A] real anchors (padding anchors carry no loss)
    input_ids: torch.Tensor  # [B, A*T] anchor token then mask tokens
    positions: torch.Tensor  # [B, A*T] absolute positions a + k
    labels: torch.Tensor  # [B, A*T] real token at a + k (0 where unused)
    label_mask: torch.Tensor  # [B, A*T] offsets k >= 1 inside the response

    @property
    def block_size(self) -> int:
        return self.input_ids.shape[1] // max(self.anchors.shape[1], 1)

    def to(self, device) -> Blocks:
        return Blocks(*(t.to(device, non_blocking=True) for t in (
            self.anchors, self.valid, self.input_ids, self.positions, self.labels, self.label_mask)))


def anchor_candidates(loss_mask: torch.Tensor, length: int) -> torch.Tensor:
    """Positions a whose token is a response token and whose next token is a response label."""
    # loss_mask [L] bool over one sequence -> 1-D tensor of candidate positions
    m = loss_mask[:length]
    ok = m[:-1] & m[1:]
    return ok.nonzero().flatten()


def sample_anchors(loss_mask: torch.Tensor, lengths: torch.Tensor, max_anchors: int,
                   generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to `max_anchors` distinct anchors per row, sorted; -> anchors [B, A], valid [B, A] (A = most used)."""
    picks = []
    for row in range(loss_mask.shape[0]):
        cands = anchor_candidates(loss_mask[row], int(lengths[row]))
        if len(cands) > max_anchors:
            order = torch.randperm(len(cands), generator=generator)[:max_anchors]
            cands = cands[order].sort().values
        picks.append(cands)
    width = max(1, max(len(p) for p in picks))
    anchors = torch.zeros(len(picks), width, dtype=torch.long)
    valid = torch.zeros(len(picks), width, dtype=torch.bool)
    for row, p in enumerate(picks):
        anchors[row, :len(p)] = p
        valid[row, :len(p)] = True
    return anchors, valid


def make_blocks(tokens: torch.Tensor, loss_mask: torch.Tensor, lengths: torch.Tensor, anchors: torch.Tensor,
                valid: torch.Tensor, block_size: int, mask_token_id: int) -> Blocks:
    """Inputs, positions and labels of every block. tokens/loss_mask [B, L], anchors/valid [B, A]."""
    b, length = tokens.shape
    a = anchors.shape[1]
    offsets = torch.arange(block_size)
    pos = anchors[:, :, None] + offsets  # [B, A, T]
    inside = pos < lengths[:, None, None]
    at = pos.clamp(max=length - 1).flatten(1)
    labels = tokens.gather(1, at).view(b, a, block_size)
    label_mask = inside & loss_mask.gather(1, at).view(b, a, block_size) & valid[:, :, None]
    label_mask[:, :, 0] = False  # offset 0 is the anchor itself: given, not predicted
    inputs = torch.full((b, a, block_size), mask_token_id, dtype=tokens.dtype)
    inputs[:, :, 0] = tokens.gather(1, anchors)
    labels = torch.where(label_mask, labels, torch.zeros_like(labels))
    return Blocks(anchors, valid, inputs.flatten(1), pos.flatten(1), labels.flatten(1), label_mask.flatten(1))


def greedy_labels(blocks: Blocks, tokens: torch.Tensor, greedy: torch.Tensor) -> Blocks:
    """Labels from the target itself: offset k learns greedy[a+k-1], the target's own choice after position
    a+k-1, and stays in the loss only while the row's tokens a+1..a+k-1 are the target's greedy chain.

    That is what verification accepts: draft k counts only after drafts 1..k-1 matched the chain. On the
    target's own greedy answers nothing changes (each token is the previous position's greedy choice); on
    anyone else's text (a corpus's answers) every label is still the target's, and a block where the text
    leaves the chain keeps the offsets before that point. tokens/greedy [B, L]: row tokens, the target's
    argmax at each position.
    """
    b, length = tokens.shape
    t = blocks.block_size
    pos = blocks.positions.view(b, -1, t)  # [B, A, T] = a + k
    labels = greedy.gather(1, (pos - 1).clamp(0, length - 1).flatten(1)).view(b, -1, t)
    real = tokens.gather(1, pos.clamp(max=length - 1).flatten(1)).view(b, -1, t)
    follows = (real == labels).long()  # offset j: the row's token a+j is the chain's
    chain = torch.ones_like(follows)
    chain[:, :, 2:] = follows[:, :, 1:-1].cumprod(-1)  # offset k needs offsets 1..k-1 on the chain
    mask = blocks.label_mask & chain.flatten(1).bool()
    labels = torch.where(mask, labels.flatten(1), torch.zeros_like(blocks.labels))
    return replace(blocks, labels=labels, label_mask=mask)


def block_attention_mask(anchors: torch.Tensor, context_len: int, block_size: int, causal: bool = False,
                         window: int | None = None) -> torch.Tensor:
    """Bool mask [B, 1, A*T, L + A*T] (True = attend) for context keys 0..L-1 then the blocks' own keys.

    Query (i, k) at position a_i + k sees context key j iff j < a_i, and key (i', k') iff i' == i;
    causal layers add k' <= k, sliding layers |query pos - key pos| < window (keys ahead only if not causal).
    """
    b, a = anchors.shape
    t = block_size
    dev = anchors.device
    k = torch.arange(t, device=dev)
    q_pos = (anchors[:, :, None] + k).reshape(b, a * t, 1)  # [B, Q, 1]
    ctx_pos = torch.arange(context_len, device=dev)[None, None, :]  # [1, 1, L]
    q_anchor = anchors[:, :, None].expand(b, a, t).reshape(b, a * t, 1)
    see_ctx = ctx_pos < q_anchor  # [B, Q, L]
    if window is not None:
        see_ctx = see_ctx & (q_pos - ctx_pos < window)
    blk = torch.arange(a, device=dev).repeat_interleave(t)
    see_blk = blk[:, None] == blk[None, :]  # [Q, Q]
    if causal:
        see_blk = see_blk & (k.repeat(a)[None, :] <= k.repeat(a)[:, None])
    if window is not None:
        off = k.repeat(a)[:, None] - k.repeat(a)[None, :]  # query offset - key offset
        see_blk = see_blk & (off < window)
        if not causal:
            see_blk = see_blk & (-off < window)
    see_blk = see_blk[None].expand(b, -1, -1)
    return torch.cat([see_ctx, see_blk], dim=-1)[:, None]
