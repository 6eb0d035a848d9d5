"""Random training rows in datagen's shard format, for runs whose answers do not matter: warming the GPU kernels
a real run will compile (train_smollm2.sh does this while the target answers prompts), profiling a step.

    python scripts/synthetic_rows.py OUT_DIR [--rows 1280 --max-len 1152 --vocab 8192 --seed 0]

Lengths spread from a quarter of --max-len to all of it, a third to two thirds of each row is prompt, and token
ids are below --vocab (train with --loss-vocab at most that). No datagen.json: train takes the rows as greedy
answers and skips the tokenizer check.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

from dflashkit.training.shards import Row, shard_path, write_shard


def synthetic_rows(n: int, max_len: int, vocab: int, seed: int = 0) -> list[Row]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        length = rng.randint(max(4, max_len // 4), max_len)
        start = rng.randint(length // 3, 2 * length // 3)
        rows.append(Row([rng.randrange(vocab) for _ in range(length)], start))
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out")
    p.add_argument("--rows", type=int, default=1280)
    p.add_argument("--max-len", type=int, default=1152)
    p.add_argument("--vocab", type=int, default=8192)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_shard(shard_path(out, 0), synthetic_rows(args.rows, args.max_len, args.vocab, args.seed), complete=True)
    print(f"wrote {args.rows} random rows (up to {args.max_len} tokens, ids < {args.vocab}) to {out}")


if __name__ == "__main__":
    main()
