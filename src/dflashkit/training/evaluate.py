"""Acceptance length (tau) of a drafter, measured by the engine itself: greedy, fixed block size, no timing."""

from __future__ import annotations

import copy
from collections import Counter

import torch
from torch import nn

from ..engine.generator import Generator
from ..engine.sampling import SamplingParams
from ..models.drafter import DFlashDraft
from ..models.factory import make_target


def acceptance(gen: Generator, prompts: list[list[int]], max_new_tokens: int = 256,
               progress: bool = False, texts: bool = False) -> dict:
    """-> {tau, histogram {accepted: steps}, steps, prompts, tokens}; tau = tokens committed per target step.

    `texts`: also return the answers (multi-turn evaluation asks the next turn after them)."""
    results = gen.generate(prompts, SamplingParams(max_new_tokens=max_new_tokens), speculative=True,
                           progress=progress)
    lengths = [a for r in results for a in r.acceptance_lengths]
    out = {"tau": sum(lengths) / max(1, len(lengths)), "histogram": dict(sorted(Counter(lengths).items())),
           "steps": len(lengths), "prompts": len(prompts), "tokens": sum(r.completion_tokens for r in results)}
    if texts:
        out["texts"] = [r.text for r in results]
    return out


FLOAT32_PROBE_MAX_PARAMS = 2_000_000_000  # a float32 copy of at most ~8 GB beside the training run


class TauProbe:
    """Periodic tau during training: its own engine copy of the target (the engine rebinds attention).

    The copy decodes in float32 when the target is small enough: in bf16 the greedy answers change with the GPU,
    the batch and the drafter itself, and with them a 32-prompt tau by ~15 % (run 9 in docs/training.md); in
    float32 every drafter verifies (nearly always) the same answers, so probes of different runs compare."""

    def __init__(self, hf_model: nn.Module, tokenizer, prompts: list[list[int]], max_new_tokens: int = 192,
                 max_batch: int = 32):
        model = copy.deepcopy(hf_model)
        if sum(p.numel() for p in model.parameters()) <= FLOAT32_PROBE_MAX_PARAMS:
            model = model.float()
        self.target = make_target(model, tokenizer)
        self.prompts, self.max_new_tokens = prompts, max_new_tokens
        self.max_batch = max(1, min(max_batch, len(prompts)))
        self.max_length = max(len(p) for p in prompts) + max_new_tokens + 8 if prompts else 512

    def __call__(self, draft: DFlashDraft) -> dict:
        if not self.prompts:
            return {}
        frozen = copy.deepcopy(draft).to(self.target.dtype).eval()
        gen = Generator(self.target, frozen, self.target.tokenizer, block_size=frozen.block_size,
                        max_batch=self.max_batch, max_length=self.max_length, cuda_graphs=False)
        try:
            return acceptance(gen, self.prompts, self.max_new_tokens)
        finally:
            del gen, frozen
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
