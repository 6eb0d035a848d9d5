"""Flag checks shared by the commands: each fails before any model loads, naming the flag and the fix."""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import ConfigError, RequestError


def at_least(value: int | float | None, minimum: int | float, flag: str) -> None:
    """`value` None means the flag was left at its 'unset' default."""
    if value is not None and value < minimum:
        raise ConfigError(f"{flag} must be >= {minimum} (got {value})")


def output_dir(path: str | Path, flag: str) -> Path:
    """Create the directory now, so a file in the way or a read-only parent fails before hours of work."""
    out = Path(path)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"{flag} {out} is a file; give a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{flag} {out}: cannot create the directory ({exc.strerror})") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"{flag} {out}: directory is not writable")
    return out


def output_file(path: str | Path, flag: str) -> Path:
    """The file's directory must exist and be writable, and the path must not be a directory."""
    out = Path(path)
    if out.is_dir():
        raise ConfigError(f"{flag} {out} is a directory; give a file name")
    output_dir(out.parent if str(out.parent) else ".", flag)
    return out


def fits_context(prompt_tokens: int, max_new_tokens: int, context: int, model_context: int) -> None:
    """Refuse an answer the context cannot hold instead of cutting it short with finish 'length'."""
    if prompt_tokens + max_new_tokens > context:
        room = context - prompt_tokens
        fix = (f"lower --max-new-tokens to at most {room}" if room >= 1 else "shorten the prompt")
        if context < model_context and prompt_tokens < model_context:  # a prompt the model cannot hold: no help
            fix += f" or raise --max-length (the model holds {model_context})"
        raise RequestError(f"the prompt has {prompt_tokens} tokens and --max-new-tokens asks for {max_new_tokens} "
                           f"more, but the context holds {context}: {fix}")


def max_length_fits(max_length: int | None, model_context: int) -> None:
    """The engine would clamp a longer --max-length to the model's positions without a word."""
    if max_length is not None and max_length > model_context:
        raise ConfigError(f"--max-length {max_length} exceeds the model's context of {model_context} tokens "
                          f"(max_position_embeddings); use at most {model_context}")
