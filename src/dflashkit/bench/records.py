"""What a benchmark measures: one record per request (one turn of one sample), one result per run."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field


@dataclass
class RequestRecord:
    sample_id: str
    turn: int
    prompt_tokens: int
    completion_tokens: int
    latency_s: float  # request sent (or queued) -> last token
    ttft_s: float | None  # request sent -> first token; None when the backend cannot tell
    acceptance_lengths: list[int] | None = None  # DFlash backends: tokens committed per verify step
    mean_acceptance_length: float | None = None  # when a server reports only the mean
    finish_reason: str | None = None
    text: str = ""
    error: str | None = None

    @property
    def tau(self) -> float | None:
        """Mean acceptance length of this request, from the per-step list when there is one."""
        if self.acceptance_lengths:
            return sum(self.acceptance_lengths) / len(self.acceptance_lengths)
        return self.mean_acceptance_length

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RunResult:
    """All requests of one mode (ar, dflash, hf, openai) at one concurrency, and the wall time they took."""

    mode: str
    concurrency: int
    wall_s: float
    records: list[RequestRecord]
    profile: dict | None = None  # per-step ms by phase, when measured
    extra: dict = field(default_factory=dict)
