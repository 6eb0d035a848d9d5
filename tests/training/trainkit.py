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


TURN_TEMPLATE = ("{% for m in messages %}<start_of_turn>{{ 'model' if m['role'] == 'assistant' else m['role'] }}\n"
                 "{{ m['content'] }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n"
                 "{% endif %}")


def turn_tokenizer():
    """A real fast tokenizer, one id per printable character, with a Gemma-style chat template: the end of a
    turn is <end_of_turn> followed by a newline the model never generates. 99 ids: use tiny_llama(vocab=128)."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    vocab = ["<unk>", "<start_of_turn>", "<end_of_turn>", "\n"] + [chr(i) for i in range(32, 127)]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(vocab)}, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<end_of_turn>",
                                   additional_special_tokens=["<start_of_turn>"], chat_template=TURN_TEMPLATE)


def tiny_llama(seed: int = 0, layers: int = 4, vocab: int = VOCAB):
    from transformers import AutoModelForCausalLM, LlamaConfig

    cfg = LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=layers,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=512,
                      eos_token_id=None, bos_token_id=None, pad_token_id=None, tie_word_embeddings=False)
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(cfg, attn_implementation="sdpa").float().eval()
