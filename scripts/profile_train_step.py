"""Where a training step's time goes: collate, target features, masks, drafter forward, backward, optimizer.

Synchronises the device between phases (so the total is a little above a real step) and prints medians.

    python scripts/profile_train_step.py --target DIR --data DATA_DIR [--batch-size 16 --anchors 128 --steps 12]
        [--attention sdpa flex --num-layers 5 8]

A FlexAttention run also prints its parity with the dense mask on one batch (loss and gradients).
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import time

import torch

from dflashkit.training.dataset import collate
from dflashkit.training.distributed import Dist
from dflashkit.training.forward import layer_masks
from dflashkit.training.train_config import TrainConfig
from dflashkit.training.trainer import _Run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--target", default=None)
    p.add_argument("--data", required=True)
    p.add_argument("--batch-size", type=int, nargs="+", default=[16])
    p.add_argument("--anchors", type=int, nargs="+", default=[128])
    p.add_argument("--num-layers", type=int, nargs="+", default=[3])
    p.add_argument("--attention", nargs="+", default=["sdpa"], choices=["sdpa", "flex"])
    p.add_argument("--loss-vocab", type=int, nargs="+", default=[0], help="0 full, -1 auto, N kept tokens")
    p.add_argument("--max-len", type=int, default=1024)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--kernels", type=int, default=0,
                   help="also print the top-N GPU kernels of one step (torch.profiler)")
    args = p.parse_args()
    dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    run = None
    grid = itertools.product(args.num_layers, args.attention, args.batch_size, args.anchors, args.loss_vocab)
    for layers, attention, bs, anchors, loss_vocab in grid:
        cfg = TrainConfig(data=[args.data], out="/tmp/profile-train", target=args.target, attention=attention,
                          num_layers=layers, anchors=anchors, batch_size=bs, max_len=args.max_len,
                          resume=False, eval_num=0, tensorboard=False, loss_vocab=loss_vocab)
        target = None if run is None else (run.hf_model, run.tokenizer)
        run = _Run(cfg, Dist(device=dev), target)
        parity = _parity(run, anchors) if run.flex else None
        times: dict[str, list[float]] = {}
        for step in range(args.steps):
            lap = _Laps(sync)
            _step(run, anchors, step, lap)
            if step >= 2:  # warm-up
                for k, v in lap.times.items():
                    times.setdefault(k, []).append(v * 1000)
        step_ms = _free_running(run, anchors, args.steps, sync)
        if args.kernels and dev.type == "cuda":
            _kernel_table(run, anchors, args.kernels)
        med = {k: round(statistics.median(v), 1) for k, v in times.items()}
        med["total"] = round(sum(med.values()), 1)
        drafted = bs * anchors * run.draft.block_size
        print(json.dumps({"layers": layers, "attention": attention, "parity": parity, "batch": bs,
                          "anchors": anchors, "loss_vocab": loss_vocab, "ms": med,
                          "step_ms_unsynced": round(step_ms, 1), "peak_gb": _peak(dev),
                          "drafted_pos_per_s": round(drafted / step_ms * 1000)}), flush=True)


def _step(run, anchors: int, step: int, lap=lambda name: None) -> None:
    """One training step as the trainer runs it; `lap(name)` after each phase."""
    _, idx = run.plan.indices(step)
    tokens, _, blocks = collate(run.data, idx, anchors, run.draft.block_size, run.draft.mask_token_id, step)
    lap("collate")
    feats = run.features(tokens.to(run.dev, non_blocking=True))
    blocks = blocks.to(run.dev)
    lap("features")
    masks = layer_masks(run.draft, blocks.anchors, tokens.shape[1], run.flex)
    lap("masks")
    with run._autocast():
        loss, _ = run.model(feats, blocks, masks)
    lap("forward")
    loss.backward()
    lap("backward")
    run.opt.step()
    run.opt.zero_grad(set_to_none=True)
    lap("optimizer")


def _parity(run, anchors: int) -> dict:
    """Loss and gradients of one batch through FlexAttention vs the dense mask (the same weights)."""
    _, idx = run.plan.indices(0)
    tokens, _, blocks = collate(run.data, idx, anchors, run.draft.block_size, run.draft.mask_token_id, 0)
    tokens, blocks = tokens.to(run.dev), blocks.to(run.dev)
    feats = run.features(tokens)
    out = {}
    for flex in (False, True):
        masks = layer_masks(run.draft, blocks.anchors, tokens.shape[1], flex)
        with run._autocast():
            loss, _ = run.model(feats, blocks, masks)
        loss.backward()
        grads = torch.cat([p.grad.flatten() for p in run.draft.parameters() if p.grad is not None])
        out[flex] = (loss.item(), grads)
        run.opt.zero_grad(set_to_none=True)
    (l0, g0), (l1, g1) = out[False], out[True]
    return {"loss_dense": round(l0, 5), "loss_flex": round(l1, 5),
            "grad_rel_diff": round(((g1 - g0).norm() / g0.norm()).item(), 5)}


def _free_running(run, anchors: int, steps: int, sync) -> float:
    """Mean ms of whole steps with no phase syncs (what training sees: host and device overlap)."""
    sync()
    t0 = time.perf_counter()
    for step in range(steps):
        _step(run, anchors, step)
    sync()
    return (time.perf_counter() - t0) / steps * 1000


def _kernel_table(run, anchors: int, top: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        _step(run, anchors, 0)
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=top, max_name_column_width=60), flush=True)


class _Laps:
    """Seconds since the previous lap, per phase name, with the device synchronised at each lap."""

    def __init__(self, sync):
        self.sync, self.times = sync, {}
        sync()
        self.t0 = time.perf_counter()

    def __call__(self, name: str) -> None:
        self.sync()
        now = time.perf_counter()
        self.times[name] = now - self.t0
        self.t0 = now


def _peak(dev) -> float | None:
    if dev.type != "cuda":
        return None
    gb = torch.cuda.max_memory_allocated() / 2**30
    torch.cuda.reset_peak_memory_stats()
    return round(gb, 1)


if __name__ == "__main__":
    main()
