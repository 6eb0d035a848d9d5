"""Forward latency of the generic and fast target paths on one GPU (CUDA-graph replay, random weights).

    python scripts/bench_target_paths.py --shape qwen3-8b [--compile] --out OUT.json
    python scripts/bench_target_paths.py --shape qwen3-8b --compile --fast-only --attention sdpa,matmul
    python scripts/bench_target_paths.py --shape gemma4 --batches 1,8 --out OUT.json

Both paths share one HF model (the fast path re-points its Linears at the fused weights), so the numbers
compare the adapters alone. Also reports how far apart the two paths' logits and features are (relative to
the largest value): in bf16 the fused matmuls round differently, and random weights amplify that.
"""

from __future__ import annotations

import argparse
import json

import torch
from bench_engine import graphed_latency_ms  # scripts/ is on sys.path when run as a script

from dflashkit.models import attention
from dflashkit.models.factory import make_target

SHAPES = {
    "smollm2": ("llama", {"vocab_size": 49152, "hidden_size": 576, "intermediate_size": 1536,
                          "num_hidden_layers": 30, "num_attention_heads": 9, "num_key_value_heads": 3,
                          "tie_word_embeddings": True}),
    "qwen3-8b": ("qwen3", {"vocab_size": 151936, "hidden_size": 4096, "intermediate_size": 12288,
                           "num_hidden_layers": 36, "num_attention_heads": 32, "num_key_value_heads": 8,
                           "head_dim": 128, "tie_word_embeddings": False}),
    # transformers' Gemma4TextConfig defaults (hidden 2304, 30 layers, 5 sliding : 1 full, per-layer inputs,
    # vocab 262k): exercises the Gemma fast path (models/fast_gemma.py)
    "gemma4": ("gemma4_text", {"num_hidden_layers": 30, "vocab_size": 262144}),
}


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max() / a.float().abs().max())


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", choices=sorted(SHAPES), default="qwen3-8b")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 8, 32])
    p.add_argument("--sizes", type=lambda s: [int(x) for x in s.split(",")], default=[1, 16])
    p.add_argument("--kv-len", type=int, default=1024)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    p.add_argument("--attention", default="auto", help="comma list of attention kernels to time: auto,sdpa,matmul")
    p.add_argument("--fast-only", action="store_true", help="time the fast path alone (no generic comparison)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from transformers import AutoConfig, AutoModelForCausalLM

    family, shape = SHAPES[args.shape]
    torch.manual_seed(0)
    with torch.device("cuda"):
        config = AutoConfig.for_model(family, **shape)
        model = AutoModelForCausalLM.from_config(config, dtype=getattr(torch, args.dtype)).eval()
    fast = make_target(model, fast=True)
    generic = None if args.fast_only else make_target(model, fast=False)  # same weights (views of fused tensors)
    targets = [t for t in (generic, fast) if t is not None]
    layer_ids = [1, shape["num_hidden_layers"] // 2, shape["num_hidden_layers"] - 3]
    record = {"shape": args.shape, "dtype": args.dtype, "compile": args.compile, "kv_len": args.kv_len,
              "device": torch.cuda.get_device_name()}
    for target in targets:
        target.allocate(max(args.batches), args.kv_len + 64)
        if args.compile:
            target.compile_layers()
    g = torch.Generator(device="cuda").manual_seed(1)
    for b in args.batches:
        for t in args.sizes:
            tokens = torch.randint(0, shape["vocab_size"], (b, t), device="cuda", generator=g)
            pos = (torch.arange(t, device="cuda") + args.kv_len - t)[None].expand(b, -1).contiguous()
            ids = layer_ids if t > 1 else None
            row = {}
            with torch.inference_mode():
                for kernel in args.attention.split(","):
                    attention.MODE = kernel
                    for target in targets:
                        def step(tg=target, x=tokens, q=pos, li=ids):
                            return tg.forward(x, q, kv_len=args.kv_len, layer_ids=li)
                        name = target.path if kernel == "auto" else f"{target.path}_{kernel}"
                        row[name] = round(graphed_latency_ms(step, iters=30), 3)
                attention.MODE = "auto"
                if generic is None:
                    record[f"b{b}_t{t}"] = row
                    print(json.dumps({f"b{b}_t{t}": row}), flush=True)
                    continue
                (lg, fg), (lf, ff) = (tg.forward(tokens, pos, kv_len=args.kv_len, layer_ids=ids)
                                      for tg in (generic, fast))
            row["speedup"] = round(row["generic"] / row["fast"], 3)
            row["logits_rel_diff"] = _rel(lg, lf)  # max |generic - fast| / max |generic|
            if ids is not None:
                row["features_rel_diff"] = _rel(fg, ff)
            row["argmax_agree"] = float((lg.argmax(-1) == lf.argmax(-1)).float().mean())
            record[f"b{b}_t{t}"] = row
            print(json.dumps({f"b{b}_t{t}": row}), flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(record, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
