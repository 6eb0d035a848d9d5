"""`dflashkit datagen`: bad sizes, unusable paths and prompt files fail fast and leave --out reusable."""

from __future__ import annotations

import json

import pytest
from clikit import run_cli


@pytest.fixture
def prompts(tmp_path):
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"tell me about topic {i}"}) + "\n" for i in range(3)))
    return path


def datagen(capsys, out, *flags):
    return run_cli(capsys, "datagen", "--out", str(out), "--keep-benchmarks", "--no-progress", "--device", "cpu",
                   *flags)


@pytest.mark.parametrize("flags, message", [
    (("--turns", "0"), "--turns must be >= 1"),
    (("--heldout", "-1"), "--heldout must be >= 0"),  # was a negative slice: all but one prompt held out
    (("--max-prompts", "0"), "--max-prompts must be >= 1"),  # was read as 'all'
    (("--batch-size", "0"), "--batch-size must be >= 1"),  # was a hang
    (("--shard-size", "0"), "--shard-size must be >= 1"),  # was a ZeroDivisionError
    (("--time-budget-s", "-5"), "--time-budget-s must be > 0"),
])
def test_bad_sizes(capsys, tmp_path, prompts, flags, message):
    code, err = datagen(capsys, tmp_path / "out", "--prompts", str(prompts), *flags)
    assert code == 2 and message in err


def test_out_that_is_a_file(capsys, tmp_path, prompts):
    blocker = tmp_path / "out"
    blocker.write_text("")
    code, err = datagen(capsys, blocker, "--prompts", str(prompts))
    assert code == 2 and "is a file" in err


def test_every_prompt_held_out_is_an_error(capsys, tmp_path, prompts):
    code, err = datagen(capsys, tmp_path / "out", "--prompts", str(prompts), "--heldout", "3")
    assert code == 2 and "went to --heldout 3" in err


@pytest.mark.parametrize("text, message", [
    ('{"prompt": "a fine prompt"}\n{"prompt": "cut off', "p.jsonl:2: not valid JSON"),
    ('["a fine prompt"]\n', "p.jsonl:1: expected a JSON object"),
])
def test_broken_prompt_files(capsys, tmp_path, text, message):
    path = tmp_path / "p.jsonl"
    path.write_text(text)
    code, err = datagen(capsys, tmp_path / "out", "--prompts", str(path))
    assert code == 2 and message in err and "Traceback" not in err


def test_json_that_is_not_an_array(capsys, tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"prompt": "one object"}\n')
    code, err = datagen(capsys, tmp_path / "out", "--prompts", str(path))
    assert code == 2 and "expected a JSON array" in err


def test_a_mistyped_model_does_not_claim_the_directory(capsys, tmp_path, prompts):
    """datagen.json (the resume settings) is written only once the model loaded."""
    out = tmp_path / "out"
    code, err = datagen(capsys, out, "--prompts", str(prompts), "--heldout", "0", "--model", str(tmp_path / "nope"))
    assert code == 2 and "not found" in err
    assert not (out / "datagen.json").exists()


def test_prompt_and_answer_beyond_the_model_context_is_refused():
    """The engine clamps its context to the model's positions; long answers would end early without a word."""
    from argparse import Namespace

    from dflashkit.cli.datagen import _check_context
    from dflashkit.errors import ConfigError

    args = Namespace(max_prompt_tokens=1024, max_new_tokens=512)
    _check_context(args, 1544)
    with pytest.raises(ConfigError, match="context of 256 tokens: lower them to a sum of at most 248"):
        _check_context(args, 256)


@pytest.mark.parametrize("flags, message", [
    (("--temperature", "-1"), "invalid temperature=-1.0"),
    (("--temperature", "1", "--top-p", "0"), "invalid top_p=0.0"),
])
def test_bad_sampling_fails_before_the_model_and_claims_nothing(capsys, tmp_path, prompts, flags, message):
    """These failed after the model loaded, and after datagen.json recorded them: the corrected command was then
    refused as 'other settings' for that --out."""
    out = tmp_path / "out"
    code, err = datagen(capsys, out, "--prompts", str(prompts), "--heldout", "0", "--model", str(tmp_path / "nope"),
                        *flags)
    assert code == 2 and message in err
    assert not (out / "datagen.json").exists()


def test_unreadable_settings_of_an_earlier_run(capsys, tmp_path, prompts):
    """A torn datagen.json in --out was a JSONDecodeError traceback."""
    out = tmp_path / "out"
    out.mkdir()
    (out / "datagen.json").write_text("{")
    code, err = datagen(capsys, out, "--prompts", str(prompts), "--heldout", "0")
    assert code == 2 and "datagen.json is unreadable" in err and "Traceback" not in err
