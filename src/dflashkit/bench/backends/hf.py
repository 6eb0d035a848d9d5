"""The baseline users already know: transformers `model.generate`, greedy, one request at a time.

The model is loaded fresh and never wrapped by our engine (wrapping changes its attention
implementation), and prompts use the same chat template as the local backend.
"""

from __future__ import annotations

import time

from ..errors import BenchError
from ..records import RequestRecord
from ..samples import Sample
from .base import Backend, OnDone, cuda_sync, device_name


class HFBackend(Backend):
    name = "hf"
    modes = ("hf",)

    def __init__(self, model: str | None = None, device: str | None = None, dtype: str | None = None,
                 hf_model=None, tokenizer=None):
        self.model_id, self.device, self.dtype = model, device, dtype
        self.model, self.tokenizer = hf_model, tokenizer  # tests may pass their own

    def setup(self, concurrencies: list[int]) -> None:
        if any(c != 1 for c in concurrencies):
            raise BenchError(f"the hf backend runs one request at a time (batch 1); got --concurrency "
                             f"{','.join(map(str, concurrencies))}. Use --concurrency 1, or --backend local/openai")
        if self.model is None:
            from ...api import default_device
            from ...models.loading import load_target

            self.device = self.device or default_device()
            self.model, self.tokenizer = load_target(self.model_id, self.dtype, self.device)
        self.device = str(self.model.device)

    def run(self, samples: list[Sample], concurrency: int, max_new_tokens: int, *, mode: str = "hf",
            temperature: float = 0.0, on_done: OnDone | None = None) -> list[RequestRecord]:
        records = []
        for sample in samples:
            answers: list[str] = []
            for turn in range(len(sample.turns)):
                record = self._one(sample, turn, answers, max_new_tokens, temperature)
                answers.append(record.text)
                records.append(record)
                if on_done is not None:
                    on_done(record)
        return records

    def _one(self, sample: Sample, turn: int, answers: list[str], max_new_tokens: int,
             temperature: float) -> RequestRecord:
        import torch

        from ...engine.generator import chat_prompt

        prompt = chat_prompt(self.tokenizer, sample.messages(answers))
        ids = torch.tensor([prompt], device=self.model.device)
        stop = _stop_ids(self.model)
        sampling = ({"do_sample": True, "temperature": temperature, "top_p": 1.0, "top_k": 0} if temperature > 0
                    else {"do_sample": False, "temperature": None, "top_p": None, "top_k": None})
        first = _FirstToken(self.device)
        cuda_sync(self.device)
        start = time.perf_counter()
        with torch.inference_mode():
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=max_new_tokens,
                                      eos_token_id=stop or None, pad_token_id=_pad_id(self.tokenizer, stop),
                                      streamer=first, **sampling)
        cuda_sync(self.device)
        latency = time.perf_counter() - start
        new = out[0, len(prompt):].tolist()
        finished = bool(new) and new[-1] in stop
        text = self.tokenizer.decode(new[:-1] if finished else new, skip_special_tokens=True)
        return RequestRecord(sample_id=sample.id, turn=turn, prompt_tokens=len(prompt), completion_tokens=len(new),
                             latency_s=latency, ttft_s=(first.at - start) if first.at else None,
                             finish_reason="stop" if finished else "length", text=text)

    def sync(self) -> None:
        cuda_sync(self.device)

    def info(self) -> dict:
        return {"model": self.model_id or "smollm2 (embedded default)", "draft": None, "device": self.device,
                "device_name": device_name(self.device), "dtype": str(getattr(self.model, "dtype", self.dtype))}


class _FirstToken:
    """A `generate` streamer that only notes when the first new token exists (the first put is the prompt)."""

    def __init__(self, device):
        self.device, self.calls, self.at = device, 0, None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            cuda_sync(self.device)
            self.at = time.perf_counter()

    def end(self) -> None:
        pass


def _stop_ids(model) -> list[int]:
    ids = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if ids is None:
        ids = getattr(model.config, "eos_token_id", None)
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


def _pad_id(tokenizer, stop: list[int]) -> int:
    pad = getattr(tokenizer, "pad_token_id", None)
    return int(pad) if pad is not None else (stop[0] if stop else 0)
