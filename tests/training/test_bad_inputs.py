"""Training inputs that are not what they claim: files that are not shards, prompt files that are not JSON."""

from __future__ import annotations

import pytest

from dflashkit.errors import ConfigError
from dflashkit.training.datagen import _throughput
from dflashkit.training.dataset import SequenceData
from dflashkit.training.prompts import load_conversations


def test_file_that_is_not_a_shard(tmp_path):
    fake = tmp_path / "shard-00000.safetensors"
    fake.write_bytes(b"not safetensors")
    with pytest.raises(ConfigError, match="not a readable `dflashkit datagen` shard"):
        SequenceData([tmp_path])


@pytest.mark.parametrize("name, text, match", [
    ("p.jsonl", '{"prompt": "first prompt"}\n\n{"prompt": "sec', "p.jsonl:3: not valid JSON"),
    ("p.jsonl", '["a list, not an object"]\n', "p.jsonl:1: expected a JSON object"),
    ("p.json", "plain text, one prompt a line\n", "expected a JSON array"),
])
def test_prompt_files_that_do_not_parse(tmp_path, name, text, match):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_conversations(str(path))


def test_throughput_of_a_run_shorter_than_the_rounding():
    """elapsed_s is rounded to 0.1 s for the summary; the rate must use the real time (was 4e9 tok/s)."""
    timing = {"admit_s": 0.01, "decode_s": 0.02, "steps": 3, "rows": 3}
    zero = dict.fromkeys(timing, 0)
    stats = {"response_tokens": 4, "elapsed_s": 0.0}
    assert _throughput(timing, zero, stats, elapsed=0.04)["answer_tok_per_s"] == 100
