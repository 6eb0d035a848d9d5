"""`dflashkit generate`: one answer, streamed, then a stats line with the mean acceptance length."""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter


def add_model_args(p: argparse.ArgumentParser) -> None:
    """Options shared by every command that loads a target and a drafter."""
    p.add_argument("--model", default=None,
                   help="target: hub id, local dir or .gguf (default: embedded SmolLM2-135M-Instruct)")
    p.add_argument("--draft", default=None, help="drafter: hub id or local dir; 'random' for an untrained one "
                   "(default: the shipped drafter of the default model)")
    p.add_argument("--device", default=None, help="cuda, cpu, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, help="bfloat16, float16, float32 (default: bf16 on GPU, fp32 on CPU)")
    p.add_argument("--block-size", type=int, default=None, help="verify block size (<= the drafter's)")
    p.add_argument("--max-length", type=int, default=None, help="context length to allocate (prompt + answer)")
    p.add_argument("--generic-target", action="store_true", help="run the target through its transformers forward "
                   "even when the fused Llama/Qwen fast path could (for comparison or debugging)")
    p.add_argument("--draft-vocab", type=int, default=None, help="draft from the N most frequent tokens only "
                   "(a cheaper draft LM head, same output; default: as the drafter's token_counts.json suggests, "
                   "else every token; 0 = every token)")
    p.add_argument("--compile", action="store_true", help="torch.compile the decoder layers: faster GPU decoding "
                   "after a compilation warm-up (tens of seconds); worth it for long runs and servers")


def register(sub) -> None:
    p = sub.add_parser("generate", help="generate one answer with DFlash speculative decoding",
                       description="Generate an answer and print acceptance statistics.")
    p.add_argument("prompt", help="the user message ('-' reads stdin)")
    add_model_args(p)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None, help="reproducible sampling (fixes the block size, "
                   "at the drafter's unless --block-size)")
    p.add_argument("--stop", action="append", default=None, help="stop string (repeatable)")
    p.add_argument("--system", default=None, help="system message")
    p.add_argument("--no-chat", action="store_true", help="raw prompt, no chat template")
    p.add_argument("--no-stream", action="store_true", help="print the answer at the end only")
    p.add_argument("--autoregressive", action="store_true", help="plain decoding (no drafter), for comparison")
    p.add_argument("--json", action="store_true", help="print the stats line as JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..api import adaptive_for, load
    from ..engine.sampling import SamplingParams
    from ..errors import RequestError
    from .checks import fits_context, max_length_fits

    prompt = sys.stdin.read() if args.prompt == "-" else args.prompt
    if not prompt.strip():
        raise RequestError("empty prompt")
    if args.no_chat and args.system:  # a raw prompt has no place for it: it was dropped without a word
        raise RequestError("--system needs the chat template: drop --no-chat, or write the system text into the prompt")
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
                            top_k=args.top_k, seed=args.seed, stop=args.stop)
    gen = load(args.model, args.draft, device=args.device, dtype=args.dtype, block_size=args.block_size,
               max_batch=1, max_length=args.max_length, speculative=not args.autoregressive,
               fast_target=False if args.generic_target else None, compile=args.compile,
               draft_vocab=args.draft_vocab, adaptive_block_size=adaptive_for(params))
    max_length_fits(args.max_length, gen.target.max_positions)
    source = getattr(gen, "draft_source", None) or ""
    if source.startswith("random"):
        print(f"note: the drafter is {source}", file=sys.stderr)
    if args.no_chat:
        ids = gen.tokenizer.encode(prompt)
    else:
        messages = ([{"role": "system", "content": args.system}] if args.system else [])
        ids = gen.chat_prompt(messages + [{"role": "user", "content": prompt}])
    fits_context(len(ids), args.max_new_tokens, gen.max_length, gen.target.max_positions)

    def show(update) -> None:
        if not args.no_stream and update.text:
            sys.stdout.write(update.text)
            sys.stdout.flush()

    result = gen.generate([ids], params, on_update=show)[0]
    if args.no_stream:
        sys.stdout.write(result.text)
    sys.stdout.write("\n")
    # block size 1 drafts nothing: the engine decodes plainly, and the stats line says so
    print(stats_line(result, as_json=args.json, mode="dflash" if gen.speculative else "autoregressive"))
    return 0


def stats_line(result, as_json: bool = False, mode: str = "dflash") -> str:
    hist = dict(sorted(Counter(result.acceptance_lengths).items()))
    decode_s = max(result.elapsed_s - result.ttft_s, 1e-9)
    stats = {
        "mode": mode,
        "acceptance_length": round(result.mean_acceptance_length, 3),
        "acceptance_histogram": hist,
        "steps": result.steps,
        "prompt_tokens": result.prompt_tokens,
        "completion_tokens": result.completion_tokens,
        "tokens_per_s": round(result.completion_tokens / result.elapsed_s, 2) if result.elapsed_s else 0.0,
        "decode_tokens_per_s": round(max(result.completion_tokens - 1, 0) / decode_s, 2),
        "ttft_s": round(result.ttft_s, 4),
        "finish_reason": result.finish_reason,
    }
    if as_json:
        return json.dumps(stats)
    hist_text = " ".join(f"{k}:{v}" for k, v in hist.items()) or "-"
    return (f"[{mode}] acceptance length {stats['acceptance_length']:.2f} (histogram {hist_text}) | "
            f"{stats['completion_tokens']} tokens in {result.elapsed_s:.2f} s = {stats['tokens_per_s']} tok/s | "
            f"TTFT {stats['ttft_s'] * 1000:.0f} ms | finish: {stats['finish_reason']}")
