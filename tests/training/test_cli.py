"""The train/datagen/eval commands parse into the values the library gets."""

from __future__ import annotations

import json

import pytest

from dflashkit.cli.main import build_parser
from dflashkit.cli.train import config_from_args
from dflashkit.errors import ConfigError
from dflashkit.training.train_config import TrainConfig


def test_train_flags_override_json_which_overrides_defaults(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"lr": 1e-4, "anchors": 64, "num_layers": 5}))
    args = build_parser().parse_args(["train", "--config", str(path), "--data", "d1", "d2", "--lr", "2e-3",
                                      "--target-layer-ids", "1,5,9", "--no-resume", "--time-budget-s", "60",
                                      "--loss-vocab", "-1", "--distill", "0.25"])
    cfg = config_from_args(args)
    assert cfg.lr == 2e-3 and cfg.anchors == 64 and cfg.num_layers == 5 and cfg.block_size == 16
    assert cfg.data == ["d1", "d2"] and cfg.target_layer_ids == [1, 5, 9] and cfg.resume is False
    assert cfg.time_budget_s == 60.0 and cfg.loss_vocab == -1 and cfg.distill == 0.25
    with pytest.raises(ConfigError, match="loss_vocab"):
        TrainConfig(data=["d"], loss_vocab=-2).validate()
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ConfigError, match="distill must be between 0 and 1"):
            TrainConfig(data=["d"], distill=bad).validate()


def test_unknown_json_keys_are_named(tmp_path):
    path = tmp_path / "train.json"
    path.write_text(json.dumps({"learning_rate": 1e-4}))
    with pytest.raises(ConfigError, match="learning_rate"):
        config_from_args(build_parser().parse_args(["train", "--config", str(path)]))


def test_datagen_and_eval_parse():
    args = build_parser().parse_args(["datagen", "--out", "x", "--max-prompts", "10", "--turns", "2"])
    assert args.max_prompts == 10 and args.turns == 2 and args.prompts == "sharegpt"
    assert args.sample_seed is None
    args = build_parser().parse_args(["datagen", "--out", "x", "--temperature", "0.8", "--sample-seed", "3"])
    assert args.sample_seed == 3 and args.seed == 0
    args = build_parser().parse_args(["eval", "--draft", "d", "--dataset", "humaneval", "--dataset", "p.jsonl"])
    assert args.dataset == ["humaneval", "p.jsonl"] and args.max_new_tokens == 256


def test_train_help_names_each_default_once_and_never_none(capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: None)" not in text and "spread evenly) (default" not in text
    assert "(default: 128)" in text  # --anchors keeps its own
