"""JSONL reading shared by the prompt loaders of `bench`/`eval` and `datagen`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

from .errors import ConfigError


def json_lines(path: str | Path, error: type[Exception] = ConfigError) -> Iterator[tuple[int, object]]:
    """(line number, value) for each non-blank line. A broken line is an error naming file and line: skipping
    it would quietly drop prompts. utf-8-sig: a leading byte-order mark (Notepad's UTF-8) is skipped, and other
    encodings (PowerShell's UTF-16) are that error too, not a UnicodeDecodeError traceback."""
    path = Path(path)
    with path.open(encoding="utf-8-sig") as f:
        try:
            for number, line in enumerate(f, 1):
                if not line.strip():
                    continue
                try:
                    yield number, json.loads(line)
                except json.JSONDecodeError as exc:
                    raise error(f"{path}:{number}: not valid JSON ({exc.msg})") from exc
        except UnicodeDecodeError as exc:
            raise error(f"{path} is not UTF-8 text ({exc.reason}); save it as UTF-8") from exc
