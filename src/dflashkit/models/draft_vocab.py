"""A pruned draft vocabulary: the drafter proposes only the tokens that make up nearly all of the target's answers.

Draft logits go through the target's LM head, the largest single read of a draft step on a big vocabulary
(Qwen3-8B: 152k x 4096, 1.2 GB in bf16, more than a third of what a 5-layer drafter reads; SmolLM2 on a CPU:
3.7 of the 7.5 ms a draft takes). Drafts are only proposals, so restricting them keeps the output exactly the
target's: greedy verification is unchanged, and for sampling the proposal q lives on the kept tokens, which
rejection sampling allows. The cost is acceptance when the right token is rare. Measured with the shipped
SmolLM2 drafter (24 HumanEval and MT-Bench prompts, greedy, block 4): tau 1.618 with all 49,152 tokens,
1.618 with the 16,384 most frequent, 1.606 with 8,192, 1.564 with 4,096.

The counts ship with the drafter as `token_counts.json` (`dflashkit train` writes them from its data);
other tools ignore the file, so the drafter stays in the published format.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ConfigError

COUNTS_FILE = "token_counts.json"  # not *.safetensors: loaders that glob weight files (vLLM, ...) would take it
# auto size: the fewest tokens (in steps of 1024) that cover this share of the counted answers. SmolLM2 on
# ShareGPT answers (multilingual): 99% -> 15,360 of 49,152 tokens (the shipped 4-turn counts; 23,552 on the
# earlier 2-turn ones, where 97.4% would be 16,384, already lossless in tau on English prompts; 92%, 8,192: -0.8%).
AUTO_COVERAGE = 0.99
_STEP = 1024


def load_counts(directory: str | Path) -> torch.Tensor | None:
    """A torn or foreign file is a one-line ConfigError: it was a JSON or KeyError traceback at every load of the
    drafter, even with --draft-vocab 0."""
    path = Path(directory) / COUNTS_FILE
    if not path.is_file():
        return None
    try:
        return torch.tensor(json.loads(path.read_text())["counts"], dtype=torch.long)
    except (ValueError, KeyError, TypeError, RuntimeError) as exc:
        raise ConfigError(f"{path} holds no list of token counts ({type(exc).__name__}: {exc}); delete it to draft "
                          "from every token, or rewrite it with scripts/token_counts.py") from exc


def save_counts(directory: str | Path, counts: torch.Tensor) -> None:
    data = {"what": "occurrences of each target token id in the drafter's training answers", "counts": counts.tolist()}
    (Path(directory) / COUNTS_FILE).write_text(json.dumps(data, separators=(",", ":")))


def count_tokens(sequences, vocab_size: int) -> torch.Tensor:
    """Occurrences of each token id over `sequences` (1-D id tensors), ids >= vocab_size ignored."""
    counts = torch.zeros(vocab_size, dtype=torch.long)
    for ids in sequences:
        ids = ids[ids < vocab_size]
        counts += torch.bincount(ids, minlength=vocab_size)[:vocab_size]
    return counts


def auto_size(counts: torch.Tensor, coverage: float = AUTO_COVERAGE) -> int:
    """The fewest most-frequent tokens, rounded up to a multiple of 1024, whose counts reach `coverage`."""
    total = int(counts.sum())
    if total == 0:
        return counts.numel()
    cumulative = counts.sort(descending=True).values.cumsum(0)
    needed = int((cumulative < coverage * total).sum()) + 1
    return min(counts.numel(), -(-needed // _STEP) * _STEP)


def always_kept(stop_ids, tokenizer) -> list[int]:
    """Ids every pruned vocabulary keeps however rare: the stop tokens and the tokenizer's special tokens."""
    return list(stop_ids) + list(getattr(tokenizer, "all_special_ids", None) or [])


def kept_ids(counts: torch.Tensor, size: int, always: list[int]) -> torch.Tensor:
    """Sorted ids of the `size` most frequent tokens plus `always` (stop and special tokens)."""
    top = counts.argsort(descending=True, stable=True)[:size]
    extra = torch.tensor([i for i in always if 0 <= i < counts.numel()], dtype=torch.long)
    return torch.unique(torch.cat([top, extra]))
