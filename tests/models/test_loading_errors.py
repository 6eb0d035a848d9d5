"""Loading a target: devices, broken GGUF files, missing tokenizers and hub failures are one-line ConfigErrors."""

from __future__ import annotations

import pytest
import torch
from tiny_models import tiny_hf

from dflashkit.errors import ConfigError
from dflashkit.models import loading


def test_resolve_device():
    assert loading.resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="unknown device 'gpu0'"):
        loading.resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no usable CUDA GPU"):
            loading.resolve_device("cuda:0")
        with pytest.raises(ConfigError, match="no usable CUDA GPU"):
            loading.resolve_dtype(None, "cuda")  # the auto dtype looks at the device first


def test_file_that_is_not_gguf(tmp_path, monkeypatch):
    pytest.importorskip("gguf")  # without it the error is "needs the 'gguf' package" (tested elsewhere)
    monkeypatch.setenv("DFLASHKIT_CACHE", str(tmp_path / "cache"))
    fake = tmp_path / "model.gguf"
    fake.write_bytes(b"not a gguf file at all")
    with pytest.raises(ConfigError, match="could not read .*model.gguf as a GGUF model"):
        loading.load_target(str(fake), device="cpu")


def test_weights_without_a_tokenizer(tmp_path):
    tiny_hf("llama", dtype=torch.float32).save_pretrained(tmp_path / "target")
    with pytest.raises(ConfigError, match="could not load the tokenizer of .*save the tokenizer"):
        loading.load_target(str(tmp_path / "target"), device="cpu")


def test_hub_failure_is_one_line(monkeypatch):
    import huggingface_hub

    def offline(*args, **kwargs):
        raise OSError("Cannot reach the hub.\nAn error happened while trying to locate the files.\nCheck your network.")

    monkeypatch.setattr(huggingface_hub, "snapshot_download", offline)
    with pytest.raises(ConfigError) as info:
        loading.resolve_dir("someorg/somemodel", ("*.json",))
    assert "\n" not in str(info.value) and "Cannot reach the hub" in str(info.value)
    assert "pass a local directory" in str(info.value)


def _tear(path):
    """Keep the first half of a file, as an interrupted download or copy does."""
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_torn_weights_are_one_line(tmp_path):
    """A half-written model.safetensors (target or drafter) ended in safetensors' own traceback."""
    from dflashkit import DFlashDraft, TargetModel
    from dflashkit.models.factory import random_draft

    model = tiny_hf("llama", dtype=torch.float32)
    random_draft(TargetModel(model), num_layers=1).save_pretrained(tmp_path / "draft")
    _tear(tmp_path / "draft" / "model.safetensors")
    with pytest.raises(ConfigError, match=r"could not read the weights .*model.safetensors .*is it complete"):
        DFlashDraft.from_pretrained(str(tmp_path / "draft"))
    model.save_pretrained(tmp_path / "target")
    _tear(tmp_path / "target" / "model.safetensors")
    with pytest.raises(ConfigError, match="could not load target model from .*target"):
        loading.load_target(str(tmp_path / "target"), device="cpu")


def test_a_drafter_given_as_the_target_is_named(tmp_path):
    """--model with a drafter's directory loaded a random model of its model_type (qwen3) and a tokenizer of no
    tokens; the only error was 'empty prompt'."""
    from dflashkit import TargetModel
    from dflashkit.models.factory import random_draft

    random_draft(TargetModel(tiny_hf("llama", dtype=torch.float32)), num_layers=1).save_pretrained(tmp_path / "d")
    with pytest.raises(ConfigError, match="holds a DFlash drafter, not a target model: pass it as --draft"):
        loading.load_target(str(tmp_path / "d"), device="cpu")
