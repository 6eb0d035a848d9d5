"""`dflashkit eval` and `bench`: bad sizes and unusable output paths fail before any model loads."""

from __future__ import annotations

import pytest
from clikit import run_cli, save_tiny_model

from dflashkit.cli.eval import _fit
from dflashkit.errors import ConfigError


@pytest.mark.parametrize("flags, message", [
    (("--batch-size", "0"), "--batch-size must be >= 1"),  # was a hang: no slot ever frees up
    (("--batch-size", "-1"), "--batch-size must be >= 1"),
    (("--block-size", "1"), "--block-size must be >= 2"),  # drafts nothing: tau 0 from no steps
    (("--block-size", "0"), "--block-size must be >= 2"),  # was read as 'unset'
    (("--max-length", "0"), "--max-length must be >= 2"),
])
def test_eval_rejects_bad_sizes(capsys, flags, message):
    code, err = run_cli(capsys, "eval", "--draft", "random", "--model", "/nonexistent", *flags)
    assert code == 2 and message in err


def test_eval_out_that_is_a_directory_fails_first(capsys, tmp_path):
    code, err = run_cli(capsys, "eval", "--draft", "random", "--model", "/nonexistent", "--out", str(tmp_path))
    assert code == 2 and "is a directory" in err


def test_eval_fit_cuts_long_prompts_out_loud(capsys):
    prompts = _fit([[1] * 10, [2] * 3], context=12, max_new_tokens=4, label="set turn 2")
    assert prompts == [[1] * 8, [2] * 3]
    assert "1 prompt(s) cut to their last 8 tokens" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="leaves no room"):
        _fit([[1]], context=12, max_new_tokens=12, label="x")


def test_bench_output_that_is_a_file_fails_before_the_run(capsys, tmp_path):
    blocker = tmp_path / "results"
    blocker.write_text("not a directory")
    code, err = run_cli(capsys, "bench", "--model", "/nonexistent", "--output", str(blocker))
    assert code == 2 and "--output" in err and "is a file" in err


def test_bench_mode_ar_needs_no_drafter(capsys, tmp_path):
    """`--mode ar` times plain decoding only: a target given without --draft was refused ('no drafter given')."""
    import json

    model = save_tiny_model(tmp_path / "target")
    code, err = run_cli(capsys, "bench", "--model", model, "--device", "cpu", "--mode", "ar", "--num-prompts", "1",
                        "--max-new-tokens", "2", "--warmup", "0", "--no-plots", "--no-progress",
                        "--output", str(tmp_path / "out"))
    assert code == 0, err
    (report,) = (tmp_path / "out").glob("*.json")
    report = json.loads(report.read_text())
    assert [run["mode"] for run in report["runs"]] == ["ar"]
    assert report["models"]["draft"] is None  # it said 'default', a drafter that was never loaded


@pytest.mark.parametrize("flags, message", [
    (("--timeout", "-1"), "--timeout must be a number of seconds > 0"),  # was a ValueError traceback from the socket
    (("--timeout", "0"), "--timeout must be a number of seconds > 0"),
    (("--timeout", "nan"), "--timeout must be a number of seconds > 0"),
    (("--temperature", "nan"), "--temperature must be a finite number >= 0"),
])
def test_bench_rejects_bad_numbers_before_the_run(capsys, tmp_path, flags, message):
    code, err = run_cli(capsys, "bench", "--backend", "openai", "--base-url", "http://127.0.0.1:9/v1",
                        "--output", str(tmp_path), *flags)
    assert code == 2 and message in err and "Traceback" not in err


def test_bench_help_names_each_default_once(capsys):
    """ArgumentDefaultsHelpFormatter added '(default: None)' after the help's own '(default: all)' and the like."""
    from dflashkit.cli.main import main

    with pytest.raises(SystemExit) as done:
        main(["bench", "--help"])
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert done.value.code == 0
    assert "(default: None)" not in text and "(default: False)" not in text
    assert "first N prompts of the dataset (default: all) --" in text
    assert "most tokens per answer (default: 256)" in text and "(default: 600.0)" in text


def test_eval_draft_that_is_a_train_run_directory_names_its_drafter(tmp_path):
    """`--draft RUN` (train's --out) said only 'draft config not found: RUN/config.json'; the drafter is RUN/draft."""
    from dflashkit.config import DraftConfig

    (tmp_path / "draft").mkdir()
    (tmp_path / "draft" / "config.json").write_text("{}")
    with pytest.raises(ConfigError, match=r"a `dflashkit train --out` directory: its drafter is .*draft"):
        DraftConfig.from_file(tmp_path / "config.json")
