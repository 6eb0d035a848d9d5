"""`dflashkit bench`: time a backend on a named dataset or a JSONL of prompts; write JSON, table and plots."""

from __future__ import annotations

import argparse
import math
import sys


class _Defaults(argparse.ArgumentDefaultsHelpFormatter):
    """Appends '(default: X)' only where the help names no default of its own and X says something: '--num-prompts
    ... (default: all) (default: None)' contradicted itself, and flags read '(default: False)'."""

    def _get_help_string(self, action):
        if "default" in (action.help or "") or action.default is None or action.default is False:
            return action.help
        return super()._get_help_string(action)


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark AR vs DFlash (local), transformers (hf) or any OpenAI server",
                       description="Run a benchmark and write DIR/<backend>-<dataset>-<time>.json plus PNG plots.",
                       formatter_class=_Defaults)
    p.add_argument("--backend", choices=("local", "hf", "openai"), default="local",
                   help="local: our engine, AR and DFlash on the same prompts; hf: transformers generate, batch 1; "
                        "openai: any OpenAI-compatible server at --base-url")
    p.add_argument("--dataset", default="mt-bench",
                   help="gsm8k, math500, humaneval, mbpp, mt-bench, or a .jsonl file with 'prompt', 'turns' or "
                        "'messages' per line")
    p.add_argument("--num-prompts", "--max-samples", dest="num_prompts", type=int, default=None,
                   help="first N prompts of the dataset (default: all)")
    p.add_argument("--concurrency", default="1", help="requests in flight (local: batch size); a list like 1,8,32 "
                   "runs each")
    p.add_argument("--max-new-tokens", type=int, default=256, help="most tokens per answer")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--output", default="bench-results", help="directory for the JSON report and plots")
    p.add_argument("--model", default=None, help="target model (local/hf: hub id, dir or .gguf; default the embedded "
                   "SmolLM2) or the served model name (openai; default: the server's first model)")
    p.add_argument("--draft", default=None, help="local: drafter hub id or dir ('random' = untrained)")
    p.add_argument("--block-size", type=int, default=None, help="local: verify block size (default: adaptive)")
    p.add_argument("--device", default=None, help="local/hf: cuda, cpu, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="local/hf: bfloat16, float16, float32 (default: bf16 on GPU)")
    p.add_argument("--max-length", type=int, default=None, help="local: context to allocate per sequence "
                   "(prompt + answer; default: the engine's)")
    p.add_argument("--draft-vocab", type=int, default=None, help="local: draft from the N most frequent tokens "
                   "only (default: as the drafter's token_counts.json suggests; 0 = every token)")
    p.add_argument("--compile", action="store_true", help="local: torch.compile the decoder layers (compiled "
                   "during the warm-up round, so timings exclude it)")
    p.add_argument("--mode", choices=("both", "ar", "dflash"), default="both", help="local: which decoders to time")
    p.add_argument("--base-url", default=None, help="openai: server URL, e.g. http://127.0.0.1:8000/v1")
    p.add_argument("--api-key", default=None, help="openai: bearer token, if the server wants one")
    p.add_argument("--timeout", type=float, default=600.0, help="openai: seconds per request")
    p.add_argument("--warmup", type=int, default=1, help="untimed warm-up rounds (of `concurrency` requests) "
                   "before each timed run")
    p.add_argument("--profile", action="store_true", help="local: add draft/verify/other ms per step, measured on "
                   "an extra untimed pass")
    p.add_argument("--no-plots", action="store_true", help="skip the PNG figures")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..bench.backends import make_backend
    from ..bench.datasets import load_samples
    from ..bench.errors import BenchError
    from ..bench.report import build_report, report_stem, write_report
    from ..bench.runner import parse_concurrency, run_suite
    from ..bench.table import render_report
    from .checks import output_dir

    concurrencies = parse_concurrency(args.concurrency)
    _check(args, BenchError)
    output_dir(args.output, "--output")  # now, not after the whole benchmark has run
    samples, source = load_samples(args.dataset, args.num_prompts)
    modes = ("ar", "dflash") if args.mode == "both" else (args.mode,)
    backend = make_backend(args.backend, model=args.model, draft=args.draft, device=args.device, dtype=args.dtype,
                           block_size=args.block_size, max_length=args.max_length, modes=modes, compile=args.compile,
                           draft_vocab=args.draft_vocab,
                           base_url=args.base_url, api_key=args.api_key, timeout=args.timeout)
    log = lambda text: print(text, file=sys.stderr)  # noqa: E731
    log(f"bench: {len(samples)} prompts from {source}; backend {args.backend}; concurrency {concurrencies}")
    try:
        runs = run_suite(backend, samples, concurrencies, args.max_new_tokens, temperature=args.temperature,
                         warmup=args.warmup, progress=not args.no_progress, profile=args.profile, log=log)
        info = backend.info()
    finally:
        backend.close()
    settings = {k: v for k, v in vars(args).items() if k not in ("func", "api_key", "command")}
    settings.update(concurrency=concurrencies, num_prompts=len(samples), modes=list(backend.modes))
    report = build_report(backend=args.backend, dataset=args.dataset, source=source, settings=settings, info=info,
                          runs=runs)
    stem = report_stem(args.backend, args.dataset, args.output)
    path = write_report(report, args.output, stem)
    print(render_report(report))
    print(f"report: {path}")
    if not args.no_plots:
        for figure in _plots(report, args.output, stem, log):
            print(f"plot:   {figure}")
    return 0


def _check(args, error) -> None:
    if args.max_new_tokens < 1:
        raise error(f"--max-new-tokens must be >= 1 (got {args.max_new_tokens})")
    if not (math.isfinite(args.temperature) and args.temperature >= 0):  # NaN passed '< 0' and went to the server
        raise error(f"--temperature must be a finite number >= 0 (got {args.temperature})")
    if args.block_size is not None and args.block_size < 1:
        raise error(f"--block-size must be >= 1 (got {args.block_size})")
    if args.warmup < 0:
        raise error(f"--warmup must be >= 0 (got {args.warmup})")
    if not (math.isfinite(args.timeout) and args.timeout > 0):  # a negative one was a traceback from the socket
        raise error(f"--timeout must be a number of seconds > 0 (got {args.timeout})")
    if args.backend == "openai" and not args.base_url:
        raise error("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")


def _plots(report: dict, out_dir: str, stem: str, log) -> list:
    try:
        from ..bench.plots import write_plots
    except ImportError as exc:
        log(f"plots skipped ({exc}): pip install matplotlib")
        return []
    try:
        return write_plots(report, out_dir, stem)
    except ImportError as exc:
        log(f"plots skipped ({exc}): pip install matplotlib")
        return []
