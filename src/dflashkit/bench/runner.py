"""The measurement loop: for each concurrency and mode, warm up untimed, then time the same prompts."""

from __future__ import annotations

import threading
import time

from .backends.base import Backend, warmup_samples
from .errors import BenchError
from .records import RunResult
from .samples import Sample


def parse_concurrency(text: str | int | list) -> list[int]:
    """'1,8,32' -> [1, 8, 32]; every value must be a positive integer."""
    parts = text if isinstance(text, list) else str(text).split(",")
    values = []
    for part in parts:
        try:
            value = int(str(part).strip())
        except ValueError:
            raise BenchError(f"--concurrency takes positive integers like 1 or 1,8,32 (got '{text}')") from None
        if value <= 0:
            raise BenchError(f"--concurrency must be >= 1 (got {value})")
        values.append(value)
    if not values:
        raise BenchError("--concurrency is empty: give e.g. 1 or 1,8,32")
    return list(dict.fromkeys(values))


def run_suite(backend: Backend, samples: list[Sample], concurrencies: list[int], max_new_tokens: int, *,
              temperature: float = 0.0, warmup: int = 1, progress: bool = True, profile: bool = False,
              log=print) -> list[RunResult]:
    """Every mode of the backend at every concurrency, on identical prompts, in a fixed order."""
    if max_new_tokens < 1:
        raise BenchError(f"--max-new-tokens must be >= 1 (got {max_new_tokens})")
    if not samples:
        raise BenchError("no prompts to run")
    backend.setup(concurrencies)
    results = []
    for conc in concurrencies:
        for mode in backend.modes:
            if warmup > 0:
                backend.run(warmup_samples(warmup * conc), conc, max_new_tokens, mode=mode, temperature=temperature)
            run = _timed(backend, samples, conc, max_new_tokens, mode, temperature, progress)
            failed = [r for r in run.records if r.error]
            if len(failed) == len(run.records):
                raise BenchError(f"every request failed ({mode}, concurrency {conc}); first error: {failed[0].error}")
            if failed:
                log(f"warning: {len(failed)} of {len(run.records)} requests failed; first: {failed[0].error}")
            cut = _cut_by_context(run, max_new_tokens)
            if cut:
                log(f"warning: {cut} of {len(run.records)} answers ({mode}, c={conc}) ended at the context before "
                    f"--max-new-tokens {max_new_tokens}: lower it or raise --max-length")
            results.append(run)
        if profile:
            measured = backend.profile(samples[:max(conc, 1)], conc, max_new_tokens, temperature=temperature)
            for run in results:
                if run.concurrency == conc and run.mode == "dflash":
                    run.profile = measured
    return results


def _cut_by_context(run: RunResult, max_new_tokens: int) -> int:
    """Answers that stopped for length short of max_new_tokens: the context ran out (fewer tokens were timed)."""
    return sum(r.finish_reason == "length" and r.completion_tokens < max_new_tokens for r in run.records)


def _timed(backend: Backend, samples: list[Sample], conc: int, max_new_tokens: int, mode: str,
           temperature: float, progress: bool) -> RunResult:
    total = sum(len(s.turns) for s in samples)
    bar = _bar(total, f"{mode} c={conc}") if progress else None
    lock = threading.Lock()

    def done(_record) -> None:
        if bar is not None:
            with lock:
                bar.update(1)

    backend.sync()
    start = time.perf_counter()
    try:
        records = backend.run(samples, conc, max_new_tokens, mode=mode, temperature=temperature, on_done=done)
        backend.sync()
        wall = time.perf_counter() - start
    finally:
        if bar is not None:
            bar.close()
    return RunResult(mode=mode, concurrency=conc, wall_s=wall, records=records)


def _bar(total: int, desc: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="req", leave=False)
