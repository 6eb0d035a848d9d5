"""The training loop: frozen target features -> blocks -> decayed CE -> AdamW, with exact resume.

One file to read top to bottom. Everything random is a function of (seed, micro-step, rank), and the
schedule length is fixed once and saved, so a run killed and resumed from its last checkpoint ends
with the same weights and optimizer as one that never stopped.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import sys
import time
from pathlib import Path

import torch
from torch import nn

from ..errors import ConfigError
from ..models.draft_vocab import always_kept, auto_size, count_tokens, kept_ids
from ..models.loading import load_target, resolve_dtype
from ..models.target import TargetBase
from . import distributed
from .blocks import greedy_labels
from .checkpoint import latest_checkpoint, list_checkpoints, load_checkpoint, restore_optimizer, save_checkpoint
from .dataset import BatchPlan, SequenceData, check_same_tokenizer, collate
from .draft_init import draft_config, new_draft
from .features import TargetFeatures
from .forward import layer_masks
from .objective import BlockObjective
from .schedule import cosine_lr
from .train_config import TrainConfig

_CALIBRATE = (3, 13, 50, 200, 600)  # time-boxed: step rate measured from step 3; schedule re-sized at the others
_RESIZE_EVERY = 500  # ... and every this many steps after, from the rate of the latest such window (the rate
# keeps rising for a while: on one H100 a run went from 0.25 s/step over its first 600 steps to 0.13 s/step)
_RESERVE_S = 15.0  # time kept for the final checkpoint, export and tau check (at most 10% of the budget)


def train(cfg: TrainConfig, target: tuple[nn.Module, object] | None = None, halt_after: int | None = None) -> dict:
    """Run (or resume) training; returns a summary. `target`: (hf_model, tokenizer) instead of loading
    cfg.target. `halt_after`: stop after this step without finishing (simulates a kill, for tests)."""
    cfg.validate()
    env = distributed.setup(cfg.device)
    try:
        return _Run(cfg, env, target).loop(halt_after)
    finally:
        env.close()


class _Run:
    def __init__(self, cfg: TrainConfig, env: distributed.Dist, target):
        self.cfg, self.env, self.dev = cfg, env, env.device
        self.out = Path(cfg.out)
        on_gpu = self.dev.type == "cuda"
        self.flex = _flex_attention(cfg.attention, self.dev)
        self.autocast = torch.bfloat16 if on_gpu else None
        if target is None:
            hf_model, self.tokenizer = load_target(cfg.target, resolve_dtype(None, self.dev), self.dev)
        else:
            hf_model, self.tokenizer = target
            hf_model = hf_model.to(self.dev)
        self.hf_model = hf_model

        ckpt = latest_checkpoint(self.out) if cfg.resume else None
        if not cfg.resume and env.main:
            _drop_earlier_run(self.out)
        if ckpt is not None:
            self.draft, self.state = load_checkpoint(ckpt)
        else:
            dcfg = draft_config(hf_model, self.tokenizer, cfg.num_layers, cfg.block_size, cfg.target_layer_ids)
            torch.manual_seed(cfg.seed)
            self.draft = new_draft(hf_model, dcfg, cfg.init, cfg.seed)
            if cfg.init_draft:
                from ..models.drafter import DFlashDraft

                start = DFlashDraft.from_pretrained(cfg.init_draft, dtype=torch.float32)
                try:
                    self.draft.load_state_dict(start.state_dict())
                except RuntimeError as exc:  # another shape: a page of size mismatches
                    raise ConfigError(f"--init-draft {cfg.init_draft} has another shape than the drafter to "
                                      f"train ({_first_mismatch(exc)}): give the same --num-layers, --block-size "
                                      "and --target-layer-ids, and a drafter of this --target") from exc
            self.state = {"step": 0, "total_steps": None, "elapsed_s": 0.0}
        self.draft = self.draft.to(self.dev).train()
        self.features = TargetFeatures(hf_model, self.draft.target_layer_ids)
        self.data = SequenceData(cfg.data, cfg.max_len)
        check_same_tokenizer(cfg.data, self.data, self.tokenizer, self.features.embed_weight.shape[0])
        self.target_labels = cfg.labels == "target" or (cfg.labels == "auto" and not self.data.all_greedy)
        if self.target_labels and cfg.distill:
            raise ConfigError(f"--distill with {cfg.data} needs labels from the data, but some of it holds answers "
                              "that are not the target's greedy text (corpus or sampled answers: --labels auto takes "
                              "the target's own labels there): pass --labels data, or drop --distill")
        self.token_counts: torch.Tensor | None = None  # of the answers' tokens: the pruned vocabularies rank by them
        kept = self._loss_ids()
        self.kept = kept.to(self.dev) if kept is not None else None
        self.objective = BlockObjective(self.draft, self.features.embed_weight, self.features.head_weight, cfg.gamma,
                                        kept, cfg.distill)
        if env.enabled:
            from torch.nn.parallel import DistributedDataParallel

            self.model = DistributedDataParallel(self.objective, device_ids=[env.local_rank] if on_gpu else None)
        else:
            self.model = self.objective
        self.opt = _optimizer(self.draft, cfg, on_gpu)
        if ckpt is not None:
            restore_optimizer(self.opt, self.state)

        self.plan = BatchPlan(self.data.lengths, cfg.batch_size, cfg.seed, env.rank, env.world)
        self.max_steps = cfg.max_steps
        if cfg.epochs is not None:
            self.max_steps = min(self.max_steps, max(1, math.ceil(cfg.epochs * self.plan.per_rank / cfg.grad_accum)))
        self.log = _Logger(self.out, env.main, cfg.tensorboard)
        if env.main:
            self.out.mkdir(parents=True, exist_ok=True)
            (self.out / "train_config.json").write_text(json.dumps(cfg.to_dict(), indent=1) + "\n")
            self.log.write(event="start", resumed_from=str(ckpt) if ckpt else None, step=self.state["step"],
                           sequences=len(self.data), response_tokens=self.data.response_tokens,
                           draft_params=sum(p.numel() for p in self.draft.parameters()), world=env.world,
                           device=str(self.dev), batches_per_epoch=self.plan.per_rank,
                           labels="target" if self.target_labels else "data",
                           loss_vocab=int(kept.numel()) if kept is not None else self.features.head_weight.shape[0])
        self.probe = self._tau_probe() if env.main else None

    # ------------------------------------------------------------------ loop
    def loop(self, halt_after: int | None) -> dict:
        cfg, st = self.cfg, self.state
        total = st["total_steps"] or self.max_steps
        t0 = time.time() - st["elapsed_s"]
        first = st["step"]
        marks: dict[int, float] = {}  # steps done in this process -> wall time
        window = _Window()
        while st["step"] < total:
            step = st["step"]
            lr = cosine_lr(step, total, cfg.lr, min(cfg.warmup_steps, max(1, total // 10)), cfg.min_lr_ratio)
            for group in self.opt.param_groups:
                group["lr"] = lr
            stats = self._step(step)
            st["step"] = step = step + 1
            st["elapsed_s"] = time.time() - t0
            window.add(stats)
            marks[step - first] = time.time()
            if cfg.time_budget_s is None and st["total_steps"] is None:
                total = st["total_steps"] = self.max_steps
            elif cfg.time_budget_s is not None and _resize_at(step - first) and step < total:
                total = st["total_steps"] = self._fit_budget(step, marks, t0)
            if step % cfg.log_every == 0 or step == total:
                means = window.mean(self.env)  # every rank joins the all-reduce; rank 0 writes
                self.log.write(step=step, lr=lr, elapsed_s=round(st["elapsed_s"], 1), **means)
                window = _Window()
            out_of_time = self._agree(cfg.time_budget_s is not None and
                                      time.time() - t0 > cfg.time_budget_s - _reserve(cfg))
            if step % cfg.save_every == 0 or step == total or out_of_time:
                self._save()
            if self.probe is not None and cfg.eval_every and step % cfg.eval_every == 0 and step < total:
                self.log.write(step=step, eval=self.probe(self.draft))
            if halt_after is not None and step >= halt_after:
                return {"halted_at": step}
            if out_of_time:
                break
        return self._finish()

    def _step(self, step: int) -> dict[str, torch.Tensor]:
        cfg, stats = self.cfg, []
        for m in range(cfg.grad_accum):
            micro = step * cfg.grad_accum + m
            epoch, idx = self.plan.indices(micro)
            seed = (cfg.seed * 1_000_003 + micro) * 131 + self.env.rank
            tokens, _, blocks = collate(self.data, idx, cfg.anchors, self.draft.block_size,
                                        self.draft.mask_token_id, seed)
            tokens, blocks = tokens.to(self.dev, non_blocking=True), blocks.to(self.dev)
            feats, blocks, soft = self._target(tokens, blocks)
            masks = layer_masks(self.draft, blocks.anchors, tokens.shape[1], self.flex)
            sync = m == cfg.grad_accum - 1 or not self.env.enabled
            with (contextlib.nullcontext() if sync else self.model.no_sync()), self._autocast():
                loss, s = self.model(feats, blocks, masks, *soft)
            del soft  # the target's logits: backward does not need them
            (loss / cfg.grad_accum).backward()
            s["loss"], s["epoch"] = loss.detach(), torch.tensor(float(epoch))
            stats.append(s)
        grad_norm = nn.utils.clip_grad_norm_(self.draft.parameters(), cfg.grad_clip)
        self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        out = {k: torch.stack([s[k].float() for s in stats]).mean(0) for k in stats[0] if k != "blocks"}
        out["blocks"] = sum(s["blocks"] for s in stats).float()
        out["grad_norm"] = grad_norm.detach().float()
        return out

    def _target(self, tokens: torch.Tensor, blocks) -> tuple[torch.Tensor, object, tuple]:
        """Features and the blocks to learn: relabelled with the target's greedy tokens (labels 'target'), or
        as they are plus the target's logits at the labels when distilling (else nothing extra is computed)."""
        if self.target_labels:
            feats, greedy = self.features.with_greedy(tokens)
            return feats, greedy_labels(blocks, tokens, greedy), ()
        if not self.cfg.distill:
            return self.features(tokens), blocks, ()
        feats, logits = self.features.with_logits(tokens, *self.objective.label_sources(blocks), self.kept)
        return feats, blocks, (logits,)

    def _autocast(self):
        if self.autocast is None:
            return contextlib.nullcontext()
        return torch.autocast(self.dev.type, dtype=self.autocast)

    def _fit_budget(self, step: int, marks: dict[int, float], t0: float) -> int:
        """Schedule length that the measured step rate fits in the time budget (re-sized as the rate settles)."""
        n = max(marks)  # marks: steps done in this process -> wall time
        lo = max(_CALIBRATE[0], n - _RESIZE_EVERY)
        rate = (marks[n] - marks[lo]) / (n - lo)
        left = self.cfg.time_budget_s - _reserve(self.cfg) - (time.time() - t0)
        total = min(self.max_steps, step + max(1, int(left / max(rate, 1e-6))))
        if self.env.enabled:
            t = torch.tensor([total], device=self.dev)
            torch.distributed.broadcast(t, 0)
            total = int(t.item())
        if self.env.main:
            self.log.write(event="schedule", step=step, total_steps=total, step_s=round(rate, 4))
        return total

    def _agree(self, flag: bool) -> bool:
        if not self.env.enabled:
            return flag
        t = torch.tensor([int(flag)], device=self.dev)
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MAX)
        return bool(t.item())

    def _save(self) -> None:
        if self.env.main:
            keep = {k: v for k, v in self.state.items()}
            keep["config"] = self.cfg.to_dict()
            save_checkpoint(self.out, self.draft, self.opt, keep, self.cfg.keep_checkpoints)
        self.env.barrier()

    def _finish(self) -> dict:
        summary = {"step": self.state["step"], "elapsed_s": round(self.state["elapsed_s"], 1)}
        if self.dev.type == "cuda":  # what a user needs to size the batch (or fit several runs on one GPU)
            summary["peak_gpu_gib"] = round(torch.cuda.max_memory_allocated(self.dev) / 2**30, 2)
        if self.env.main:
            export = copy.deepcopy(self.draft).to(resolve_dtype(self.cfg.export_dtype, "cpu")).eval()
            # which tokens the answers use: lets the engine prune the draft vocabulary (models/draft_vocab.py)
            export.token_counts = self._counts()
            summary["draft"] = str(export.save_pretrained(self.out / "draft"))
            if self.probe is not None:
                summary["eval"] = self.probe(self.draft)
            self.log.write(event="done", **summary)
            self.log.close()
        self.env.barrier()  # ranks leave together: tearing gloo down while rank 0 still exports aborts the peer
        return summary

    def _counts(self) -> torch.Tensor:
        """Occurrences of each token id in the training answers (a pure function of the data: equal on all ranks).
        The target's own answers only, where there are any: a corpus's words are not what the engine drafts."""
        if self.token_counts is None:
            own = any(a != "corpus" for a in self.data.answers)
            self.token_counts = count_tokens((tok[mask] for (tok, mask), source in
                                              zip(self.data.items, self.data.answers, strict=True)
                                              if not (own and source == "corpus")), self.features.head_weight.shape[0])
        return self.token_counts

    def _loss_ids(self) -> torch.Tensor | None:
        """Ids the loss covers (None: all), chosen as the engine chooses its draft vocabulary from the same counts."""
        size = self.cfg.loss_vocab
        if size == 0:
            return None
        counts = self._counts()
        size = auto_size(counts) if size < 0 else size
        if size >= counts.numel():
            return None
        stops = TargetBase(self.hf_model, self.tokenizer).stop_token_ids()
        return kept_ids(counts, size, always_kept(stops, self.tokenizer))

    def _tau_probe(self):
        from .evaluate import TauProbe
        from .prompts import load_conversations

        path = self.cfg.eval_prompts or _default_heldout(self.cfg.data)
        if path is None or self.tokenizer is None or self.cfg.eval_num < 1:
            return None
        from ..engine.generator import chat_prompt

        convs = load_conversations(str(path), max_turns=1, limit=self.cfg.eval_num, seed=0)
        prompts = [chat_prompt(self.tokenizer, [{"role": "user", "content": c[0]}]) for c in convs]
        return TauProbe(self.hf_model, self.tokenizer, [p for p in prompts if len(p) < 1024],
                        self.cfg.eval_max_new_tokens)


def _resize_at(done: int) -> bool:
    """Whether the time-boxed schedule is re-sized after `done` steps of this process."""
    return done in _CALIBRATE[1:] or (done > _CALIBRATE[-1] and done % _RESIZE_EVERY == 0)


def _reserve(cfg: TrainConfig) -> float:
    return min(_RESERVE_S, 0.1 * (cfg.time_budget_s or 0.0))


def _flex_attention(choice: str, device: torch.device) -> bool:
    """FlexAttention (block-sparse) on GPUs; the dense SDPA mask elsewhere (Flex has no CPU backward)."""
    from .flex_mask import flex_available

    if choice == "sdpa":
        return False
    usable = device.type == "cuda" and flex_available()
    if choice == "flex" and not usable:
        raise ConfigError(f"--attention flex needs a CUDA device and torch with FlexAttention (training on "
                          f"{device}); use --attention sdpa")
    # auto: only where its Triton kernels are at home (measured on Hopper; Ampere and newer are supported)
    return usable and (choice == "flex" or torch.cuda.get_device_capability(device) >= (8, 0))


def _optimizer(draft: nn.Module, cfg: TrainConfig, on_gpu: bool) -> torch.optim.Optimizer:
    """AdamW; no weight decay on norms and biases."""
    decay = [p for n, p in draft.named_parameters() if p.ndim >= 2]
    other = [p for n, p in draft.named_parameters() if p.ndim < 2]
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8, fused=on_gpu or None)


def _drop_earlier_run(out: Path) -> None:
    """--no-resume starts over: an earlier run's checkpoints would otherwise outrank this run's (a higher step
    number), so pruning would delete the new ones and a later resume would pick up the old run."""
    if list_checkpoints(out):
        print(f"train: starting over (--no-resume): removing the earlier run's checkpoints in {out / 'checkpoints'}",
              file=sys.stderr)
        shutil.rmtree(out / "checkpoints")


def _first_mismatch(exc: RuntimeError) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[1] if len(lines) > 1 else lines[0] if lines else "state dicts differ").rstrip(".")


def _default_heldout(data: list[str]) -> Path | None:
    for d in data:
        p = Path(d) / "heldout.jsonl"
        if p.is_file():
            return p
    return None


class _Window:
    """Running sums of step statistics between two log lines."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0
        self.t0 = time.time()

    def add(self, stats: dict[str, torch.Tensor]) -> None:
        for k, v in stats.items():
            self.sums[k] = self.sums.get(k, 0) + v.detach()
        self.n += 1

    def mean(self, env: distributed.Dist) -> dict:
        if not self.n:
            return {}
        out = {}
        for k, v in self.sums.items():
            v = env.mean(v.float() / self.n)
            out[k] = [round(x, 4) for x in v.tolist()] if v.ndim else round(v.item(), 4)
        out["acc_k"] = out.get("acc_k", [])[:8]
        out["blocks_per_s"] = round(out.pop("blocks") * self.n * env.world / max(time.time() - self.t0, 1e-9), 1)
        return out


class _Logger:
    """JSONL log (+ TensorBoard scalars when installed), rank 0 only."""

    def __init__(self, out: Path, enabled: bool, tensorboard: bool):
        self.enabled, self.path, self.tb = enabled, out / "log.jsonl", None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.tb = SummaryWriter(str(out / "tb"))
            except Exception:  # tensorboard not installed: JSONL only
                self.tb = None

    def write(self, **row) -> None:
        if not self.enabled:
            return
        row = {"time": round(time.time(), 1), **row}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps(row), flush=True)
        if self.tb is not None and "step" in row:
            for k, v in row.items():
                if isinstance(v, (int, float)) and k not in ("step", "time"):
                    self.tb.add_scalar(k, v, row["step"])
            if isinstance(row.get("eval"), dict) and "tau" in row["eval"]:
                self.tb.add_scalar("eval/tau", row["eval"]["tau"], row["step"])

    def close(self) -> None:
        if self.tb is not None:
            self.tb.close()
