"""The one interface every backend speaks: run samples at a concurrency, return one record per request."""

from __future__ import annotations

from collections.abc import Callable

from ..records import RequestRecord
from ..samples import Sample

OnDone = Callable[[RequestRecord], None]

# warm-up uses prompts outside every dataset, so a server's prefix cache cannot flatter the timed run
_WARMUP = ("Count from one to twenty in words, separated by commas.",
           "Write a short paragraph about why the sky is blue.",
           "List five common fruits and one fact about each.",
           "Explain what a hash table is in three sentences.")


def warmup_samples(n: int) -> list[Sample]:
    return [Sample(f"warmup-{i}", [_WARMUP[i % len(_WARMUP)]]) for i in range(n)]


class Backend:
    """Subclasses set `name` and `modes` and implement `run`; `setup` loads models or checks the server."""

    name = "base"
    modes: tuple[str, ...] = ()

    def setup(self, concurrencies: list[int]) -> None:
        """Prepare for the largest concurrency before any timing starts."""

    def run(self, samples: list[Sample], concurrency: int, max_new_tokens: int, *, mode: str,
            temperature: float = 0.0, on_done: OnDone | None = None) -> list[RequestRecord]:
        raise NotImplementedError

    def sync(self) -> None:
        """Wait for queued device work, so wall-clock timings end where the work ends."""

    def info(self) -> dict:
        """Model ids, device and anything else a reader needs to reproduce the run."""
        return {}

    def profile(self, samples: list[Sample], concurrency: int, max_new_tokens: int, *,
                temperature: float = 0.0) -> dict | None:
        """Per-step time by phase (ms), measured on a separate untimed pass; None when unsupported."""
        return None

    def close(self) -> None:
        pass


def cuda_sync(device) -> None:
    import torch

    if device is not None and torch.device(device).type == "cuda" and torch.cuda.is_available():
        torch.cuda.synchronize(device)


def device_name(device) -> str:
    import platform

    import torch

    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type == "cuda" and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    return f"{dev.type}: {platform.processor() or platform.machine()}"
