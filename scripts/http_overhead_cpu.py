"""Host overhead of the HTTP server vs the engine alone, on CPU.

A tiny random Llama with SmolLM2's tokenizer keeps model time small, so the server's per-step host work
shows. Greedy, one request at a time; the openai client runs in a process of its own. The server runs its
engine on a thread, then in a process of its own (`dflashkit serve`'s default). Not a test: medians of 5 runs.

    python scripts/http_overhead_cpu.py [NEW_TOKENS]
"""

from __future__ import annotations

import json
import multiprocessing
import os
import statistics
import sys
import time

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "tests", "serving")]


def build():
    """The Generator under test (also what the engine process builds for itself)."""
    from tiny_models import tiny_hf
    from transformers import AutoTokenizer

    from dflashkit import Generator
    from dflashkit.models.factory import make_target
    from dflashkit.models.loading import convert_gguf, embedded_gguf

    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(str(convert_gguf(embedded_gguf())))
    return Generator(make_target(tiny_hf("llama", 0, len(tok), torch.float32), tok), None, tok, max_batch=8,
                     max_length=512, speculative=False)


def main() -> None:
    from serving_harness import live_server

    from dflashkit import SamplingParams
    from dflashkit.serving.engine_process import EngineProcess

    new = int(sys.argv[1]) if len(sys.argv) > 1 else 400
    gen = build()
    tok = gen.tokenizer
    prompt = gen.chat_prompt([{"role": "user", "content": "Write a long story about a robot."}])
    params = SamplingParams(max_new_tokens=new, ignore_eos=True)

    def stream_engine() -> int:
        return sum(len(u.token_ids) for u in gen.stream(prompt, params))

    ttfts = []

    def engine_generate() -> int:
        result = gen.generate([prompt], params)[0]
        ttfts.append(result.ttft_s)
        return result.completion_tokens

    out = {"tokens": new, "engine_generate_tok_s": _rate(engine_generate), "engine_stream_tok_s": _rate(stream_engine)}
    out["engine_ttft_ms"] = 1000 * statistics.median(ttfts)
    text = tok.decode(prompt)
    process = EngineProcess(build)
    process.launch()
    for mode, engine in (("thread", gen), ("process", process)):
        with live_server(engine) as (url, _), multiprocessing.get_context("spawn").Pool(1) as client:
            # the client runs in its own process, as a real one does (in-process it would compete for the GIL)
            out[f"{mode}_stream_tok_s"], out[f"{mode}_stream_ttft_ms"] = client.apply(
                _client_rate, (url, text, new, True))
            out[f"{mode}_whole_answer_tok_s"], _ = client.apply(_client_rate, (url, text, new, False))
    base = out["engine_generate_tok_s"]
    for key in [k for k in out if k.endswith("answer_tok_s") or k.endswith("stream_tok_s")]:
        if not key.startswith("engine"):
            out[key.replace("_tok_s", "_overhead_pct")] = round(100 * (1 - out[key] / base), 1)
    print(json.dumps({k: round(v, 1) if isinstance(v, float) else v for k, v in out.items()}))


def _rate(fn) -> float:
    """Median tokens/s of 5 timed calls after one warm-up; `fn` returns the tokens it generated."""
    fn()
    runs = []
    for _ in range(5):
        t0 = time.perf_counter()
        runs.append(fn() / (time.perf_counter() - t0))
    return statistics.median(runs)


def _client_rate(url: str, text: str, new: int, stream: bool) -> tuple[float, float | None]:
    """(tokens/s, median ms from sending the request to the first text chunk; None for whole answers)."""
    from openai import OpenAI

    client = OpenAI(base_url=url + "/v1", api_key="x", max_retries=0)
    ttfts = []

    def http() -> int:
        if not stream:
            return client.completions.create(model="tiny", prompt=text, max_tokens=new,
                                             temperature=0).usage.completion_tokens
        n, t0, first = 0, time.perf_counter(), None
        for chunk in client.completions.create(model="tiny", prompt=text, max_tokens=new, temperature=0,
                                               stream=True, stream_options={"include_usage": True}):
            if first is None and chunk.choices and chunk.choices[0].text:
                first = time.perf_counter() - t0
            n = chunk.usage.completion_tokens if chunk.usage else n
        ttfts.append(first)
        return n

    rate = _rate(http)
    return rate, 1000 * statistics.median(ttfts) if ttfts else None


if __name__ == "__main__":
    main()
