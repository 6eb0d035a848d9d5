"""Helpers for the bench tests: a fake engine that answers deterministically and records its calls."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FakeResult:
    token_ids: list[int]
    text: str
    finish_reason: str
    acceptance_lengths: list[int]
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    elapsed_s: float

    @property
    def steps(self) -> int:
        return len(self.acceptance_lengths)


class FakeGenerator:
    """Stands in for dflashkit.Generator: deterministic answers, records every call it gets."""

    device = "cpu"
    block_size = 4
    draft_source = "fake-draft"

    def __init__(self):
        self.calls: list[dict] = []
        self.chats: list[list[dict]] = []
        self.profile = None

    def chat_prompt(self, messages: list[dict]) -> list[int]:
        self.chats.append(messages)
        return [len(m["content"]) % 50 for m in messages]

    def generate(self, prompts, params, speculative=True, progress=False):
        self.calls.append({"batch": len(prompts), "speculative": speculative, "params": params})
        if self.profile is not None:
            self.profile.update(draft=0.01, verify=0.02, other=0.005, _t=1.0)
        n = params.max_new_tokens
        out = []
        for p in prompts:
            lengths = [3] * (n // 3) + ([n % 3] if n % 3 else []) if speculative else []
            out.append(FakeResult(list(range(n)), f"answer-{sum(p)}", "length", lengths, len(p), n, 0.001, 0.01))
        return out


class ByteTokenizer:
    """Characters to ids modulo a tiny vocabulary, no chat template: enough for real engines on tiny models."""

    chat_template = None
    pad_token_id = 0
    eos_token_id = None

    def __init__(self, vocab: int):
        self.vocab = vocab

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) % self.vocab for c in text][-40:]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + i % 26) for i in ids)
