"""Bench test fixtures: an isolated cache and `datasets` made unimportable."""

from __future__ import annotations

import sys

import pytest


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path, monkeypatch):
    """Every test gets its own dflashkit cache, so no cached prompts leak in or out."""
    monkeypatch.setenv("DFLASHKIT_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture
def offline(monkeypatch):
    """`import datasets` fails, as on a machine without the package (or network)."""
    monkeypatch.setitem(sys.modules, "datasets", None)
