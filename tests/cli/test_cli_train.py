"""`dflashkit train`: config files with wrong types, missing data, and a resume under other settings."""

from __future__ import annotations

import json

import pytest
import torch
from clikit import run_cli

from dflashkit.training.checkpoint import STATE, checkpoint_dir
from dflashkit.training.train_config import TrainConfig


@pytest.fixture
def data(tmp_path):
    from dflashkit.training.shards import Row, shard_path, write_shard

    path = tmp_path / "data"
    path.mkdir()
    write_shard(shard_path(path, 0), [Row([1, 2, 3, 4], 2)], complete=True)
    return path


def train(capsys, *flags):
    return run_cli(capsys, "train", "--device", "cpu", "--target", "/nonexistent", *flags)


@pytest.mark.parametrize("raw, message", [
    ({"lr": "1e-3"}, "lr must be a number, got '1e-3'"),
    ({"resume": "no"}, "resume must be true or false"),  # a non-empty string read as true
    ({"batch_size": 2.5}, "batch_size must be an integer"),
    ({"data": "dir"}, "data must be a list of strings"),  # was iterated letter by letter
    ({"target_layer_ids": [1, "5"]}, "target_layer_ids must be a list of integers or null"),
])
def test_config_json_with_wrong_types(capsys, tmp_path, data, raw, message):
    path = tmp_path / "train.json"
    path.write_text(json.dumps(raw))
    code, err = train(capsys, "--config", str(path), *(() if "data" in raw else ("--data", str(data))))
    assert code == 2 and message in err


def test_config_json_that_is_not_an_object(capsys, tmp_path, data):
    path = tmp_path / "train.json"
    path.write_text("[1, 2]")
    code, err = train(capsys, "--config", str(path), "--data", str(data))
    assert code == 2 and "must be a JSON object" in err


@pytest.mark.parametrize("flags, message", [
    (("--lr", "-1"), "lr must be > 0"),
    (("--epochs", "0"), "epochs must be > 0"),  # ran one step
    (("--lr", "inf"), "lr must be > 0 and finite"),  # trained NaN weights to the end
    (("--weight-decay", "nan"), "weight_decay must be >= 0 and finite"),  # NaN passed the '< 0' check
    (("--export-dtype", "fp8"), "export_dtype: unknown dtype 'fp8'"),  # failed after the last step
    (("--device", "foo"), "unknown device 'foo'"),
    (("--target-layer-ids", "1,x"), "expected comma-separated layer numbers"),
    (("--eval-prompts", "/nonexistent.jsonl"), "--eval-prompts /nonexistent.jsonl: file not found"),  # after load
    (("--max-len", "-5"), "max_len must be >= 2"),  # a negative slice: trained on rows cut short at the end
    (("--max-len", "0"), "max_len must be >= 2"),  # 'no sequence with a response', after the target loaded
])
def test_bad_flags_fail_before_loading(capsys, data, tmp_path, flags, message):
    code, err = train(capsys, "--data", str(data), "--out", str(tmp_path / "run"), *flags)
    assert code == 2 and message in err


def test_missing_data_and_out_that_is_a_file(capsys, tmp_path, data):
    code, err = train(capsys, "--data", str(tmp_path / "nope"))
    assert code == 2 and "training data not found" in err
    blocker = tmp_path / "run"
    blocker.write_text("")
    code, err = train(capsys, "--data", str(data), "--out", str(blocker))
    assert code == 2 and "is a file" in err


def test_data_directory_without_shards_fails_before_loading(capsys, tmp_path, data):
    """An empty --data directory (a datagen --out still empty, or its parent) was found only after the target
    loaded; beside another --data directory it was skipped without a word."""
    empty = tmp_path / "empty"
    empty.mkdir()
    for flags in ((str(empty),), (str(data), str(empty))):
        code, err = train(capsys, "--data", *flags, "--out", str(tmp_path / "run"))
        assert code == 2 and f"no data shards in ['{empty}']" in err


def test_resume_with_other_settings_is_refused(capsys, tmp_path, data):
    """A resumed run keeps its checkpoint's drafter and schedule; new shape flags were silently ignored."""
    out = tmp_path / "run"
    saved = TrainConfig(data=[str(data)], out=str(out), target="/nonexistent", num_layers=1, device="cpu")
    ckpt = checkpoint_dir(out, 10)
    ckpt.mkdir(parents=True)
    torch.save({"step": 10, "config": saved.to_dict()}, ckpt / STATE)
    code, err = train(capsys, "--data", str(data), "--out", str(out), "--num-layers", "2", "--block-size", "8")
    assert code == 2 and "'num_layers': (1, 2)" in err and "'block_size': (16, 8)" in err and "--no-resume" in err
