"""Our engine in this process: plain autoregressive and DFlash decoding of the very same prompts.

Concurrency is the batch size handed to `Generator.generate`: samples go in waves of that many, and a
multi-turn sample's next turn is asked once the whole wave has answered the previous one.
"""

from __future__ import annotations

import inspect

from ...errors import DFlashError
from ..errors import BenchError
from ..records import RequestRecord
from ..samples import Sample
from .base import Backend, OnDone, cuda_sync, device_name

MODES = ("ar", "dflash")


class LocalBackend(Backend):
    name = "local"

    def __init__(self, model: str | None = None, draft: str | None = None, device: str | None = None,
                 dtype: str | None = None, block_size: int | None = None, modes=MODES, generator=None,
                 max_length: int | None = None, compile: bool = False, draft_vocab: int | None = None):
        bad = [m for m in modes if m not in MODES]
        if bad or not modes:
            raise BenchError(f"unknown local mode(s) {bad or modes}: choose from {', '.join(MODES)}")
        self.model, self.draft, self.device, self.dtype = model, draft, device, dtype
        self.block_size, self.max_length, self.compile = block_size, max_length, compile
        self.draft_vocab = draft_vocab
        self.modes = tuple(modes)
        self.gen = generator  # tests pass a fake; otherwise loaded in setup()
        self.engine_steps = 0  # batched draft/verify steps run so far (the longest sequence of each call)

    def setup(self, concurrencies: list[int]) -> None:
        if self.gen is None:
            self.gen = _load(self.model, self.draft, self.device, self.dtype, self.block_size, max(concurrencies),
                             self.max_length, self.compile, self.draft_vocab, "dflash" in self.modes)
        positions = getattr(getattr(self.gen, "target", None), "max_positions", None)
        if self.max_length is not None and positions is not None and self.max_length > positions:
            # the engine clamps it to the model's positions, and the report would record the asked length
            raise BenchError(f"--max-length {self.max_length} exceeds the model's context of {positions} tokens "
                             f"(max_position_embeddings); use at most {positions}")
        if "dflash" in self.modes and getattr(self.gen, "draft", True) is None:
            raise BenchError("the local backend has no drafter for DFlash mode: pass --draft, or --mode ar")

    def run(self, samples: list[Sample], concurrency: int, max_new_tokens: int, *, mode: str,
            temperature: float = 0.0, on_done: OnDone | None = None) -> list[RequestRecord]:
        records: list[RequestRecord] = []
        for start in range(0, len(samples), concurrency):
            wave = samples[start:start + concurrency]
            records += self._wave(wave, mode == "dflash", _params(max_new_tokens, temperature), on_done)
        return records

    def _wave(self, wave: list[Sample], speculative: bool, params, on_done: OnDone | None) -> list[RequestRecord]:
        answers: list[list[str]] = [[] for _ in wave]
        records = []
        for turn in range(max(len(s.turns) for s in wave)):
            active = [i for i, s in enumerate(wave) if turn < len(s.turns)]
            prompts = [self.gen.chat_prompt(wave[i].messages(answers[i])) for i in active]
            results = self.gen.generate(prompts, params, speculative=speculative)
            self.engine_steps += max((len(r.acceptance_lengths or ()) for r in results), default=0)
            for i, result in zip(active, results, strict=True):
                answers[i].append(result.text)
                record = _record(wave[i].id, turn, result, speculative)
                records.append(record)
                if on_done is not None:
                    on_done(record)
        return records

    def profile(self, samples: list[Sample], concurrency: int, max_new_tokens: int, *,
                temperature: float = 0.0) -> dict | None:
        """Draft / verify / other ms per step, on an untimed DFlash pass (profiling adds device syncs)."""
        if "dflash" not in self.modes:
            return None
        gen = self.gen
        if not hasattr(gen, "profile"):  # engines that keep their own breakdown
            self.run(samples, concurrency, max_new_tokens, mode="dflash", temperature=temperature)
            last = getattr(gen, "last_profile", None)
            return dict(last) if isinstance(last, dict) else None
        gen.profile, before = {}, self.engine_steps
        try:
            self.run(samples, concurrency, max_new_tokens, mode="dflash", temperature=temperature)
            raw = dict(gen.profile)
        finally:
            gen.profile = None
        steps = max(self.engine_steps - before, 1)
        per_step = {f"{k}_ms": 1000.0 * v / steps for k, v in raw.items() if not k.startswith("_")}
        return {**per_step, "steps": steps}

    def sync(self) -> None:
        cuda_sync(getattr(self.gen, "device", None))

    def info(self) -> dict:
        gen = self.gen
        device = getattr(gen, "device", self.device)
        drafter = getattr(gen, "draft", True) is not None  # --mode ar loads none for a target given without --draft
        return {"model": self.model or "smollm2 (embedded default)",
                "draft": (getattr(gen, "draft_source", None) or self.draft or "default") if drafter else None,
                "block_size": getattr(gen, "block_size", self.block_size),
                "device": str(device), "device_name": device_name(device) if device is not None else None,
                "dtype": str(getattr(getattr(gen, "target", None), "dtype", self.dtype)),
                "draft_vocab": _draft_vocab(gen)}


def _load(model, draft, device, dtype, block_size, max_batch, max_length=None, compile=False, draft_vocab=None,
          speculative=True):
    """`speculative=False` (--mode ar): a target without a drafter loads too; AR needs none."""
    try:
        import dflashkit
    except ImportError as exc:
        raise BenchError(f"the local backend needs the dflashkit engine, which failed to import: {exc}") from exc
    load = getattr(dflashkit, "load", None)
    if load is None:
        raise BenchError("this dflashkit build has no engine (dflashkit.load): use --backend hf or openai")
    options = {"device": device, "dtype": dtype, "block_size": block_size, "max_batch": max_batch,
               "max_length": max_length, "compile": compile, "draft_vocab": draft_vocab, "speculative": speculative}
    accepted = inspect.signature(load).parameters
    try:
        return load(model, draft, **{k: v for k, v in options.items() if k in accepted})
    except DFlashError:
        raise
    except (OSError, RuntimeError) as exc:
        raise BenchError(f"could not load model={model!r} draft={draft!r}: {exc}") from exc


def _params(max_new_tokens: int, temperature: float):
    from ...engine.sampling import SamplingParams

    return SamplingParams(max_new_tokens=max_new_tokens, temperature=temperature)


def _record(sample_id: str, turn: int, result, speculative: bool) -> RequestRecord:
    return RequestRecord(
        sample_id=sample_id, turn=turn, prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens, latency_s=result.elapsed_s, ttft_s=result.ttft_s,
        acceptance_lengths=list(result.acceptance_lengths) if speculative else None,
        finish_reason=result.finish_reason, text=result.text)


def _draft_vocab(gen) -> int | None:
    """Tokens the drafter may propose (a pruned draft vocabulary keeps fewer than the target has)."""
    ids = getattr(gen, "draft_ids", None)
    if ids is not None:
        return int(ids.numel())
    target = getattr(gen, "target", None)
    return getattr(target, "vocab_size", None)
