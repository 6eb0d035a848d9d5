"""`dflashkit train`: train a DFlash drafter on datagen shards (one GPU, CPU, or `torchrun` for several GPUs).

Values come from the TrainConfig defaults, then `--config file.json`, then flags; the flags are made from
the config's fields, so the two can never drift apart.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import MISSING, fields
from pathlib import Path

HELP = {
    "data": "datagen output directories or shard files",
    "out": "run directory: checkpoints/, draft/ (final, published format), log.jsonl",
    "target": "target model: hub id, local dir or .gguf (default: embedded SmolLM2-135M-Instruct)",
    "num_layers": "drafter layers",
    "block_size": "tokens per drafted block (anchor + block_size - 1 predictions)",
    "target_layer_ids": "target layers whose outputs feed the drafter (comma list; default: spread evenly)",
    "init": "'target' (copy the target's top layers) or 'random'",
    "init_draft": "start from this drafter's weights",
    "anchors": "blocks per sequence per step (at most)",
    "gamma": "loss decay over block offsets (default 7 for block 16, 4 for block 8)",
    "max_len": "truncate sequences to this many tokens",
    "loss_vocab": "loss over the N most frequent answer tokens plus specials (cheaper head + CE; the engine's "
                  "pruned draft vocabulary); 0: all tokens, -1: auto (fewest covering 99%%, as the engine)",
    "distill": "weight of the soft target loss: cross-entropy against the target's own next-token distribution "
               "at each label position (0 = hard labels only)",
    "labels": "'data': learn each row's next tokens; 'target': learn the target's own greedy tokens, only while "
              "the row follows them (for answers that are not the target's greedy text: datagen --answers corpus or "
              "--temperature); 'auto': target iff some --data holds such answers",
    "batch_size": "sequences per micro-batch per GPU",
    "grad_accum": "micro-batches per optimizer step",
    "epochs": "stop after this many passes over the data",
    "time_budget_s": "finish (schedule sized to fit, final checkpoint written) within this many seconds",
    "eval_every": "steps between tau checks on held-out prompts (0: only at the end)",
    "keep_checkpoints": "newest checkpoints kept in <out>/checkpoints (0: keep all)",
    "eval_prompts": "held-out prompts JSONL (default: <data>/heldout.jsonl)",
    "export_dtype": "dtype of the final drafter in <out>/draft",
    "resume": "continue from the newest checkpoint in --out",
    "attention": "drafter attention: 'flex' (FlexAttention, skips the masked tiles; GPU only), 'sdpa' (dense "
                 "mask), 'auto' (flex on a GPU when torch has it)",
}


def register(sub) -> None:
    from ..training.train_config import TrainConfig

    p = sub.add_parser("train", help="train a DFlash drafter on `dflashkit datagen` output",
                       description="Train a drafter with the DFlash block objective. Multi-GPU: "
                                   "torchrun --nproc-per-node N -m dflashkit.cli.main train ...")
    p.add_argument("--config", default=None, help="JSON file of TrainConfig fields (flags override it)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else f.default_factory()
        text = HELP.get(f.name, "")
        if "default" not in text and default is not None:  # 'default: spread evenly) (default: None)' contradicted
            text = f"{text} (default: {default})" if text else f"(default: {default})"
        if isinstance(default, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
        elif f.name == "data":
            p.add_argument(flag, nargs="+", default=None, help=text)
        elif f.name == "target_layer_ids":
            p.add_argument(flag, type=_int_list, default=None, help=text)
        else:
            p.add_argument(flag, type=_type_of(f.name, default), default=None, help=text)
    p.add_argument("--model", dest="target", default=None, help="alias of --target")
    p.set_defaults(func=run)


# settings a resumed run takes from its checkpoint (drafter shape, data, objective, schedule): new values for
# these would be ignored, so resuming with them is refused
RUN_FIELDS = ("target", "data", "num_layers", "block_size", "target_layer_ids", "init", "init_draft", "anchors",
              "gamma", "max_len", "loss_vocab", "distill", "labels", "batch_size", "grad_accum", "lr", "min_lr_ratio",
              "warmup_steps", "weight_decay", "grad_clip", "max_steps", "epochs", "seed")


def run(args) -> int:
    from ..errors import ConfigError
    from ..training.dataset import check_sources
    from ..training.trainer import train
    from .checks import output_dir

    cfg = config_from_args(args).validate()
    check_sources(cfg.data)  # these before the target loads, not after
    if cfg.eval_prompts and not Path(cfg.eval_prompts).expanduser().is_file():
        raise ConfigError(f"--eval-prompts {cfg.eval_prompts}: file not found (a JSONL of prompts, e.g. "
                          "<datagen --out>/heldout.jsonl)")
    output_dir(cfg.out, "--out")
    check_resume(cfg)
    summary = train(cfg)
    print(json.dumps({"train": summary}), flush=True)
    return 0


def config_from_args(args):
    """Defaults, then the --config JSON, then the flags given."""
    from ..training.train_config import TrainConfig

    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if getattr(args, f.name, None) is not None}
    return TrainConfig.from_json(args.config, **values) if args.config else TrainConfig(**values)


def check_resume(cfg) -> None:
    """Resuming keeps the checkpoint's drafter and schedule: refuse other settings rather than drop them."""
    from ..errors import ConfigError
    from ..training.checkpoint import latest_checkpoint, saved_config

    ckpt = latest_checkpoint(cfg.out) if cfg.resume else None
    if ckpt is None:
        return
    old, new = saved_config(ckpt), cfg.to_dict()
    diff = {k: (old[k], new[k]) for k in RUN_FIELDS if k in old and old[k] != new[k]}
    if diff:
        raise ConfigError(f"{cfg.out} holds a run with other settings {diff} (checkpoint, now): pass the same "
                          "flags to resume it, --no-resume to start over, or a new --out")


def _type_of(name: str, default):
    if isinstance(default, int):
        return int
    if isinstance(default, float) or name in ("gamma", "epochs", "time_budget_s"):
        return float
    return str


def _int_list(text: str) -> list[int]:
    try:
        return [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated layer numbers like 1,5,9 (got '{text}')") from None
