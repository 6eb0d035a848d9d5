"""TrainConfig: every knob of a training run, as plain values (JSON file and CLI flags fill the same fields)."""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ..errors import ConfigError


@dataclass
class TrainConfig:
    data: list[str] = field(default_factory=list)  # shard directories or files from `dflashkit datagen`
    out: str = "runs/draft"
    target: str | None = None  # hub id, local dir or .gguf; None = embedded SmolLM2-135M-Instruct
    # drafter shape
    num_layers: int = 3
    block_size: int = 16
    target_layer_ids: list[int] | None = None  # None: spread over the target (config default)
    init: str = "target"  # 'target': copy the target's top layers; 'random'
    init_draft: str | None = None  # start from this drafter's weights (same shape)
    # objective
    anchors: int = 128  # blocks per sequence (at most)
    gamma: float | None = None  # loss decay over offsets; None: 7 for block 16, 4 for block 8
    max_len: int = 2048  # tokens per sequence (prompt + response), truncated beyond
    loss_vocab: int = 0  # loss over the N most frequent answer tokens (+ specials); 0: all, -1: auto (99% coverage)
    distill: float = 0.0  # weight of CE against the target's own distribution at each label (0: hard labels only)
    labels: str = "auto"  # 'data': the row's next tokens; 'target': the target's greedy choices; auto: target iff
    # some --data holds answers other than the target's greedy ones (datagen --answers corpus, or --temperature)
    # optimisation
    batch_size: int = 16  # sequences per micro-batch per rank
    grad_accum: int = 1
    lr: float = 6e-4
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_steps: int = 20_000
    epochs: float | None = None  # if set, caps max_steps at this many passes over the data
    time_budget_s: float | None = None  # stop (and size the schedule) to end within this many seconds
    seed: int = 0
    # io
    log_every: int = 20
    save_every: int = 500
    keep_checkpoints: int = 2
    eval_every: int = 0  # steps between tau checks on held-out prompts (0: only at the end)
    eval_prompts: str | None = None  # JSONL; default <first data dir>/heldout.jsonl when present
    eval_num: int = 32
    eval_max_new_tokens: int = 192
    export_dtype: str = "bfloat16"  # the final drafter in <out>/draft
    device: str | None = None
    attention: str = "auto"  # drafter attention in training: 'flex' (block-sparse), 'sdpa' (dense mask), auto
    resume: bool = True  # continue from the newest checkpoint in <out>
    tensorboard: bool = True

    def validate(self) -> TrainConfig:
        self._check_types()
        if not self.data:
            raise ConfigError("no training data: pass --data DIR (output of `dflashkit datagen`)")
        for name in ("num_layers", "anchors", "batch_size", "grad_accum", "max_steps", "log_every", "save_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.block_size < 2:
            raise ConfigError(f"block_size must be >= 2, got {self.block_size}")
        if self.max_len < 2:  # a negative one sliced tokens off every row's end, and trained on the rest
            raise ConfigError(f"max_len must be >= 2 (an anchor and its next token), got {self.max_len}")
        if self.loss_vocab < -1:
            raise ConfigError(f"loss_vocab must be >= -1 (0 = the whole vocabulary, -1 = auto), got {self.loss_vocab}")
        if not 0.0 <= self.distill <= 1.0:
            raise ConfigError(f"distill must be between 0 and 1 (the soft target loss's weight), got {self.distill}")
        if self.attention not in ("auto", "flex", "sdpa"):
            raise ConfigError(f"attention must be 'auto', 'flex' or 'sdpa', got {self.attention!r}")
        if self.labels not in ("auto", "data", "target"):
            raise ConfigError(f"labels must be 'auto', 'data' or 'target', got {self.labels!r}")
        if self.labels == "target" and self.distill:
            raise ConfigError("distill > 0 with labels 'target' is not supported: the soft targets sit at the "
                              "labels, which the target's own forward decides; use one or the other")
        if self.init not in ("target", "random"):
            raise ConfigError(f"init must be 'target' or 'random', got {self.init!r}")
        self._check_ranges()
        return self

    def _check_ranges(self) -> None:
        """Values torch would reject mid-setup, or that would quietly run one step (epochs 0, a past budget)."""
        from ..models.loading import resolve_dtype

        for name in ("lr", "grad_clip", "gamma", "epochs", "time_budget_s"):
            value = getattr(self, name)
            # inf too (grad_clip excepted: no clipping): an lr of inf trained NaN weights to the end
            if value is not None and not (value > 0 and (math.isfinite(value) or name == "grad_clip")):
                raise ConfigError(f"{name} must be > 0 and finite, got {value}")
        for name in ("warmup_steps", "weight_decay", "keep_checkpoints", "eval_every", "eval_num",
                     "eval_max_new_tokens"):
            if not getattr(self, name) >= 0 or not math.isfinite(getattr(self, name)):  # NaN passed '< 0'
                raise ConfigError(f"{name} must be >= 0 and finite, got {getattr(self, name)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"min_lr_ratio must be between 0 and 1, got {self.min_lr_ratio}")
        try:  # an unknown name fails now, not at export after the last step
            resolve_dtype(self.export_dtype, "cpu")
        except ConfigError as exc:
            raise ConfigError(f"export_dtype: {exc}") from exc

    def _check_types(self) -> None:
        """A JSON config's "1e-3" or "no" would reach torch as a string, or read as true: name the field instead."""
        for f in fields(self):
            value, kind = getattr(self, f.name), str(f.type)
            if value is None and kind.endswith(" | None"):
                continue
            base = kind.removesuffix(" | None")
            if base.startswith("list["):
                ok = isinstance(value, list) and all(_is_kind(v, base[5:-1]) for v in value)
            else:
                ok = _is_kind(value, base)
            if not ok:
                wanted = (f"a list of {_KIND_NAMES[base[5:-1]].split()[-1]}s" if base.startswith("list[")
                          else _KIND_NAMES[base])
                raise ConfigError(f"{f.name} must be {wanted}{' or null' if kind.endswith(' | None') else ''}, "
                                  f"got {value!r}")

    @classmethod
    def from_json(cls, path: str | Path, **overrides) -> TrainConfig:
        try:
            raw = json.loads(Path(path).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read training config {path}: {exc}") from exc
        if not isinstance(raw, dict):
            raise ConfigError(f"training config {path} must be a JSON object of TrainConfig fields")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown keys {unknown} (valid: {sorted(known)})")
        raw.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**raw)

    def to_dict(self) -> dict:
        return asdict(self)


_KIND_NAMES = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false"}


def _is_kind(value, kind: str) -> bool:
    """`kind` is a field annotation's text: int, float, bool or str (an int is a fine float; a bool is no number)."""
    if isinstance(value, bool):
        return kind == "bool"
    if kind == "float":
        return isinstance(value, (int, float))
    return isinstance(value, {"int": int, "str": str, "bool": bool}[kind])
