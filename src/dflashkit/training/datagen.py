"""Datagen: the target answers every training prompt itself, so the drafter learns the target's own text.

Requests stream through one engine (plain autoregressive mode, continuous batching), so the batch stays
full across shard boundaries. A shard is written when all its prompts are answered; already complete
shards are skipped, which makes a killed run resumable. Turn k of a conversation is asked after the
target's own answers to turns < k, and each answered turn becomes one training row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine.generator import Generator
from ..engine.sampling import SamplingParams
from .shards import Row, shard_is_complete, shard_path, write_shard

Encode = Callable[[list[dict]], list[int]]  # chat messages -> prompt token ids (the chat template)


@dataclass
class _Job:
    shard: int
    conv: int
    turn: int
    prompt: list[int] = field(default_factory=list)


@dataclass
class _ShardState:
    pending: int  # conversations not finished yet
    rows: list[tuple[int, int, Row]] = field(default_factory=list)  # (conv, turn, row), sorted on write


def run_datagen(gen: Generator, conversations: list[list[str]], out_dir, encode: Encode,
                params: SamplingParams, shard_size: int = 512, max_prompt_tokens: int = 1024,
                time_budget_s: float | None = None, progress: bool = True, meta: dict | None = None) -> dict:
    """Answer `conversations` (lists of user turns) into shards under `out_dir`; returns a summary."""
    start = time.time()
    n_shards = math.ceil(len(conversations) / shard_size)
    todo = [s for s in range(n_shards) if not shard_is_complete(shard_path(out_dir, s))]
    shards = {s: _ShardState(pending=len(conversations[s * shard_size:(s + 1) * shard_size])) for s in todo}
    answers: dict[int, list[str]] = {}
    queue = [_Job(s, c, 0) for s in todo for c in range(s * shard_size, min((s + 1) * shard_size, len(conversations)))]
    queue.reverse()  # pop() from the end = prompt order
    running: dict[int, _Job] = {}
    bar = progress_bar(progress, len(conversations), len(conversations) - sum(st.pending for st in shards.values()))
    stats = {"rows": 0, "response_tokens": 0, "skipped_long": 0, "written": 0, "timed_out": False}
    timing0 = dict(gen.timing)
    gen.admit_min = max(1, gen.max_batch // 8)  # refill in groups: one eager prefill per many finished answers
    over = lambda: time_budget_s is not None and time.time() - start > time_budget_s  # noqa: E731

    def finish_conv(job: _Job) -> None:
        state = shards[job.shard]
        state.pending -= 1
        bar.update(1)
        if state.pending == 0:
            _write(out_dir, job.shard, state, True, meta)
            stats["written"] += 1

    while (queue or running) and not over():
        while queue and len(gen.waiting) < gen.max_batch:  # keep the engine fed, never flooded
            job = queue.pop()
            msgs = _messages(conversations[job.conv], answers.get(job.conv, []), job.turn)
            job.prompt = encode(msgs)
            if len(job.prompt) > max_prompt_tokens or len(job.prompt) >= gen.max_length - 8:
                stats["skipped_long"] += 1
                finish_conv(job)  # later turns would be longer still
                continue
            p = params if params.greedy or params.seed is None else _reseed(params, job)
            running[gen.add_request(job.prompt, p, stream_text=False)] = job
        for update in gen.step():
            if not update.finished:
                continue
            job = running.pop(update.seq_id)
            result = gen.pop_result(update.seq_id)
            if len(result.token_ids) >= 2:
                shards[job.shard].rows.append((job.conv, job.turn, Row(job.prompt + result.token_ids, len(job.prompt))))
                stats["rows"] += 1
                stats["response_tokens"] += len(result.token_ids)
            answers.setdefault(job.conv, []).append(result.text)
            if job.turn + 1 < len(conversations[job.conv]) and len(result.token_ids) >= 2:
                queue.append(_Job(job.shard, job.conv, job.turn + 1))
            else:
                answers.pop(job.conv, None)
                finish_conv(job)
    if queue or running:  # out of time: keep what is done, mark those shards incomplete
        stats["timed_out"] = True
        for seq_id in list(running):
            gen.abort(seq_id)
            gen.pop_result(seq_id)
        for s, state in shards.items():
            if state.pending and state.rows:
                _write(out_dir, s, state, False, meta)
    bar.close()
    elapsed = time.time() - start
    stats["elapsed_s"] = round(elapsed, 1)
    stats.update(_throughput(gen.timing, timing0, stats, elapsed))
    stats["shards"] = n_shards
    return stats


def _throughput(timing: dict, before: dict, stats: dict, elapsed: float) -> dict:
    """Where datagen's time went (prefill, decode steps, the rest is host work), to size its batch.
    `elapsed` unrounded: a run under 0.05 s would otherwise divide by zero seconds."""
    d = {k: timing[k] - before[k] for k in timing}
    steps = max(1, d["steps"])
    return {"prefill_s": round(d["admit_s"], 1), "decode_s": round(d["decode_s"], 1), "decode_steps": d["steps"],
            "mean_rows": round(d["rows"] / steps, 1), "ms_per_step": round(1000 * d["decode_s"] / steps, 2),
            "answer_tok_per_s": round(stats["response_tokens"] / max(elapsed, 1e-9))}


def _messages(turns: list[str], answers: list[str], turn: int) -> list[dict]:
    msgs = []
    for question, answer in zip(turns[:turn], answers, strict=False):
        msgs += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return msgs + [{"role": "user", "content": turns[turn]}]


def _reseed(params: SamplingParams, job: _Job) -> SamplingParams:
    """Sampling: a per-(prompt, turn) seed, so a resumed shard draws the same answers."""
    from dataclasses import replace

    return replace(params, seed=(params.seed * 1_000_003 + job.conv) * 1_000_003 + job.turn)  # distinct per turn


def _write(out_dir, shard: int, state: _ShardState, complete: bool, meta: dict | None) -> None:
    rows = [row for _, _, row in sorted(state.rows, key=lambda r: (r[0], r[1]))]
    write_shard(shard_path(out_dir, shard), rows, complete, meta)


def progress_bar(enabled: bool, total: int, initial: int, desc: str = "datagen", unit: str = "prompt"):
    """A tqdm bar, or one that shows nothing (`--no-progress`); datagen and corpus rows share it."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=min(initial, total), desc=desc, unit=unit, smoothing=0.05, disable=not enabled)
