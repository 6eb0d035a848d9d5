"""Helpers for CLI tests: run `dflashkit` in-process, and a tiny target + tokenizer the commands can load."""

from __future__ import annotations

import torch

from dflashkit.cli.main import main


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    """-> (exit code, stderr); the code of an argparse error comes back the same way."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


class CharTokenizer:
    """Characters -> ids 1..63; no chat template, no special tokens (enough for `generate --no-chat`)."""

    chat_template = None
    eos_token_id = bos_token_id = pad_token_id = mask_token_id = None
    all_special_ids: list[int] = []

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [1 + ord(c) % 63 for c in text] or [1]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


def tiny_generator_loader(max_positions: int = 64):
    """A stand-in for `dflashkit.api.load`: a random float32 Llama (context `max_positions`) and random drafter."""
    from tiny_models import tiny_hf

    from dflashkit import Generator
    from dflashkit.models.factory import make_target, random_draft

    def load(model=None, draft=None, *, block_size=None, max_length=None, speculative=True, adaptive_block_size=None,
             **_ignored):
        hf = tiny_hf("llama", vocab=64, dtype=torch.float32, max_position_embeddings=max_positions)
        target = make_target(hf, CharTokenizer(), fast=False)
        drafter = random_draft(target, num_layers=1, block_size=4)
        return Generator(target, drafter, CharTokenizer(), block_size=block_size, max_batch=1,
                         max_length=max_length, speculative=speculative, adaptive_block_size=adaptive_block_size)

    return load


def save_tiny_model(directory) -> str:
    """A random float32 Llama and a character-level fast tokenizer saved as a model directory: what `--model DIR`
    loads through the real `dflashkit.api.load`, with no drafter beside it."""
    from tiny_models import tiny_hf
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = ["<unk>", "<eos>"] + [chr(i) for i in range(32, 127)]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<eos>")
    tiny_hf("llama", vocab=len(vocab), dtype=torch.float32).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)
