"""`dflashkit eval`: acceptance length (tau: mean + histogram) of a drafter on prompt sets; no timing."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from .generate import add_model_args


def register(sub) -> None:
    p = sub.add_parser("eval", help="acceptance length of a drafter on prompt sets (greedy, fixed block size)",
                       description="Measure tau (tokens committed per target forward) with the engine itself.")
    add_model_args(p)
    p.add_argument("--dataset", action="append", default=None,
                   help="humaneval, mt-bench, gsm8k ... (bench datasets) or a .jsonl; repeatable "
                        "(default: humaneval and mt-bench)")
    p.add_argument("--num-prompts", type=int, default=None, help="first N prompts of each dataset")
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--all-turns", action="store_true", help="ask every turn (MT-Bench) after the model's own answers")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--out", default=None, help="write the JSON report here")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import load
    from ..engine.generator import Generator
    from ..models.loading import DEFAULT_TARGET
    from ..training.evaluate import acceptance
    from .checks import max_length_fits, output_file

    _check(args)
    if args.out:
        output_file(args.out, "--out")
    loaded = load(args.model, args.draft, device=args.device, dtype=args.dtype, max_batch=1,
                  fast_target=False if args.generic_target else None, draft_vocab=args.draft_vocab)
    if loaded.draft is None:
        from ..errors import ConfigError

        raise ConfigError("eval needs a drafter: pass --draft DIR")
    max_length_fits(args.max_length, loaded.target.max_positions)
    block = args.block_size if args.block_size is not None else loaded.draft.block_size
    # the resolved names: with the defaults the report said draft "None", model null
    report = {"draft": loaded.draft_source, "model": args.model or DEFAULT_TARGET, "block_size": block,
              "max_new_tokens": args.max_new_tokens, "datasets": {}}
    for name in args.dataset or ["humaneval", "mt-bench"]:
        samples = load_prompts(name, args.num_prompts)
        longest = max(len(loaded.chat_prompt([{"role": "user", "content": t}])) for turns in samples for t in turns[:1])
        max_length = args.max_length or min(4096, (longest + args.max_new_tokens) * (2 if args.all_turns else 1) + 64)
        gen = Generator(loaded.target, loaded.draft, loaded.tokenizer, block_size=block,
                        max_batch=min(args.batch_size, len(samples)), max_length=max_length,
                        draft_vocab=args.draft_vocab)
        turns = max(len(s) for s in samples) if args.all_turns else 1
        answers: list[list[str]] = [[] for _ in samples]
        per_turn = []
        for k in range(turns):
            rows = [i for i, s in enumerate(samples) if len(s) > k]
            prompts = [gen.chat_prompt(_messages(samples[i], answers[i], k)) for i in rows]
            prompts = _fit(prompts, gen.max_length, args.max_new_tokens, f"{name} turn {k + 1}")
            result = acceptance(gen, prompts, args.max_new_tokens, texts=True)
            for i, text in zip(rows, result.pop("texts"), strict=True):
                answers[i].append(text)
            per_turn.append(result)
        report["datasets"][name] = _merge(per_turn)
        print(json.dumps({name: report["datasets"][name]}), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1) + "\n")
    return 0


def _check(args) -> None:
    """Bad sizes fail before the models load (batch size 0 would leave every prompt waiting: a hang)."""
    from .checks import at_least

    at_least(args.batch_size, 1, "--batch-size")
    at_least(args.max_new_tokens, 1, "--max-new-tokens")
    at_least(args.num_prompts, 1, "--num-prompts")
    at_least(args.max_length, 2, "--max-length")
    at_least(args.block_size, 2, "--block-size")  # block 1 drafts nothing: there is no acceptance to measure


def _fit(prompts: list[list[int]], context: int, max_new_tokens: int, label: str) -> list[list[int]]:
    """Keep each prompt's last tokens so prompt + answer fit the context (later turns grow); say how many."""
    room = context - max_new_tokens
    if room < 1:
        from ..errors import ConfigError

        raise ConfigError(f"--max-new-tokens {max_new_tokens} leaves no room for a prompt in the context of "
                          f"{context} tokens: lower --max-new-tokens or raise --max-length")
    cut = sum(len(p) > room for p in prompts)
    if cut:
        print(f"eval: {label}: {cut} prompt(s) cut to their last {room} tokens to fit the context of {context}",
              file=sys.stderr)
    return [p[-room:] for p in prompts]


def load_prompts(name: str, limit: int | None) -> list[list[str]]:
    """User turns per sample: bench datasets when that module is present, else a JSONL/ShareGPT file."""
    try:
        from ..bench.datasets import load_samples
    except ImportError:
        load_samples = None
    if load_samples is not None:
        samples, source = load_samples(name, limit)
        print(f"eval: {len(samples)} prompts from {source}", file=sys.stderr)
        return [list(s.turns) for s in samples]
    from ..training.prompts import load_conversations

    return load_conversations(name, max_turns=8, limit=limit, seed=None)


def _messages(turns: list[str], answers: list[str], k: int) -> list[dict]:
    msgs = []
    for q, a in zip(turns[:k], answers, strict=False):
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return msgs + [{"role": "user", "content": turns[k]}]


def _merge(parts: list[dict]) -> dict:
    hist: dict[int, int] = {}
    for part in parts:
        for k, v in part["histogram"].items():
            hist[k] = hist.get(k, 0) + v
    steps = sum(hist.values())
    tau = sum(k * v for k, v in hist.items()) / max(1, steps)
    return {"tau": round(tau, 4), "histogram": dict(sorted(hist.items())),
            "steps": steps, "prompts": parts[0]["prompts"] if parts else 0,
            "tokens": sum(p["tokens"] for p in parts), "turns": len(parts)}
