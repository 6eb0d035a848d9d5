"""Backends: `local` (our engine, AR vs DFlash), `hf` (transformers generate) and `openai` (any server)."""

from __future__ import annotations

from ..errors import BenchError
from .base import Backend

NAMES = ("local", "hf", "openai")


def make_backend(name: str, **options) -> Backend:
    """Build a backend by name; options are the CLI's (model, draft, device, dtype, block_size, base_url ...)."""
    if name == "local":
        from .local import LocalBackend

        return LocalBackend(model=options.get("model"), draft=options.get("draft"), device=options.get("device"),
                            dtype=options.get("dtype"), block_size=options.get("block_size"),
                            modes=options.get("modes") or ("ar", "dflash"), max_length=options.get("max_length"),
                            compile=bool(options.get("compile")), draft_vocab=options.get("draft_vocab"))
    if name == "hf":
        from .hf import HFBackend

        return HFBackend(model=options.get("model"), device=options.get("device"), dtype=options.get("dtype"))
    if name == "openai":
        from .openai_api import OpenAIBackend

        if not options.get("base_url"):
            raise BenchError("--backend openai needs --base-url (e.g. http://127.0.0.1:8000/v1)")
        return OpenAIBackend(base_url=options["base_url"], model=options.get("model"),
                             api_key=options.get("api_key"), timeout=options.get("timeout") or 600.0)
    raise BenchError(f"unknown backend '{name}': choose from {', '.join(NAMES)}")


__all__ = ["Backend", "make_backend", "NAMES"]
