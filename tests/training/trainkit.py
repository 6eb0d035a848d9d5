"""Tiny float32 Llama targets and a token-level tokenizer for training tests (no downloads)."""

from __future__ import annotations

import torch

VOCAB = 64


class ByteTokenizer:
    """Characters -> ids below VOCAB - 2 (the top ids stay free for the mask token); no chat template."""

    chat_template = None
    eos_token_id = None
    bos_token_id = None
    pad_token_id = None
    mask_token_id = None
    all_special_ids: list[int] = []

    def encode(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return [ord(c) % (VOCAB - 2) for c in text][-40:] or [1]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(97 + i % 26) for i in ids)


def tiny_llama(seed: int = 0, layers: int = 4):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      eos_token_id=None, bos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()
