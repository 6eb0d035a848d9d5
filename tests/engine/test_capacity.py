"""Generator sizes: zero slots would queue requests forever; a context under 2 tokens holds no answer."""

from __future__ import annotations

import pytest
from tiny_models import build_tiny

from dflashkit import Generator
from dflashkit.errors import ConfigError


@pytest.mark.parametrize("kwargs, match", [
    ({"max_batch": 0}, "max_batch .* must be >= 1"),
    ({"max_batch": -2}, "max_batch .* must be >= 1"),
    ({"max_length": 0}, "max_length must be >= 2"),  # was read as 'unset' (4096)
    ({"max_length": -5}, "max_length must be >= 2"),
])
def test_bad_capacity_rejected(kwargs, match):
    target, _ = build_tiny("llama")
    with pytest.raises(ConfigError, match=match):
        Generator(target, None, **kwargs)
