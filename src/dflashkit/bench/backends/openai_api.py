"""Any OpenAI-compatible server (ours, vLLM, SGLang): streamed chat completions from N worker threads.

Streaming gives the time to first token; `stream_options.include_usage` gives exact token counts.
Our server adds a `dflash` object (per-step `acceptance_lengths` or a `mean_acceptance_length`) to the
final chunk or to its usage; other servers simply leave those fields empty.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

from ..errors import BenchError
from ..records import RequestRecord
from ..samples import Sample
from .base import Backend, OnDone


def normalize_base_url(url: str) -> str:
    url = url.strip().rstrip("/")
    if not url.startswith(("http://", "https://")):
        raise BenchError(f"--base-url must start with http:// or https:// (got '{url}')")
    return url if url.endswith("/v1") else url + "/v1"


class OpenAIBackend(Backend):
    name = "openai"
    modes = ("openai",)

    def __init__(self, base_url: str, model: str | None = None, api_key: str | None = None, timeout: float = 600.0):
        self.base_url = normalize_base_url(base_url)
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.client = None

    def setup(self, concurrencies: list[int]) -> None:
        import httpx

        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=max(concurrencies) + 4, max_keepalive_connections=max(concurrencies))
        self.client = httpx.Client(base_url=self.base_url, headers=headers, limits=limits,
                                   timeout=httpx.Timeout(self.timeout, connect=10.0))
        self.model = self.model or self._first_model()

    def _first_model(self) -> str:
        """Check the server answers, and take its first model when --model is not given."""
        import httpx

        try:
            response = self.client.get("/models")
        except httpx.HTTPError as exc:
            raise BenchError(f"cannot reach an OpenAI-compatible server at {self.base_url} ({type(exc).__name__}: "
                             f"{exc}); start one (e.g. `dflashkit serve`) or fix --base-url") from exc
        if response.status_code in (401, 403):
            raise BenchError(f"{self.base_url} refused the request ({response.status_code}): pass --api-key")
        try:
            models = [m["id"] for m in response.json()["data"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BenchError(f"{self.base_url}/models gave no model list ({response.status_code}); "
                             "pass --model explicitly") from exc
        if not models:
            raise BenchError(f"{self.base_url} serves no models; pass --model")
        return models[0]

    def run(self, samples: list[Sample], concurrency: int, max_new_tokens: int, *, mode: str = "openai",
            temperature: float = 0.0, on_done: OnDone | None = None) -> list[RequestRecord]:
        def converse(sample: Sample) -> list[RequestRecord]:
            answers: list[str] = []
            records = []
            for turn in range(len(sample.turns)):
                record = self._request(sample, turn, answers, max_new_tokens, temperature)
                records.append(record)
                if on_done is not None:
                    on_done(record)
                if record.error:
                    break  # the next turn needs this answer
                answers.append(record.text)
            return records

        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="bench") as pool:
            return [r for records in pool.map(converse, samples) for r in records]

    def _request(self, sample: Sample, turn: int, answers: list[str], max_new_tokens: int,
                 temperature: float) -> RequestRecord:
        body = {"model": self.model, "messages": sample.messages(answers), "max_tokens": max_new_tokens,
                "temperature": temperature, "stream": True, "stream_options": {"include_usage": True}}
        stream = _Stream()
        start = time.perf_counter()
        try:
            with self.client.stream("POST", "/chat/completions", json=body) as response:
                if response.status_code != 200:
                    response.read()
                    raise BenchError(f"HTTP {response.status_code}: {response.text[:300]}")
                for line in response.iter_lines():
                    if stream.feed(line, lambda: time.perf_counter() - start):
                        break
        except Exception as exc:  # a failed request is recorded, not fatal: the report counts errors
            return RequestRecord(sample.id, turn, 0, 0, time.perf_counter() - start, None,
                                 error=f"{type(exc).__name__}: {exc}")
        return stream.record(sample.id, turn, time.perf_counter() - start)

    def info(self) -> dict:
        return {"model": self.model, "draft": None, "base_url": self.base_url, "device": "remote",
                "device_name": "remote server"}

    def close(self) -> None:
        if self.client is not None:
            self.client.close()


class _Stream:
    """Accumulates one SSE chat-completion stream: text, first-token time, usage, DFlash statistics."""

    def __init__(self):
        self.text, self.chunks, self.ttft = "", 0, None
        self.usage: dict = {}
        self.dflash: dict = {}
        self.finish_reason = None

    def feed(self, line: str, elapsed) -> bool:
        """Take one SSE line; True at the end of the stream."""
        if not line.startswith("data:"):
            return False
        payload = line[5:].strip()
        if payload == "[DONE]":
            return True
        chunk = json.loads(payload)
        if chunk.get("error"):
            raise BenchError(f"server error in stream: {chunk['error']}")
        for choice in chunk.get("choices") or ():
            delta = choice.get("delta") or {}
            piece = delta.get("content") or ""
            thought = delta.get("reasoning_content") or delta.get("reasoning") or ""
            if piece or thought:
                self.ttft = self.ttft if self.ttft is not None else elapsed()
                self.chunks += 1
                self.text += piece
            self.finish_reason = choice.get("finish_reason") or self.finish_reason
        usage = chunk.get("usage") or {}
        self.usage.update(usage)
        self.dflash.update(chunk.get("dflash") or usage.get("dflash") or {})
        return False

    def record(self, sample_id: str, turn: int, latency: float) -> RequestRecord:
        lengths = self.dflash.get("acceptance_lengths")
        mean = self.dflash.get("mean_acceptance_length", self.dflash.get("acceptance_length"))
        if not lengths and (not mean or self.dflash.get("steps") == 0):
            mean = None  # decoded without the drafter: no acceptance to report
        return RequestRecord(
            sample_id=sample_id, turn=turn, prompt_tokens=int(self.usage.get("prompt_tokens", 0)),
            completion_tokens=int(self.usage.get("completion_tokens", self.chunks)), latency_s=latency,
            ttft_s=self.ttft, acceptance_lengths=[int(a) for a in lengths] if lengths else None,
            mean_acceptance_length=float(mean) if mean is not None else None,
            finish_reason=self.finish_reason, text=self.text)
