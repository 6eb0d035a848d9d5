"""Sequences from shards, and a batch order that is a pure function of (seed, micro-step, rank).

Nothing about the data position needs saving beyond the step: resuming at step s replays exactly the
batches (and anchors) an uninterrupted run would have seen. Batches group similar lengths (little
padding); each rank of a distributed run takes every world-th batch.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ..errors import ConfigError
from .blocks import Blocks, make_blocks, sample_anchors
from .shards import list_shards, read_shard, tokenizer_fingerprint


class SequenceData:
    """All training sequences in memory (token ids are small): tokens and loss masks, truncated."""

    def __init__(self, sources: list[str | Path], max_len: int = 2048):
        check_sources(sources)
        files: list[Path] = []
        for src in sources:
            p = Path(src)
            files += list_shards(p) if p.is_dir() else [p]
        self.items: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.answers: list[str] = []  # per item: who wrote its answer, 'greedy' | 'sampled' | 'corpus' (answers_of)
        for f in files:
            source = answers_of(f.parent)
            for tok, mask in read_shard(f):
                tok, mask = tok[:max_len], mask[:max_len]
                if _has_label(mask):
                    self.items.append((tok, mask))
                    self.answers.append(source)
        # counted only on this error path: rows that had a response before --max-len cut them
        answered = 0 if self.items else sum(_has_label(mask) for f in files for _, mask in read_shard(f))
        if answered:
            raise ConfigError(f"--max-len {max_len} cuts every response out of the {answered} sequences in "
                              f"{[str(s) for s in sources]} (a row needs its prompt and two answer tokens within "
                              "it): raise --max-len")
        if not self.items:
            raise ConfigError(f"the shards in {[str(s) for s in sources]} hold no sequence with a response")
        self.lengths = torch.tensor([len(t) for t, _ in self.items])

    def __len__(self) -> int:
        return len(self.items)

    @property
    def max_token(self) -> int:
        return max(int(t.max()) for t, _ in self.items)

    @property
    def response_tokens(self) -> int:
        return int(sum(int(m.sum()) for _, m in self.items))

    @property
    def all_greedy(self) -> bool:
        """Whether every answer is the target's greedy text, so its next tokens are the target's own labels."""
        return all(a == "greedy" for a in self.answers)


def _has_label(mask: torch.Tensor) -> bool:
    """At least one anchor with a label: two response tokens in a row."""
    return int((mask[:-1] & mask[1:]).sum()) >= 1


def answers_of(directory: Path) -> str:
    """Who wrote a datagen directory's answers: 'greedy' (the target, temperature 0; also assumed for shards
    without datagen.json), 'sampled' (the target, temperature > 0) or 'corpus' (`datagen --answers corpus`)."""
    try:
        made = json.loads((directory / "datagen.json").read_text())
    except (OSError, ValueError):
        return "greedy"
    if not isinstance(made, dict):
        return "greedy"
    if made.get("answers") == "corpus":
        return "corpus"
    temperature = made.get("temperature", 0)
    return "sampled" if isinstance(temperature, (int, float)) and temperature > 0 else "greedy"


def check_sources(sources: list[str | Path]) -> None:
    """A mistyped --data path is named as such (it was read as a shard file: a safetensors traceback), and so is
    a directory without shards (found after the target loaded; beside other --data it was skipped silently)."""
    missing = [str(s) for s in sources if not Path(s).exists()]
    if missing:
        raise ConfigError(f"training data not found: {missing} (give `dflashkit datagen --out` directories "
                          "or their shard files)")
    empty = [str(s) for s in sources if Path(s).is_dir() and not list_shards(s)]
    if empty:
        raise ConfigError(f"no data shards in {empty}: give `dflashkit datagen --out` directories "
                          "(shard-*.safetensors), or run `dflashkit datagen` first")


def check_same_tokenizer(sources: list[str | Path], data: SequenceData, tokenizer, vocab_size: int) -> None:
    """Shards of another model's tokenizer train a drafter on token ids that mean other words to this target:
    refuse them (datagen records its tokenizer's fingerprint in datagen.json), and ids beyond the vocabulary."""
    if data.max_token >= vocab_size:
        raise ConfigError(f"the shards in {[str(s) for s in sources]} hold token id {data.max_token}, beyond the "
                          f"target's vocabulary of {vocab_size}: they were generated with another model; run "
                          "`dflashkit datagen` with this --target")
    mine = tokenizer_fingerprint(tokenizer)
    for src in sources:
        path = Path(src)
        meta = (path if path.is_dir() else path.parent) / "datagen.json"
        try:
            made = json.loads(meta.read_text())
        except (OSError, ValueError):
            continue  # shard files without their datagen.json: nothing to compare
        theirs = made.get("tokenizer") if isinstance(made, dict) else None
        if mine and theirs and theirs != mine:
            model = made.get("model") or "(the embedded default)"
            raise ConfigError(f"{src} was generated by datagen --model {model} whose tokenizer differs from the "
                              "target's: train with that --target, or run `dflashkit datagen` with this one")


def epoch_batches(lengths: torch.Tensor, batch_size: int, seed: int, epoch: int) -> list[list[int]]:
    """Shuffle, sort within windows of 64 batches by length, cut into batches, shuffle the batches."""
    g = torch.Generator().manual_seed(seed * 100_003 + epoch)
    perm = torch.randperm(len(lengths), generator=g)
    window = batch_size * 64
    batches = []
    for lo in range(0, len(perm), window):
        chunk = perm[lo:lo + window]
        chunk = chunk[lengths[chunk].argsort(descending=True, stable=True)]
        batches += [chunk[i:i + batch_size].tolist() for i in range(0, len(chunk), batch_size)]
    order = torch.randperm(len(batches), generator=g).tolist()
    return [batches[i] for i in order]


class BatchPlan:
    """Micro-step u of rank r -> the sequence indices it trains on (epochs roll over forever)."""

    def __init__(self, lengths: torch.Tensor, batch_size: int, seed: int, rank: int = 0, world: int = 1):
        self.lengths, self.batch_size, self.seed, self.rank, self.world = lengths, batch_size, seed, rank, world
        self.per_rank = len(epoch_batches(lengths, batch_size, seed, 0)) // world
        if self.per_rank == 0:
            raise ConfigError(f"{len(lengths)} sequences make no batch of {batch_size} per rank on {world} ranks; "
                              "lower --batch-size or generate more data")
        self._cache: tuple[int, list[list[int]]] | None = None

    def indices(self, micro_step: int) -> tuple[int, list[int]]:
        """-> (epoch, sequence indices)."""
        epoch, i = divmod(micro_step, self.per_rank)
        if self._cache is None or self._cache[0] != epoch:
            self._cache = (epoch, epoch_batches(self.lengths, self.batch_size, self.seed, epoch))
        return epoch, self._cache[1][i * self.world + self.rank]


def collate(data: SequenceData, indices: list[int], max_anchors: int, block_size: int, mask_token_id: int,
            seed: int, length_multiple: int = 64,
            anchor_multiple: int = 32) -> tuple[torch.Tensor, torch.Tensor, Blocks]:
    """-> tokens [B, L] (right-padded), lengths [B], blocks. Anchors drawn from `seed` (deterministic).

    L is padded to a multiple of `length_multiple` and the anchor count to a multiple of `anchor_multiple`
    (padding anchors carry no loss): a few dozen distinct shapes for a whole run, so the GPU kernels that
    plan per shape (cuDNN attention, autotuned matmuls) stop re-planning every step."""
    seqs = [data.items[i] for i in indices]
    lengths = torch.tensor([len(t) for t, _ in seqs])
    width = _round_up(int(lengths.max()), length_multiple)
    tokens = torch.zeros(len(seqs), width, dtype=torch.long)
    loss_mask = torch.zeros(len(seqs), width, dtype=torch.bool)
    for row, (tok, mask) in enumerate(seqs):
        tokens[row, :len(tok)] = tok
        loss_mask[row, :len(mask)] = mask
    gen = torch.Generator().manual_seed(seed)
    anchors, valid = sample_anchors(loss_mask, lengths, max_anchors, gen)
    extra = min(_round_up(anchors.shape[1], anchor_multiple), max_anchors) - anchors.shape[1]  # A <= max_anchors
    if extra > 0:
        anchors = torch.cat([anchors, anchors.new_zeros(anchors.shape[0], extra)], dim=1)
        valid = torch.cat([valid, valid.new_zeros(valid.shape[0], extra)], dim=1)
    return tokens, lengths, make_blocks(tokens, loss_mask, lengths, anchors, valid, block_size, mask_token_id)


def _round_up(x: int, k: int) -> int:
    return -(-x // max(1, k)) * max(1, k)
