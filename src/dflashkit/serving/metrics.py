"""Prometheus text exposition, written by hand: a few counters, gauges and histograms, thread-safe.

The event loop writes them all (from the engine's events and the HTTP responses); the lock keeps `render`
consistent for anyone who records from another thread. No client library: the text format is a handful of lines.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Callable

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
_TOKEN_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28)
_ACCEPT_BUCKETS = tuple(float(i) for i in range(1, 17))


def _labels(pairs: tuple) -> str:
    if not pairs:
        return ""
    inner = ",".join(f'{k}="{str(v).replace(chr(92), chr(92) * 2).replace(chr(34), chr(92) + chr(34))}"'
                     for k, v in pairs)
    return "{" + inner + "}"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


class Counter:
    def __init__(self, name: str, help: str):
        self.name, self.help, self.kind = name, help, "counter"
        self.values: dict[tuple, float] = {}

    def inc(self, amount: float = 1.0, **labels) -> None:
        key = tuple(sorted(labels.items()))
        self.values[key] = self.values.get(key, 0.0) + amount

    def lines(self) -> list[str]:
        return [f"{self.name}{_labels(k)} {_num(v)}" for k, v in sorted(self.values.items())] or [f"{self.name} 0"]


class Gauge:
    """Read at scrape time from a callable, so it can never drift from the engine's state."""

    def __init__(self, name: str, help: str, read: Callable[[], float]):
        self.name, self.help, self.kind, self.read = name, help, "gauge", read

    def lines(self) -> list[str]:
        return [f"{self.name} {_num(self.read())}"]


class Histogram:
    def __init__(self, name: str, help: str, buckets: tuple[float, ...]):
        self.name, self.help, self.kind, self.buckets = name, help, "histogram", buckets
        self.counts = [0] * (len(buckets) + 1)  # last: above every bound (+Inf only)
        self.sum, self.count = 0.0, 0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value
        self.count += 1

    def lines(self) -> list[str]:
        out, total = [], 0
        for bound, n in zip(self.buckets, self.counts[:-1], strict=True):
            total += n
            out.append(f'{self.name}_bucket{{le="{_num(bound)}"}} {total}')
        out.append(f'{self.name}_bucket{{le="+Inf"}} {self.count}')
        out += [f"{self.name}_sum {_num(self.sum)}", f"{self.name}_count {self.count}"]
        return out


class Metrics:
    """The server's metrics. `running` and `queued` are read from the engine loop when scraped."""

    def __init__(self, running: Callable[[], int] = lambda: 0, queued: Callable[[], int] = lambda: 0):
        self._lock = threading.Lock()
        self.requests = Counter("dflashkit_requests_total", "HTTP responses by endpoint and status code")
        self.aborted = Counter("dflashkit_aborted_requests_total", "Sequences aborted before finishing "
                               "(client disconnect, engine failure)")
        self.prompt_tokens = Counter("dflashkit_prompt_tokens_total", "Prompt tokens admitted")
        self.generated_tokens = Counter("dflashkit_generated_tokens_total", "Tokens generated")
        self.acceptance = Histogram("dflashkit_acceptance_length", "Tokens committed per speculative step "
                                    "(accepted drafts + 1)", _ACCEPT_BUCKETS)
        self.ttft = Histogram("dflashkit_time_to_first_token_seconds", "Request arrival to first token",
                              _LATENCY_BUCKETS)
        self.tpot = Histogram("dflashkit_time_per_output_token_seconds", "Mean time per token after the first, "
                              "per request", _TOKEN_BUCKETS)
        self.e2e = Histogram("dflashkit_request_latency_seconds", "Request arrival to last token", _LATENCY_BUCKETS)
        self._all = [self.requests, self.aborted, self.prompt_tokens, self.generated_tokens,
                     Gauge("dflashkit_queue_depth", "Requests waiting for a batch slot", queued),
                     Gauge("dflashkit_running_sequences", "Sequences in the running batch", running),
                     self.acceptance, self.ttft, self.tpot, self.e2e]

    def record(self, fn: Callable[[Metrics], None]) -> None:
        """Apply several updates atomically."""
        with self._lock:
            fn(self)

    def render(self) -> str:
        with self._lock:
            lines = []
            for m in self._all:
                lines += [f"# HELP {m.name} {m.help}", f"# TYPE {m.name} {m.kind}", *m.lines()]
        return "\n".join(lines) + "\n"
