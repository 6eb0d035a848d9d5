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
