"""Training rows from the answers a chat corpus already holds: no generation, CPU seconds instead of GPU minutes.

Regenerating answers (datagen) gives the target's own text, but it costs GPU time and runs out with the
prompts. A corpus answer is somebody else's text, so its tokens are not labels: `train --labels target` asks
the target for its own greedy token at every position and keeps a block's label only while the answer so far
follows the target's greedy chain (training/blocks.py: `greedy_labels`). The corpus lends contexts; the target
still decides every label.

Rows have the datagen shape (prompt + answer, loss on the answer), so the two mix freely in `train --data`.
Turn k's prompt holds the corpus's own earlier answers. An answer ends at the target's first end-of-turn token,
as a generated one does (the template's text after it is never generated).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from pathlib import Path

from ..engine.generator import chat_text, encode_chat
from .datagen import progress_bar
from .shards import Row, shard_is_complete, shard_path, write_shard

Dialogue = list[tuple[str, "str | None"]]  # (user turn, corpus answer or None)


def end_token_ids(directory: str | Path, tokenizer) -> list[int]:
    """The ids that end the target's answers, read as the engine reads them (generation config, model
    config, tokenizer) but without loading any weights."""
    from transformers import AutoConfig, GenerationConfig

    for load in (GenerationConfig.from_pretrained, AutoConfig.from_pretrained):
        try:
            ids = getattr(load(str(directory)), "eos_token_id", None)
        except (OSError, ValueError):
            continue
        if ids is not None:
            return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]
    ids = getattr(tokenizer, "eos_token_id", None)
    return [] if ids is None else [int(ids)]


def prompt_and_answer(tokenizer, messages: list[dict], answer: str,
                      stop_ids: Iterable[int]) -> tuple[list[int], list[int] | None]:
    """The chat's prompt ids (`messages`, assistant turn opened) and the ids the target would have to generate
    after it to say `answer`, up to its end-of-turn token (None: the template does not extend that prompt with
    the answer, so there is no such continuation to learn)."""
    head = chat_text(tokenizer, messages)  # rendered once: the prompt's text and the answer's left edge
    prompt = encode_chat(tokenizer, head)
    if not getattr(tokenizer, "chat_template", None):
        ids = tokenizer.encode(" " + answer, add_special_tokens=False)
    else:
        full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": answer}], tokenize=False)
        if not full.startswith(head):  # e.g. a template that rewrites earlier turns once an answer follows
            return prompt, None
        ids = tokenizer.encode(full[len(head):], add_special_tokens=False)
    stops = set(stop_ids)
    end = next((i for i, t in enumerate(ids) if t in stops), None)
    return prompt, ids[:end + 1] if end is not None else ids


def corpus_rows(dialogue: Dialogue, tokenizer, stop_ids: list[int], max_prompt_tokens: int, max_new_tokens: int,
                stats: dict) -> list[Row]:
    """One row per answered turn, up to the first turn that cannot be one (no answer, prompt too long)."""
    rows, messages = [], []
    for question, answer in dialogue:
        messages = messages + [{"role": "user", "content": question}]
        if not answer or not answer.strip():
            stats["no_answer"] += 1
            break
        prompt, ids = prompt_and_answer(tokenizer, messages, answer, stop_ids)
        if len(prompt) > max_prompt_tokens:
            stats["skipped_long"] += 1
            break
        if ids is None:
            stats["template_mismatch"] += 1
            break
        ids = ids[:max_new_tokens]
        if len(ids) >= 2:
            rows.append(Row(prompt + ids, len(prompt)))
            stats["rows"] += 1
            stats["response_tokens"] += len(ids)
        messages = messages + [{"role": "assistant", "content": answer}]
    return rows


def run_corpus(dialogues: list[Dialogue], out_dir: str | Path, tokenizer, stop_ids: list[int],
               max_prompt_tokens: int, max_new_tokens: int, shard_size: int = 512, progress: bool = True,
               meta: dict | None = None) -> dict:
    """Write the corpus's answered turns as shards (the datagen layout and resume rule); returns a summary."""
    start = time.time()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    stats = {"rows": 0, "response_tokens": 0, "skipped_long": 0, "no_answer": 0, "template_mismatch": 0,
             "written": 0}
    n_shards = math.ceil(len(dialogues) / shard_size)
    todo = [s for s in range(n_shards) if not shard_is_complete(shard_path(out_dir, s))]
    bar = progress_bar(progress, len(dialogues), (n_shards - len(todo)) * shard_size, "corpus", "conv")
    for s in todo:
        chunk = dialogues[s * shard_size:(s + 1) * shard_size]
        rows = []
        for d in chunk:
            rows += corpus_rows(d, tokenizer, stop_ids, max_prompt_tokens, max_new_tokens, stats)
        write_shard(shard_path(out_dir, s), rows, True, meta)
        stats["written"] += 1
        bar.update(len(chunk))
    bar.close()
    stats["shards"] = n_shards
    stats["elapsed_s"] = round(time.time() - start, 1)
    return stats

