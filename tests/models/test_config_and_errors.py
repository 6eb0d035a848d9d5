"""Published config round trip, and bad input answered with clear errors (never a crash or a hang)."""

from __future__ import annotations

import json

import pytest
import torch

from tiny_models import build_tiny
from dflashkit import DFlashDraft, DraftConfig, Generator, SamplingParams
from dflashkit.errors import ConfigError, ModelMismatchError, RequestError
from dflashkit.models.factory import draft_config_for, random_draft

PUBLISHED = {  # the shape of z-lab/Qwen3-8B-DFlash-b16's config.json (sizes shrunk)
    "architectures": ["DFlashDraftModel"], "model_type": "qwen3", "hidden_size": 64, "intermediate_size": 96,
    "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2, "head_dim": 16,
    "vocab_size": 96, "rms_norm_eps": 1e-6, "rope_theta": 1000000, "max_position_embeddings": 40960,
    "block_size": 16, "num_target_layers": 6, "tie_word_embeddings": False,
    "dflash_config": {"target_layer_ids": [1, 3], "mask_token_id": 95}, "attention_bias": False,
    "torch_dtype": "bfloat16", "use_sliding_window": False,
}


def test_published_config_round_trip(tmp_path):
    cfg = DraftConfig.from_dict(PUBLISHED)
    assert cfg.target_layer_ids == [1, 3] and cfg.mask_token_id == 95 and cfg.block_size == 16
    out = cfg.to_dict()
    for key, value in PUBLISHED.items():
        assert out[key] == value, key
    cfg.save(tmp_path / "config.json")
    assert DraftConfig.from_file(tmp_path / "config.json").to_dict() == out


def test_default_target_layer_ids_spread():
    cfg = DraftConfig.from_dict({**PUBLISHED, "num_target_layers": 36, "num_hidden_layers": 5,
                                 "dflash_config": {"mask_token_id": 1}})
    assert cfg.target_layer_ids == [1, 9, 17, 25, 33]  # evenly from 1 to L-3, as the published 8B drafter


@pytest.mark.parametrize("change,match", [
    ({"dflash_config": {"target_layer_ids": [1, 6], "mask_token_id": 1}}, "out of range"),
    ({"dflash_config": {"target_layer_ids": [1]}}, "mask_token_id"),
    ({"num_attention_heads": 3}, "multiple"),
    ({"block_size": 1}, "block_size"),
    ({"layer_types": ["sliding_attention", "full_attention"]}, "sliding_window"),
    ({"hidden_size": "64"}, "hidden_size must be an integer"),  # hand-edited configs: was a torch TypeError
    ({"block_size": None}, "block_size must be an integer"),
    ({"rms_norm_eps": "1e-6"}, "rms_norm_eps must be a number"),
    ({"dflash_config": {"target_layer_ids": "13", "mask_token_id": 1}}, "list of integers"),  # was read as [1, 3]
])
def test_bad_config_rejected(change, match):
    with pytest.raises(ConfigError, match=match):
        DraftConfig.from_dict({**PUBLISHED, **change})


def test_missing_files_and_bad_json(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        DFlashDraft.from_pretrained(tmp_path / "nope")
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        DFlashDraft.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(PUBLISHED))
    with pytest.raises(ConfigError, match="safetensors"):
        DFlashDraft.from_pretrained(tmp_path)


def test_weights_not_matching_config(tmp_path):
    target, _ = build_tiny("llama")
    random_draft(target, num_layers=2).save_pretrained(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["num_hidden_layers"] = 3
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="missing"):
        DFlashDraft.from_pretrained(tmp_path)


def test_save_load_round_trip_bitwise(tmp_path):
    target, _ = build_tiny("llama")
    draft = random_draft(target, num_layers=2, seed=3)
    draft.save_pretrained(tmp_path)
    loaded = DFlashDraft.from_pretrained(tmp_path)
    for (k, a), (_, b) in zip(draft.state_dict().items(), loaded.state_dict().items()):
        assert torch.equal(a, b), k


@pytest.mark.parametrize("field,value,match", [
    ("hidden_size", 32, "hidden_size"),
    ("vocab_size", 50, "vocab"),
    ("num_target_layers", 8, "layers"),
])
def test_drafter_target_mismatch(field, value, match):
    target, _ = build_tiny("llama")
    cfg = draft_config_for(target)
    setattr(cfg, field, value)
    if field == "num_target_layers":
        cfg.target_layer_ids = [1, 2]
    draft = DFlashDraft(cfg).to(torch.float64)
    with pytest.raises(ModelMismatchError, match=match):
        Generator(target, draft)


@pytest.mark.parametrize("kwargs,match", [
    ({"temperature": -1.0}, "temperature"),
    ({"temperature": float("nan")}, "temperature"),
    ({"top_p": 0.0}, "top_p"),
    ({"top_p": 1.5}, "top_p"),
    ({"top_k": -3}, "top_k"),
    ({"max_new_tokens": 0}, "max_new_tokens"),
    ({"max_new_tokens": 2.5}, "max_new_tokens"),
    ({"stop": [""]}, "stop"),
])
def test_invalid_sampling_parameters(kwargs, match):
    with pytest.raises(RequestError, match=match):
        SamplingParams(**kwargs)


def test_numpy_scalars_are_numbers():
    """Settings read from numpy (a config array, np.random seeds) were refused: 'invalid seed=np.int64(3): must be an
    integer'. They are taken as the Python numbers they are; bools, floats for integers and strings still are not."""
    import numpy as np

    p = SamplingParams(max_new_tokens=np.int64(5), temperature=np.float32(0.5), top_p=np.float16(0.5),
                       top_k=np.int32(3), seed=np.uint64(2**64 - 1), stop_token_ids=[np.int64(2)])
    assert (p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.seed, p.stop_token_ids) == (5, 0.5, 0.5, 3,
                                                                                            2**64 - 1, [2])
    assert all(type(v) in (int, float) for v in (p.max_new_tokens, p.temperature, p.top_p, p.top_k, p.seed,
                                                 *p.stop_token_ids))
    for bad in ({"seed": True}, {"top_k": np.float32(2)}, {"max_new_tokens": np.int64(0)}, {"temperature": "0.5"},
                {"stop_token_ids": [np.int64(-1)]}):
        with pytest.raises(RequestError):
            SamplingParams(**bad)


def test_bad_requests():
    target, _ = build_tiny("llama")
    gen = Generator(target, random_draft(target), max_batch=1, max_length=32)
    with pytest.raises(RequestError, match="empty prompt"):
        gen.add_request([])
    with pytest.raises(RequestError, match="context holds 32"):
        gen.add_request(list(range(40)))
    with pytest.raises(RequestError, match="vocabulary"):
        gen.add_request([1, 2, 10_000])
    with pytest.raises(RequestError, match="block_size"):
        Generator(target, random_draft(target, block_size=8), block_size=9)
    with pytest.raises(RequestError, match="messages"):
        gen.chat_prompt([])
    assert not gen.has_work()  # rejected requests leave nothing behind
