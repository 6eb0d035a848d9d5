"""Dataset loaders: offline fallbacks from installed packages, the hub path (faked), the cache, errors."""

from __future__ import annotations

import sys
import types

import pytest

from dflashkit.bench.datasets import DATASETS, load_samples
from dflashkit.bench.errors import BenchError
from dflashkit.errors import DFlashError


def test_humaneval_offline_fallback_uses_installed_package(offline):
    samples, source = load_samples("humaneval")
    assert source.startswith("package:")
    assert len(samples) == 164
    first = samples[0]
    assert first.id == "HumanEval/0" and len(first.turns) == 1
    assert first.turns[0].startswith("Write a solution to the following problem and make sure that it passes the "
                                     "tests:\n```python\n")
    assert first.turns[0].endswith("\n```") and "def has_close_elements" in first.turns[0]


def test_mtbench_offline_fallback_has_80_two_turn_questions(offline):
    samples, source = load_samples("mt-bench")
    assert source.startswith("package:")
    assert len(samples) == 80
    assert all(len(s.turns) == 2 for s in samples)
    assert samples[0].id == "mt-bench-81"


@pytest.mark.parametrize("name", ["gsm8k", "math500", "mbpp"])
def test_dataset_without_fallback_names_what_to_install(offline, name):
    with pytest.raises(BenchError, match="pip install datasets") as info:
        load_samples(name)
    assert isinstance(info.value, DFlashError)  # the CLI prints it and exits 2


def test_unknown_dataset_lists_the_choices():
    with pytest.raises(BenchError, match="unknown dataset 'nope'.*gsm8k"):
        load_samples("nope")


def test_num_prompts_takes_the_first_n(offline):
    samples, _ = load_samples("mtbench", limit=3)  # alias
    assert [s.id for s in samples] == ["mt-bench-81", "mt-bench-82", "mt-bench-83"]
    with pytest.raises(BenchError, match="--num-prompts"):
        load_samples("mt-bench", limit=0)


HUB_ROWS = {
    "openai/gsm8k": [{"question": "What is 2+2?", "answer": "4"}],
    "HuggingFaceH4/MATH-500": [{"problem": "Solve x+1=2.", "unique_id": "test/algebra/1.json"}],
    "google-research-datasets/mbpp": [{"task_id": 11, "prompt": "Write a function to add."}],
    "HuggingFaceH4/mt_bench_prompts": [{"prompt": ["First?", "Second?"], "prompt_id": 81, "category": "writing"}],
    "openai/openai_humaneval": [{"task_id": "HumanEval/0", "prompt": "def f():\n"}],
}


@pytest.fixture
def fake_hub(monkeypatch):
    """A `datasets` module whose load_dataset serves HUB_ROWS and records its arguments."""
    calls = []

    def load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return list(HUB_ROWS[path])

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    return calls


def test_hub_ids_configs_and_splits(fake_hub):
    for name in DATASETS:
        load_samples(name)
    assert fake_hub == [("openai/gsm8k", "main", "test"), ("HuggingFaceH4/MATH-500", None, "test"),
                        ("openai/openai_humaneval", None, "test"),
                        ("google-research-datasets/mbpp", "sanitized", "test"),
                        ("HuggingFaceH4/mt_bench_prompts", None, "train")]


def test_prompt_formats_follow_the_paper_harness(fake_hub):
    reason = "\nPlease reason step by step, and put your final answer within \\boxed{}."
    assert load_samples("gsm8k")[0][0].turns == ["What is 2+2?" + reason]
    assert load_samples("math500")[0][0].turns == ["Solve x+1=2." + reason]
    assert load_samples("mbpp")[0][0].turns == ["Write a function to add."]
    assert load_samples("mt-bench")[0][0].turns == ["First?", "Second?"]


def test_hub_load_is_cached_and_then_works_offline(fake_hub, monkeypatch, isolated_cache):
    samples, source = load_samples("gsm8k")
    assert source == "hub:openai/gsm8k"
    assert (isolated_cache / "bench" / "gsm8k.jsonl").is_file()
    monkeypatch.setitem(sys.modules, "datasets", None)
    again, source = load_samples("gsm8k")
    assert source.startswith("cache:")
    assert [(s.id, s.turns) for s in again] == [(s.id, s.turns) for s in samples]


def test_hub_failure_falls_back_to_package(monkeypatch):
    def broken(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=broken))
    samples, source = load_samples("humaneval")
    assert source.startswith("package:") and len(samples) == 164
    with pytest.raises(BenchError, match="no network"):
        load_samples("gsm8k")
