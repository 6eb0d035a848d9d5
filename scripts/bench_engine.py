"""Engine benchmark on one GPU: AR vs DFlash in the same engine, forward latencies, baselines.

    python scripts/bench_engine.py smollm2 --target DIR [--draft DIR] --out results.json
    python scripts/bench_engine.py qwen3-8b-shape --out results.json      # random weights, oracle drafts

Speedups are ratios measured inside one run, after warm-up, with CUDA synchronisation; per-step
numbers are medians. Not a test: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import torch

from dflashkit import Generator, SamplingParams, TargetModel, make_target
from dflashkit.engine.generator import chat_prompt


def sync_time() -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter()


def graphed_latency_ms(fn, iters: int = 50) -> float:
    """Median ms of one replay of `fn` captured as a CUDA graph (after eager warm-up)."""
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    times = []
    for _ in range(iters):
        t0 = sync_time()
        graph.replay()
        times.append(sync_time() - t0)
    return statistics.median(times) * 1e3


def forward_latencies(target: TargetModel, layer_ids, batch: int, sizes=(1, 16)) -> dict:
    target.allocate(max(batch, target.batch_size), max(target.capacity, 2048))
    out = {}
    for size in sizes:
        tokens = torch.randint(0, target.vocab_size, (batch, size), device=target.device)
        pos = (torch.arange(size, device=target.device) + 512)[None].expand(batch, -1).contiguous()
        with torch.inference_mode():
            out[f"forward_{size}tok_b{batch}_ms"] = graphed_latency_ms(
                lambda: target.forward(tokens, pos, kv_len=1024, layer_ids=layer_ids if size > 1 else None))
    return out


def run_engine(gen: Generator, prompts, params, speculative: bool, references=None, repeats: int = 2) -> dict:
    """Best-of-`repeats` wall time for all prompts at the generator's batch size (first run = warm-up)."""
    gen.generate(prompts[: min(len(prompts), gen.max_batch)], params, speculative=speculative,
                 references=references[: min(len(prompts), gen.max_batch)] if references else None)  # warm-up
    best = None
    for _ in range(repeats):
        t0 = sync_time()
        results = gen.generate(prompts, params, speculative=speculative, references=references)
        wall = sync_time() - t0
        if best is None or wall < best[0]:
            best = (wall, results)
    wall, results = best
    tokens = sum(r.completion_tokens for r in results)
    lengths = [a for r in results for a in r.acceptance_lengths]
    steps_per_seq = [r.steps for r in results if r.steps]
    decode = [(r.elapsed_s - r.ttft_s) / max(r.completion_tokens - 1, 1) for r in results]
    return {"wall_s": wall, "tokens": tokens, "tokens_per_s": tokens / wall,
            "tau": statistics.mean(lengths) if lengths else 1.0,
            "ms_per_token_median": statistics.median(decode) * 1e3,
            "ms_per_step_median": statistics.median(
                [(r.elapsed_s - r.ttft_s) * 1e3 / r.steps for r in results if r.steps]) if steps_per_seq else None,
            "results": results}


def strip(record: dict) -> dict:
    return {k: v for k, v in record.items() if k != "results"}


def run_baselines(args, record, tok, prompts, dtype, dev) -> None:
    from transformers import AutoModelForCausalLM

    # transformers generate, the baseline users know (fresh, unwrapped model)
    hf = AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype).to(dev).eval()
    ids = torch.tensor([prompts[0]], device=dev)
    gen_kwargs = dict(max_new_tokens=args.max_new_tokens, do_sample=False, attention_mask=torch.ones_like(ids),
                      pad_token_id=tok.eos_token_id)
    if args.ignore_eos:
        gen_kwargs["min_new_tokens"] = args.max_new_tokens
    hf.generate(ids, **{**gen_kwargs, "max_new_tokens": 8})
    t0 = sync_time()
    out = hf.generate(ids, **gen_kwargs)
    wall = sync_time() - t0
    n = out.shape[1] - ids.shape[1]
    record["hf_generate"] = {"tokens": n, "tokens_per_s": n / wall, "ms_per_token": wall * 1e3 / n}

    # the authors' reference loop with the same drafter weights, batch 1
    try:
        import dflash.model as ref

        if args.draft:
            ref_draft = ref.DFlashDraftModel.from_pretrained(args.draft, dtype=dtype).to(dev).eval()
            ref.dflash_generate(ref_draft, hf, ids, 16, [tok.eos_token_id])
            stats = ref.dflash_generate(ref_draft, hf, ids, args.max_new_tokens,
                                        None if args.ignore_eos else [2], return_stats=True)
            steps = len(stats.acceptance_lengths)
            record["reference_dflash_generate"] = {
                "tokens": stats.num_output_tokens, "tau": statistics.mean(stats.acceptance_lengths),
                "ms_per_token": stats.time_per_output_token * 1e3,
                "ms_per_step": stats.time_per_output_token * stats.num_output_tokens * 1e3 / steps,
                "tokens_per_s": 1.0 / stats.time_per_output_token}
    except Exception as exc:  # the comparison is optional
        record["reference_dflash_generate"] = {"error": repr(exc)}



def bench_smollm2(args) -> dict:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from dflashkit import DFlashDraft
    from dflashkit.models.factory import random_draft

    dev = "cuda"
    tok = AutoTokenizer.from_pretrained(args.target)
    dtype = {"bfloat16": torch.bfloat16, "float32": torch.float32}[args.dtype]
    record = {"target": "SmolLM2-135M-Instruct", "dtype": args.dtype}
    questions = [
        "Write a python function that checks whether a number is prime.",
        "Write a python function to compute the n-th Fibonacci number iteratively.",
        "Explain what a hash table is and how collisions are handled.",
        "Write a short story about a robot learning to paint.",
        "Write a python class implementing a stack with push, pop and peek.",
        "What are the main differences between TCP and UDP?",
        "Write a function in python that merges two sorted lists.",
        "Give me five tips for writing clean code.",
    ]
    prompts = [chat_prompt(tok, [{"role": "user", "content": q}]) for q in questions]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, ignore_eos=args.ignore_eos)

    model = AutoModelForCausalLM.from_pretrained(args.target, dtype=dtype).to(dev).eval()
    target = make_target(model, tok, fast=False if args.generic_target else None)
    record["target_path"] = target.path
    draft = (DFlashDraft.from_pretrained(args.draft, dtype=dtype, device=dev) if args.draft
             else random_draft(target))
    record["draft"] = args.draft or "random"

    if not args.skip_baselines:
        run_baselines(args, record, tok, prompts, dtype, dev)

    for c in args.concurrency:
        gen = Generator(target, draft, tok, max_batch=c, max_length=1024, block_size=args.block_size,
                        compile=args.compile)
        batch = (prompts * ((c + len(prompts) - 1) // len(prompts)))[: max(c, len(prompts) if c == 1 else c)]
        ar = run_engine(gen, batch, params, speculative=False)
        fl = run_engine(gen, batch, params, speculative=True)
        same = sum(a.token_ids == b.token_ids for a, b in zip(ar["results"], fl["results"]))
        record[f"c{c}"] = {"ar": strip(ar), "dflash": strip(fl), "speedup": fl["tokens_per_s"] / ar["tokens_per_s"],
                           "identical_outputs": f"{same}/{len(batch)}",
                           "block_sizes_used": sorted({b for (_, b) in gen.controller.step_time})}
        print(json.dumps({f"c{c}": record[f"c{c}"]}), flush=True)
    record.update(forward_latencies(target, draft.target_layer_ids, 1))
    return record


def bench_qwen3_8b_shape(args) -> dict:
    from transformers import AutoModelForCausalLM, Qwen3Config

    from dflashkit.models.factory import random_draft

    cfg = Qwen3Config(vocab_size=151936, hidden_size=4096, intermediate_size=12288, num_hidden_layers=36,
                      num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=40960,
                      rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, tie_word_embeddings=False)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = AutoModelForCausalLM.from_config(cfg, dtype=torch.bfloat16).eval()
    target = make_target(model, fast=False if args.generic_target else None)
    draft = random_draft(target, num_layers=5, block_size=16)
    if args.draft_vocab:  # the cost of a pruned draft vocabulary of this size (which ids: irrelevant to the cost)
        draft.token_counts = torch.zeros(cfg.vocab_size, dtype=torch.long)
        draft.token_counts[:args.draft_vocab] = 1
    record = {"target": "Qwen3-8B-shaped, random weights", "dtype": "bfloat16", "draft": "5 layers, oracle drafts",
              "target_path": target.path, "draft_vocab": args.draft_vocab or cfg.vocab_size}
    ctx = args.context
    for c in args.concurrency:
        gen = Generator(target, draft, None, max_batch=c, max_length=ctx + args.max_new_tokens + 64, block_size=16,
                        compile=args.compile, draft_vocab=args.draft_vocab or 0)
        g = torch.Generator().manual_seed(c)
        prompts = [torch.randint(0, cfg.vocab_size, (ctx,), generator=g).tolist() for _ in range(c)]
        params = SamplingParams(max_new_tokens=args.max_new_tokens, stop_token_ids=[])
        ar = run_engine(gen, prompts, params, speculative=False, repeats=1)
        entry = {"ar": strip(ar)}
        refs = [r.token_ids for r in ar["results"]]
        for tau in args.tau:
            gen.set_oracle(tau, force=True)
            fl = run_engine(gen, prompts, params, speculative=True, references=refs, repeats=1)
            gen.set_oracle(None)
            name = f"{tau:g}"
            entry[f"dflash_tau{name}"] = strip(fl)
            entry[f"speedup_tau{name}"] = fl["tokens_per_s"] / ar["tokens_per_s"]
            entry[f"decode_speedup_tau{name}"] = ar["ms_per_token_median"] / fl["ms_per_token_median"]
        record[f"c{c}"] = entry
        print(json.dumps({f"c{c}": entry}), flush=True)
        del gen
        torch.cuda.empty_cache()
    record.update(forward_latencies(target, draft.target_layer_ids, 1))
    return record


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("which", choices=["smollm2", "qwen3-8b-shape"])
    p.add_argument("--target", help="HF dir of SmolLM2")
    p.add_argument("--draft", default=None)
    p.add_argument("--max-new-tokens", type=int, default=256)
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--tau", type=lambda s: [float(x) for x in s.split(",")], default=[6, 7],
                   help="oracle acceptance lengths (qwen3-8b-shape); a fraction alternates the nearest whole ones")
    p.add_argument("--context", type=int, default=1200)
    p.add_argument("--block-size", type=int, default=None)
    p.add_argument("--draft-vocab", type=int, default=None, help="qwen3-8b-shape: time a pruned draft vocabulary "
                   "of this many tokens (oracle drafts: acceptance is fixed, only the cost changes)")
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--compile", action="store_true", help="torch.compile the target's decoder layers")
    p.add_argument("--generic-target", action="store_true", help="transformers forward instead of the fused fast path")
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--skip-baselines", action="store_true", help="no transformers/reference runs")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    record = bench_smollm2(args) if args.which == "smollm2" else bench_qwen3_8b_shape(args)
    record["device"] = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    record["torch"] = torch.__version__
    with open(args.out, "w") as f:
        json.dump(record, f, indent=2, default=str)
    print(json.dumps(record, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
