"""`load` and `generate`: the two calls most users need."""

from __future__ import annotations

import torch

from .engine.generator import Generator
from .engine.sampling import SamplingParams
from .engine.sequence import GenerationResult
from .errors import ConfigError, RequestError
from .models.drafter import DFlashDraft
from .models.factory import make_target, random_draft
from .models.loading import DEFAULT_TARGET, default_draft_dir, load_target, resolve_dtype
from .models.target import TargetBase

RANDOM_DRAFT = "random"


def default_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def load(model: str | None = None, draft: str | None = None, *, device: str | None = None,
         dtype: str | torch.dtype | None = None, block_size: int | None = None, max_batch: int = 8,
         max_length: int | None = None, speculative: bool = True, fast_target: bool | None = None,
         compile: bool = False, draft_vocab: int | None = None,
         adaptive_block_size: bool | None = None) -> Generator:
    """Load a target and its DFlash drafter into a ready Generator.

    model: hub id, local dir or .gguf file; None = the embedded SmolLM2-135M-Instruct.
    draft: hub id or local dir of a drafter; None = the shipped drafter for the default model;
           "random" = a randomly initialised drafter (correct output, low acceptance: testing only).
    fast_target: None = the fast Llama-family target path where it applies, False = always the generic one,
           True = require the fast path (ConfigError if the model cannot take it).
    compile: torch.compile the decoder layers (GPU decode steps get ~2x faster on small models; the first
           steps of each new batch/context shape pay the compilation).
    draft_vocab: drafts from this many most frequent tokens only (a cheaper draft LM head; output unchanged);
           None = as the drafter's token_counts.json suggests (every token if it has none), 0 = every token.
    adaptive_block_size: None = adaptive unless block_size is given; False = block_size (default: the drafter's)
           at every step, so a seeded sample is the same run to run (the adaptive size follows step times).
    """
    device = device or default_device()
    dtype = resolve_dtype(dtype, device)
    hf_model, tokenizer = load_target(model, dtype, device)
    target = make_target(hf_model, tokenizer, fast=fast_target)
    drafter = load_draft(draft, target, is_default_target=model in (None, "", DEFAULT_TARGET), speculative=speculative)
    gen = Generator(target, drafter, tokenizer, block_size=block_size, max_batch=max_batch,
                    max_length=max_length, speculative=speculative, compile=compile, draft_vocab=draft_vocab,
                    adaptive_block_size=adaptive_block_size)
    gen.draft_source = getattr(drafter, "source", None)
    return gen


def load_draft(draft: str | None, target: TargetBase, is_default_target: bool,
               speculative: bool = True) -> DFlashDraft | None:
    """`speculative=False` with no drafter given: None, since plain decoding needs none (`generate
    --autoregressive`, `serve --no-speculative` and `bench --mode ar` refused any target but the default)."""
    if draft is None and is_default_target:
        shipped = default_draft_dir()
        draft = str(shipped) if shipped is not None else RANDOM_DRAFT
    if draft is None and not speculative:
        return None
    if draft is None:
        raise ConfigError("no drafter given for this target: pass draft=<hub id or dir> (--draft), or "
                          "draft='random' for an untrained one (correct but slow; for testing)")
    if draft == RANDOM_DRAFT:
        drafter = random_draft(target)
        drafter.source = "random (untrained: expect acceptance length ~1)"
        return drafter
    drafter = DFlashDraft.from_pretrained(draft, dtype=target.dtype, device=target.device)
    drafter.source = str(draft)
    return drafter


def adaptive_for(params: SamplingParams) -> bool | None:
    """`load(adaptive_block_size=...)` for a one-off request: False (one block size) for a seeded sample, since the
    adaptive size follows measured step times and a step's block decides how many random numbers it draws (the
    same seed gave another answer run to run); None (the default rule) otherwise."""
    return False if params.seed is not None and not params.greedy else None


def generate(prompt: str | list[dict], model: str | None = None, draft: str | None = None, *,
             chat: bool = True, **sampling) -> GenerationResult:
    """One-shot convenience: load, apply the chat template, generate. Reuse `load()` for many calls.

    With a `seed` and sampling, the drafter's block size is used at every step, so the answer is reproducible."""
    if not chat and not isinstance(prompt, str):  # checked before the load: it was a tokenizer ValueError after it
        raise RequestError("chat=False takes the prompt as text; messages need the chat template (chat=True)")
    params = SamplingParams(**sampling)  # before the load too: a bad value was refused only after the model loaded
    gen = load(model, draft, max_batch=1, adaptive_block_size=adaptive_for(params))
    messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    ids = gen.chat_prompt(messages) if chat else gen.tokenizer.encode(prompt)
    return gen.generate([ids], params)[0]
