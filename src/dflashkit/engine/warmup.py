"""Start-up warm-up: meet the decode shapes a server's first requests would otherwise meet mid-answer.

A step shape (cache-length bucket x block size) captures its CUDA graph (or compiles, with `--compile`) on
first use, and the adaptive block size trusts a block's cost only after two replays. On an H100 the first 32
requests after a server started ran 23% slower than the next 32 (docs/benchmarks.md). Warm-up runs a few
single-sequence greedy steps of every block size at every cache bucket, then forgets the (meaningless)
acceptance of its random prompts but keeps the measured step costs. Larger batch buckets and sampled
requests still capture on first use.
"""

from __future__ import annotations

import time

import torch

from .generator import _MIN_KV, Generator
from .sampling import SamplingParams


def cache_buckets(capacity: int) -> list[int]:
    """The attention lengths a single sequence can step at: powers of two from _MIN_KV, then the capacity."""
    out, b = [], _MIN_KV
    while b < capacity:
        out.append(b)
        b *= 2
    return out + [capacity]


def warm_up(gen: Generator, steps: int = 5, seed: int = 0) -> dict:
    """Short answers to random prompts at every (block size, cache bucket); returns what it did.

    Drafts of random prompts are almost never accepted, so an answer of `steps` + 1 tokens takes about
    `steps` steps: a graph capture, then replays that time the block."""
    if gen.has_work():
        raise RuntimeError("warm up an idle engine only")
    t0 = time.perf_counter()
    gen.allocate()
    controller = gen.controller
    sizes = [controller.fixed] if controller.fixed is not None else controller.candidates
    sizes = sizes if gen.speculative else [1]
    fixed, rng, runs = controller.fixed, torch.Generator().manual_seed(seed), 0
    vocab = gen.target.vocab_size
    try:
        for size in sizes:
            controller.fixed = size
            previous = 0
            for bucket in cache_buckets(gen.capacity):
                # a prompt just past the previous bucket, an answer that keeps every step inside this one
                new = min(steps + 1, bucket - previous - size - 1)
                prompt_len = min(previous + 1, gen.max_length - new - 1)
                previous = bucket
                if new < 1 or prompt_len < 1:
                    continue
                prompt = torch.randint(0, vocab, (prompt_len,), generator=rng).tolist()
                gen.generate([prompt], SamplingParams(max_new_tokens=new, ignore_eos=True, stop_token_ids=[]))
                runs += 1
    finally:
        controller.fixed = fixed
        controller.forget_acceptance()
    return {"runs": runs, "block_sizes": sizes, "seconds": round(time.perf_counter() - t0, 2)}
