"""JSONL reading shared by the prompt loaders of `bench`/`eval` and `datagen`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError


def json_lines(path: str | Path, error: type[Exception] = ConfigError) -> Iterator[tuple[int, object]]:
    """(line number, value) for each non-blank line. A broken line is an error naming file and line: skipping
    it would quietly drop prompts."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as exc:
                raise error(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
