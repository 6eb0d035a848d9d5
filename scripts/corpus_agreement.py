"""How much exact training signal a corpus's answers give a target (`datagen --answers corpus`, `train --labels
target`): the share of answer tokens that are the target's own greedy choice, and how many labels a block keeps
(offset k stays in the loss only while the answer follows the target's greedy chain; a block of the target's own
greedy answer keeps all B-1).

    python scripts/corpus_agreement.py DATA_DIR [--model ID] [--rows 32] [--block-size 16] [--device cpu]
"""

from __future__ import annotations

import argparse
import json

import torch

from dflashkit.models.loading import load_target, resolve_dtype
from dflashkit.training.blocks import greedy_labels, make_blocks
from dflashkit.training.dataset import SequenceData
from dflashkit.training.features import TargetFeatures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("data", nargs="+", help="datagen output directories")
    ap.add_argument("--model", default=None, help="target (default: the embedded SmolLM2-135M-Instruct)")
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--block-size", type=int, default=16)
    ap.add_argument("--max-len", type=int, default=1152)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()

    model, _ = load_target(args.model, resolve_dtype(None, args.device), args.device)
    features = TargetFeatures(model, [0])
    data = SequenceData(args.data, args.max_len)
    t = args.block_size
    agree = answer = 0
    kept = torch.zeros(t)
    blocks_seen = 0
    for i in range(min(args.rows, len(data))):
        tokens, mask = data.items[i]
        tokens, mask = tokens[None].to(args.device), mask[None].to(args.device)
        _, greedy = features.with_greedy(tokens)
        nxt = mask[:, 1:] & mask[:, :-1]  # answer tokens whose previous token is an answer token too
        agree += int(((tokens[:, 1:] == greedy[:, :-1]) & nxt).sum())
        answer += int(nxt.sum())
        anchors = nxt[0].nonzero().flatten()[None]  # every anchor of the row
        lengths = torch.tensor([tokens.shape[1]], device=args.device)
        valid = torch.ones_like(anchors, dtype=torch.bool)
        blocks = make_blocks(tokens, mask, lengths, anchors, valid, t, 0)
        labelled = blocks.label_mask.view(1, -1, t)
        relabelled = greedy_labels(blocks, tokens, greedy).label_mask.view(1, -1, t)
        # only blocks whose data labels reach the end (no truncation by the answer's end) for a fair count
        full = labelled[0, :, 1:].all(-1)
        kept += relabelled[0, full].float().sum(0).cpu()
        blocks_seen += int(full.sum())
    per_offset = (kept / max(blocks_seen, 1))[1:]
    print(json.dumps({"rows": min(args.rows, len(data)), "answer_tokens": answer,
                      "greedy_agreement": round(agree / max(answer, 1), 4), "blocks": blocks_seen,
                      "labels_per_block": round(float(per_offset.sum()), 3), "of": t - 1,
                      "kept_by_offset": [round(float(x), 3) for x in per_offset]}, indent=1))


if __name__ == "__main__":
    main()
