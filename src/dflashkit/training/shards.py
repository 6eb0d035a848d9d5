"""Generated data on disk: one safetensors file per shard of prompts, written atomically.

A shard holds its sequences flat (tokens int32, loss_mask uint8 = 1 on response tokens) with row
offsets. Its metadata says whether every prompt of the shard was answered: resume skips complete
shards and redoes the rest (a time-boxed run writes what it finished as an incomplete shard).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import torch

PATTERN = "shard-{:05d}.safetensors"


@dataclass
class Row:
    tokens: list[int]  # prompt + response
    response_start: int  # first response token; loss on tokens[response_start:]


def shard_path(directory: str | Path, index: int) -> Path:
    return Path(directory) / PATTERN.format(index)


def write_shard(path: Path, rows: list[Row], complete: bool, meta: dict | None = None) -> None:
    from safetensors.torch import save_file

    tokens = [t for r in rows for t in r.tokens]
    mask = [int(i >= r.response_start) for r in rows for i in range(len(r.tokens))]
    offsets = [0]
    for r in rows:
        offsets.append(offsets[-1] + len(r.tokens))
    tensors = {"tokens": torch.tensor(tokens, dtype=torch.int32),
               "loss_mask": torch.tensor(mask, dtype=torch.uint8),
               "offsets": torch.tensor(offsets, dtype=torch.int64)}
    info = {"complete": json.dumps(complete), "rows": str(len(rows)), "meta": json.dumps(meta or {})}
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    save_file(tensors, str(tmp), metadata=info)
    tmp.replace(path)


def shard_is_complete(path: Path) -> bool:
    if not path.is_file():
        return False
    from safetensors import safe_open

    try:
        with safe_open(str(path), "pt") as f:
            return json.loads((f.metadata() or {}).get("complete", "false"))
    except Exception:  # a torn or foreign file: regenerate it
        return False


def read_shard(path: Path) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """-> [(tokens int64 [n], loss_mask bool [n])] per sequence."""
    from safetensors.torch import load_file

    from ..errors import ConfigError

    try:
        data = load_file(str(path))
        tok, mask, off = data["tokens"].long(), data["loss_mask"].bool(), data["offsets"].tolist()
    except Exception as exc:  # not safetensors, torn, or another safetensors file (no tokens/offsets)
        raise ConfigError(f"{path} is not a readable `dflashkit datagen` shard ({type(exc).__name__}: "
                          f"{str(exc)[:120]})") from exc
    return [(tok[a:b], mask[a:b]) for a, b in zip(off[:-1], off[1:], strict=True)]


def list_shards(directory: str | Path) -> list[Path]:
    return sorted(Path(directory).glob("shard-*.safetensors"))


def tokenizer_fingerprint(tokenizer) -> str | None:
    """A short hash of the vocabulary (token -> id): datagen records it, train checks its target has the same.
    None for a tokenizer without `get_vocab` (nothing to compare)."""
    get_vocab = getattr(tokenizer, "get_vocab", None)
    if get_vocab is None:
        return None
    vocab = sorted((str(k), int(v)) for k, v in get_vocab().items())
    return hashlib.sha256(json.dumps(vocab).encode()).hexdigest()[:16]
