"""Adaptive block size: pick the verify block that maximises expected tokens per second *here*.

Expected tokens of a block of size B follow from per-depth acceptance rates a_k (draft k accepted
given drafts 1..k-1 were): E[B] = 1 + sum_{k<B} prod_{j<=k} a_j. Step cost is measured online per
(batch bucket, B) from the engine's own per-step wall time (it syncs once per step anyway), so the
choice reflects the real device: on a GPU a 16-token verify costs about one token, on a CPU ~4x.
B = 1 is plain decoding (the drafter only absorbs context), so DFlash never loses much to AR.
"""

from __future__ import annotations

from collections import defaultdict


class BlockSizeController:
    EXPLORE_EVERY = 16  # at most this often, a step tries the next larger block than the best one
    EXPLORE_COST = 0.02  # ... and less often where that step costs more: about 2% of time goes to exploring
    PRIOR_RATE, PRIOR_WEIGHT = 0.7, 4.0  # optimistic prior so untried depths get tried

    def __init__(self, max_block: int, fixed: int | None = None):
        self.max_block = max_block
        self.fixed = fixed
        self.candidates = sorted({b for b in (1, 2, 4, 8, 16, 32, max_block) if b <= max_block})
        self.step_time: dict[tuple[int, int], float] = {}
        self.trials = defaultdict(float)
        self.hits = defaultdict(float)
        self.steps = 0
        self.seen = defaultdict(int)

    def choose(self, rows: int) -> int:
        if self.fixed is not None:
            return self.fixed
        self.steps += 1
        untimed = [b for b in self.candidates if (rows, b) not in self.step_time]
        if untimed:
            return untimed[-1]
        best = max(self.candidates, key=lambda b: self.expected_tokens(b) / self.step_time[(rows, b)])
        bigger = [b for b in self.candidates if b > best]
        if not bigger:
            return best
        # now and then try the next larger block, to keep learning the acceptance one level deeper; as often
        # as its extra cost allows (a CPU's 16-token verify costs ~3x a 4-token one; a GPU's about the same)
        nxt = bigger[0]
        extra = self.step_time[(rows, nxt)] / self.step_time[(rows, best)] - 1.0
        every = max(self.EXPLORE_EVERY, round(extra / self.EXPLORE_COST))
        return nxt if self.steps % every == 0 else best

    def forget_acceptance(self) -> None:
        """Drop acceptance statistics (e.g. of warm-up prompts), keep the measured step costs."""
        self.trials.clear()
        self.hits.clear()
        self.steps = 0

    def rate(self, depth: int) -> float:
        return (self.hits[depth] + self.PRIOR_RATE * self.PRIOR_WEIGHT) / (self.trials[depth] + self.PRIOR_WEIGHT)

    def expected_tokens(self, block: int) -> float:
        total, survive = 1.0, 1.0
        for depth in range(1, block):
            survive *= self.rate(depth)
            total += survive
        return total

    def observe(self, rows: int, block: int, seconds: float | None, acceptance_lengths: list[int]) -> None:
        """`seconds=None`: the step's time is not typical (it compiled or captured a graph), count acceptance only.

        A compiled step of a new cache length takes seconds; averaged in, it would make that block look
        slow for thousands of steps (it is only revisited now and then). So such steps are skipped, and a
        sample under half the estimate replaces it outright."""
        key = (rows, block)
        if seconds is not None:
            self.seen[key] += 1
            if self.seen[key] <= 2:  # the first calls of a shape run eagerly / capture a CUDA graph: not typical
                if self.seen[key] == 2:
                    self.step_time[key] = seconds
            elif seconds < 0.5 * self.step_time[key]:
                self.step_time[key] = seconds
            else:
                self.step_time[key] = 0.8 * self.step_time[key] + 0.2 * seconds
        for length in acceptance_lengths:  # length = accepted drafts + 1
            for depth in range(1, min(length, block)):
                self.trials[depth] += 1
                self.hits[depth] += 1
            if length < block:
                self.trials[length] += 1
