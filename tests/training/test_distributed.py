"""Data-parallel training as torchrun runs it (two CPU processes, gloo): ranks stay in step and the run ends."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp
from test_trainer import config, log_rows, tiny_data  # noqa: F401  (fixture)
from trainkit import ByteTokenizer, tiny_llama

from dflashkit import DFlashDraft


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rank(rank: int, world: int, port: int, data: str, out: str, distill: float) -> None:
    from dflashkit.training import distributed
    from dflashkit.training.trainer import _Run

    os.environ.update(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE=str(world), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    env = distributed.setup("cpu")
    try:
        run = _Run(config(data, out, max_steps=6, save_every=100, distill=distill), env,
                   (tiny_llama(), ByteTokenizer()))
        run.loop(None)
        torch.save(run.draft.state_dict(), os.path.join(out, f"rank{rank}.pt"))
    finally:
        env.close()


@pytest.mark.parametrize("distill", [0.0, 0.5])  # distilling hands DDP's module one more input
def test_two_ranks_train_in_step_and_export(tiny_data, tmp_path, distill):  # noqa: F811
    data, _, _ = tiny_data
    mp.spawn(_rank, args=(2, _free_port(), str(data), str(tmp_path), distill), nprocs=2, join=True)
    a, b = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)  # gradients were averaged: both ranks hold the same weights
    start = tiny_start_weights()
    assert any(not torch.equal(a[k], start[k]) for k in a)  # and they did train
    rows = log_rows(tmp_path)
    assert rows[0]["world"] == 2 and any(r.get("event") == "done" for r in rows)
    DFlashDraft.from_pretrained(tmp_path / "draft")  # rank 0 exported a loadable drafter


def tiny_start_weights() -> dict:
    """The weights a run with `config`'s seed starts from (single process, no step)."""
    from dflashkit.training.draft_init import draft_config, new_draft

    model, tok = tiny_llama(), ByteTokenizer()
    cfg = config(".", ".")
    torch.manual_seed(cfg.seed)
    return new_draft(model, draft_config(model, tok, cfg.num_layers, cfg.block_size), cfg.init, cfg.seed).state_dict()
