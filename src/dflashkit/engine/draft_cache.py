"""The drafter's KV cache: context K/V of accepted tokens only, one slot per sequence, indexed by position."""

from __future__ import annotations

import torch

from ..models.drafter import DFlashDraft


class DraftCache:
    def __init__(self, draft: DFlashDraft, batch: int, capacity: int):
        cfg = draft.config
        shape = (batch, cfg.num_key_value_heads, capacity, cfg.head_dim)
        self.k = [torch.zeros(shape, dtype=draft.dtype, device=draft.device) for _ in range(cfg.num_hidden_layers)]
        self.v = [torch.zeros_like(k) for k in self.k]

    def write(self, kv: list[tuple[torch.Tensor, torch.Tensor]], positions: torch.Tensor,
              slot: int | torch.Tensor | None = None) -> None:
        """kv per layer [b, n_kv, N, D] at positions [b, N]; rows 0..b-1, one `slot`, or slots [b].

        Entries past a sequence's length may be written with junk: they are masked out and rewritten
        before any read, which is what makes rollback free.
        """
        if isinstance(slot, int):
            for (k, v), ck, cv in zip(kv, self.k, self.v):
                ck[slot].index_copy_(1, positions[0], k[0])
                cv[slot].index_copy_(1, positions[0], v[0])
            return
        rows = slot if slot is not None else torch.arange(positions.shape[0], device=positions.device)
        rows = rows[:, None].expand_as(positions)
        for (k, v), ck, cv in zip(kv, self.k, self.v):
            ck[rows, :, positions] = k.transpose(1, 2)
            cv[rows, :, positions] = v.transpose(1, 2)

    def views(self, rows: int, length: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        return [(k[:rows, :, :length], v[:rows, :, :length]) for k, v in zip(self.k, self.v)]
