"""Numbers from records: throughput over wall time, latency percentiles, acceptance length, speedup."""

from __future__ import annotations

import statistics
from collections import Counter

from .records import RunResult


def percentile(values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default); None for no values."""
    if not values:
        return None
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100.0
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summarize(run: RunResult) -> dict:
    ok = [r for r in run.records if not r.error]
    completion = sum(r.completion_tokens for r in ok)
    latencies = [r.latency_s for r in ok]
    ttfts = [r.ttft_s for r in ok if r.ttft_s is not None]
    per_request = [r.completion_tokens / r.latency_s for r in ok if r.latency_s > 0]
    lengths = [a for r in ok for a in (r.acceptance_lengths or ())]
    means = [r.tau for r in ok if r.tau is not None]
    # tau: committed tokens per verify step over all steps; servers that only report means get their mean
    tau = sum(lengths) / len(lengths) if lengths else (sum(means) / len(means) if means else None)
    return {
        "mode": run.mode, "concurrency": run.concurrency, "requests": len(run.records),
        "errors": len(run.records) - len(ok), "wall_s": run.wall_s,
        "prompt_tokens": sum(r.prompt_tokens for r in ok), "completion_tokens": completion,
        "tokens_per_s": completion / run.wall_s if run.wall_s > 0 else 0.0,
        "request_tokens_per_s_p50": percentile(per_request, 50),
        "latency_s_p50": percentile(latencies, 50), "latency_s_p90": percentile(latencies, 90),
        "ttft_s_p50": percentile(ttfts, 50), "ttft_s_p90": percentile(ttfts, 90),
        "acceptance_length": tau,
        "acceptance_histogram": {str(k): v for k, v in sorted(Counter(lengths).items())},
        "profile": run.profile,
    }


def compare_modes(runs: list[RunResult], summaries: list[dict]) -> dict[str, dict]:
    """Per concurrency with both `ar` and `dflash`: throughput speedup and the share of identical outputs."""
    by_key = {(r.mode, r.concurrency): (r, s) for r, s in zip(runs, summaries, strict=True)}
    out = {}
    for (mode, conc), (dflash, dflash_sum) in by_key.items():
        if mode != "dflash" or ("ar", conc) not in by_key:
            continue
        ar, ar_sum = by_key[("ar", conc)]
        pairs = _same_prompt_pairs(ar.records, dflash.records)
        out[str(conc)] = {
            "speedup": dflash_sum["tokens_per_s"] / ar_sum["tokens_per_s"] if ar_sum["tokens_per_s"] else None,
            "latency_speedup": _ratio(ar_sum["latency_s_p50"], dflash_sum["latency_s_p50"]),
            # greedy DFlash is lossless: outputs should match AR (low precision can flip near-ties)
            "identical_outputs": sum(a.text == b.text for a, b in pairs) / len(pairs) if pairs else None,
            "compared_outputs": len(pairs),
            "differing_agree_chars_p50": _median_or_none([_common_prefix(a.text, b.text) for a, b in pairs
                                                          if a.text != b.text]),
        }
    return out


def _same_prompt_pairs(ar: list, dflash: list) -> list:
    """(AR, DFlash) answers to the same prompt: a later turn follows the model's own earlier answers, so once an
    earlier turn of a sample differs, the later turns answer different conversations and are not compared."""
    by_key = {(r.sample_id, r.turn): r for r in dflash}
    parted, pairs = set(), []
    for a in sorted(ar, key=lambda r: (r.sample_id, r.turn)):
        b = by_key.get((a.sample_id, a.turn))
        if b is None or a.error or b.error or a.sample_id in parted:
            parted.add(a.sample_id)
            continue
        pairs.append((a, b))
        if a.text != b.text:
            parted.add(a.sample_id)
    return pairs


def _median_or_none(values: list[int]) -> float | None:
    return float(statistics.median(values)) if values else None


def _common_prefix(a: str, b: str) -> int:
    """Characters two answers share before they part: a rounding flip at a near-tie parts them late and once,
    a broken verifier from the first tokens on."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None
