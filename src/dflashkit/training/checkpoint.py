"""Checkpoints: the drafter in the published format (fp32 master weights) + `trainer_state.pt`.

trainer_state holds what resume needs beyond the weights: optimizer, step, the fixed schedule length,
the data position and RNG states. A checkpoint directory appears only when complete (written under a
temporary name, then renamed), so a kill at any moment leaves the previous one usable.
"""

from __future__ import annotations

import random
import shutil
from pathlib import Path

import torch

from ..models.drafter import DFlashDraft

STATE = "trainer_state.pt"


def checkpoint_dir(out: str | Path, step: int) -> Path:
    return Path(out) / "checkpoints" / f"step-{step:07d}"


def save_checkpoint(out: str | Path, draft: DFlashDraft, optimizer: torch.optim.Optimizer, state: dict,
                    keep: int = 2) -> Path:
    """Write checkpoint-at-`state['step']` atomically; keep the newest `keep` checkpoints."""
    final = checkpoint_dir(out, state["step"])
    tmp = final.with_name(final.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    draft.save_pretrained(tmp)
    full = dict(state, optimizer=optimizer.state_dict(), rng=_rng_state())
    torch.save(full, tmp / STATE)
    shutil.rmtree(final, ignore_errors=True)
    tmp.rename(final)
    for old in list_checkpoints(out)[:-keep] if keep > 0 else []:
        shutil.rmtree(old, ignore_errors=True)
    return final


def list_checkpoints(out: str | Path) -> list[Path]:
    root = Path(out) / "checkpoints"
    return sorted(p for p in root.glob("step-*") if p.is_dir() and not p.name.endswith(".tmp")
                  and (p / STATE).is_file())


def latest_checkpoint(out: str | Path) -> Path | None:
    found = list_checkpoints(out)
    return found[-1] if found else None


def saved_config(path: str | Path) -> dict:
    """The TrainConfig fields a checkpoint was written under ({} if it predates them); memory-mapped, so the
    optimizer state is not read."""
    state = torch.load(Path(path) / STATE, map_location="cpu", weights_only=False, mmap=True)
    return dict(state.get("config") or {})


def load_checkpoint(path: str | Path) -> tuple[DFlashDraft, dict]:
    """-> (drafter with the saved fp32 weights, trainer state); RNG restored. Optimizer: `restore_optimizer`."""
    path = Path(path)
    draft = DFlashDraft.from_pretrained(path, dtype=torch.float32).train()
    state = torch.load(path / STATE, map_location="cpu", weights_only=False)
    _set_rng_state(state.pop("rng"))
    return draft, state


def restore_optimizer(optimizer: torch.optim.Optimizer, state: dict) -> None:
    optimizer.load_state_dict(state.pop("optimizer"))


def _rng_state() -> dict:
    out = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        out["cuda"] = torch.cuda.get_rng_state_all()
    return out


def _set_rng_state(rng: dict) -> None:
    random.setstate(rng["python"])
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
