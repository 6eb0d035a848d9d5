"""Host-side state of one request: its tokens, stop conditions, streaming text and statistics."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .sampling import SamplingParams

_TAIL = 48  # tokens re-decoded when looking for a stop string that may span tokens (more for long stop strings)


def _stop_window(stops) -> int:
    """Tokens whose text surely holds the longest stop string: a token adds at least one byte of text, except
    special tokens, which decode to nothing (hence the margin). Shorter windows missed long stop strings."""
    return max(_TAIL, max(len(s.encode("utf-8", "replace")) for s in stops) + 16)


def _stop_prefix_len(text: str, stops) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string (held back while streaming)."""
    best = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), best, -1):
            if text.endswith(stop[:k]):
                best = k
                break
    return best


@dataclass
class GenerationResult:
    token_ids: list[int]
    text: str
    finish_reason: str  # "stop" | "length" | "abort"
    acceptance_lengths: list[int]
    prompt_tokens: int
    completion_tokens: int
    ttft_s: float
    elapsed_s: float

    @property
    def steps(self) -> int:
        return len(self.acceptance_lengths)

    @property
    def mean_acceptance_length(self) -> float:
        return sum(self.acceptance_lengths) / len(self.acceptance_lengths) if self.acceptance_lengths else 0.0

    @property
    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.elapsed_s if self.elapsed_s > 0 else 0.0


@dataclass
class Update:
    """What one engine step produced for one sequence."""

    seq_id: int
    token_ids: list[int]
    text: str  # newly releasable text (held back while it may still become a stop string)
    finished: bool
    finish_reason: str | None


@dataclass(eq=False)
class Sequence:
    """One request. Compared by identity: the engine looks for free slots (`slots.count(None)`) every step,
    and a generated field-by-field __eq__ made each comparison with a sequence a Python call."""

    id: int
    prompt_ids: list[int]
    params: SamplingParams
    stop_ids: frozenset
    limit: int  # most tokens it may generate (max_new_tokens, cut to the context)
    tokenizer: object | None = None
    generated: list[int] = field(default_factory=list)
    acceptance_lengths: list[int] = field(default_factory=list)
    finish_reason: str | None = None
    reference: list[int] | None = None  # oracle mode: the continuation the drafts replay
    stream_text: bool = True  # Update.text per step; False: the text only at the end (detokenising costs host time)
    t_submit: float = field(default_factory=time.perf_counter)
    t_first: float | None = None
    t_end: float | None = None
    _sent_chars: int = 0
    _dec_prefix: int = 0  # incremental detokenisation: tokens [_dec_prefix, _dec_read) were last decoded
    _dec_read: int = 0  # ... into text already sent, ending on a whole character
    _dec_sent: int = 0  # chars past that text already decoded while a split character was still arriving
    _held: str = ""  # decoded text not yet sent: it may be the start of a stop string
    _stop_at: int | None = None  # char offset of a matched stop string
    _window: int = 0  # tokens re-decoded per stop-string check (_stop_window), set on first use

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    @property
    def anchor_pos(self) -> int:
        """Position of the last committed token (not yet in the target's KV cache)."""
        return len(self.prompt_ids) + len(self.generated) - 1

    def extend(self, new: list[int], speculative_step: bool) -> list[int]:
        """Commit tokens in order, stopping at max length, stop tokens or stop strings; returns those kept
        (possibly `new` itself). It runs for every row at every step, so the usual case (no stop strings)
        cuts `new` at once instead of committing token by token."""
        if self.finish_reason is not None:
            return []
        generated = self.generated
        if self.params.stop:
            kept = self._commit_checking_text(new)
        else:
            room = self.limit - len(generated)  # >= 1: limit >= 1, and reaching it finishes the sequence
            kept = new if len(new) <= room else new[:room]
            if not self.stop_ids.isdisjoint(kept):
                first = next(k for k, token in enumerate(kept) if token in self.stop_ids)
                kept = kept[:first + 1]
                self.finish_reason = "stop"
            generated.extend(kept)
            if self.finish_reason is None and len(generated) >= self.limit:
                self.finish_reason = "length"
        if speculative_step and kept:
            self.acceptance_lengths.append(len(kept))
        if self.t_first is None or self.finish_reason is not None:  # read the clock only to record it
            now = time.perf_counter()
            if self.t_first is None:
                self.t_first = now
            if self.finish_reason is not None:
                self.t_end = now
        return kept

    def _commit_checking_text(self, new: list[int]) -> list[int]:
        """Token by token: each may complete a stop string (a decode of the tail per token)."""
        kept: list[int] = []
        for token in new:
            self.generated.append(token)
            kept.append(token)
            if token in self.stop_ids:
                self.finish_reason = "stop"
            elif self._find_stop():
                self.finish_reason = "stop"
            elif len(self.generated) >= self.limit:
                self.finish_reason = "length"
            if self.finish_reason is not None:
                break
        return kept

    def _find_stop(self) -> bool:
        if not self._window:
            self._window = _stop_window(self.params.stop)
        # a trailing U+FFFD is a character whose bytes are still arriving, not text: a stop holding U+FFFD
        # matched it and cut the answer before the character completed
        tail = self.tokenizer.decode(self.generated[-self._window:], skip_special_tokens=True).rstrip("\ufffd")
        if not any(s in tail for s in self.params.stop):
            return False
        text = self.full_text().rstrip("\ufffd")
        hits = [text.find(s) for s in self.params.stop if s in text]
        self._stop_at = min(hits) if hits else None
        return self._stop_at is not None

    def full_text(self) -> str:
        if self.tokenizer is None:
            return ""
        return self.tokenizer.decode(self.generated, skip_special_tokens=True)

    def final_text(self) -> str:
        text = self.full_text()
        return text[:self._stop_at] if self._stop_at is not None else text

    def text_delta(self) -> str:
        """New text since the last call, holding back a trailing partial UTF-8 char or stop-string prefix."""
        if self.tokenizer is None:
            return ""
        if self.finished and self.params.stop:  # one whole decode at the end: the text is cut at the stop
            out = self.final_text()[self._sent_chars:]
        else:
            out = self._held + self._incremental_delta()
            keep = 0 if self.finished else _stop_prefix_len(out, self.params.stop or ())
            out, self._held = out[:len(out) - keep], out[len(out) - keep:]
        self._sent_chars += len(out)
        return out

    def _incremental_delta(self) -> str:
        """Decode only the tokens of the last delta and the new ones, so streaming costs O(new tokens) per
        step instead of re-decoding the whole answer. Both windows start at the same token, which cancels
        tokenizer effects at the window's edge (a SentencePiece leading space, bytes of a split character)."""
        decode = self.tokenizer.decode
        before = decode(self.generated[self._dec_prefix:self._dec_read], skip_special_tokens=True)
        new = decode(self.generated[self._dec_prefix:], skip_special_tokens=True)[len(before):]
        if not self.finished and new.endswith("\ufffd"):  # a character whose bytes are still arriving
            out = new.rstrip("\ufffd")[self._dec_sent:]
            self._dec_sent += len(out)
            return out
        out = new[self._dec_sent:]
        self._dec_prefix, self._dec_read, self._dec_sent = self._dec_read, len(self.generated), 0
        return out

    def result(self) -> GenerationResult:
        end = self.t_end or time.perf_counter()
        return GenerationResult(
            token_ids=list(self.generated), text=self.final_text(), finish_reason=self.finish_reason or "abort",
            acceptance_lengths=list(self.acceptance_lengths), prompt_tokens=len(self.prompt_ids),
            completion_tokens=len(self.generated), ttft_s=(self.t_first or end) - self.t_submit,
            elapsed_s=end - self.t_submit)
