"""Shared fixtures; the tiny-model helpers live in tiny_models.py."""

from __future__ import annotations

import pytest

from tiny_models import FAMILIES, build_tiny


@pytest.fixture(scope="module", params=FAMILIES)
def family_target(request):
    target, reference = build_tiny(request.param)
    return request.param, target, reference
