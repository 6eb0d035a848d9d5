"""OpenAI response objects for both endpoints, whole and streamed, plus our `dflash` statistics."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from ..engine.sequence import GenerationResult


def usage(prompt_tokens: int, completion_tokens: int) -> dict:
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def dflash_stats(result: GenerationResult) -> dict:
    """Acceptance per speculative step (drafts accepted + 1); empty when decoding without the drafter."""
    return {"mean_acceptance_length": round(result.mean_acceptance_length, 4),
            "acceptance_lengths": list(result.acceptance_lengths), "steps": result.steps}


@dataclass
class Reply:
    """Identity shared by every object of one answer: id, creation time, model name, endpoint."""

    model: str
    chat: bool
    id: str = ""
    created: int = field(default_factory=lambda: int(time.time()))

    def __post_init__(self) -> None:
        self.id = self.id or ("chatcmpl-" if self.chat else "cmpl-") + uuid.uuid4().hex[:24]

    def _envelope(self, object: str, choices: list) -> dict:
        return {"id": self.id, "object": object, "created": self.created, "model": self.model, "choices": choices}

    # ------------------------------------------------------------------ whole
    def complete(self, result: GenerationResult) -> dict:
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                      "logprobs": None, "finish_reason": result.finish_reason}
        else:
            choice = {"index": 0, "text": result.text, "logprobs": None, "finish_reason": result.finish_reason}
        body = self._envelope("chat.completion" if self.chat else "text_completion", [choice])
        body["usage"] = usage(result.prompt_tokens, result.completion_tokens)
        body["dflash"] = dflash_stats(result)
        return body

    # --------------------------------------------------------------- streamed
    def chunk(self, text: str | None = None, *, role: bool = False, finish_reason: str | None = None,
              with_usage_field: bool = False) -> dict:
        """One streamed choice: the role opener (chat), a text delta, or the finish marker."""
        if self.chat:
            delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text else {})
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        else:
            choice = {"index": 0, "text": text or "", "logprobs": None, "finish_reason": finish_reason}
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [choice])
        if with_usage_field:
            body["usage"] = None  # OpenAI: null on every chunk but the last when include_usage is on
        return body

    def usage_chunk(self, result: GenerationResult) -> dict:
        body = self._envelope("chat.completion.chunk" if self.chat else "text_completion", [])
        body["usage"] = usage(result.prompt_tokens, result.completion_tokens)
        return body
