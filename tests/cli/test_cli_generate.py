"""`dflashkit generate`: bad devices, answers the context cannot hold, and the mode the stats line names."""

from __future__ import annotations

import json

import pytest
import torch
from clikit import run_cli, save_tiny_model, tiny_generator_loader

GEN = ("generate", "--no-chat", "--no-stream")


@pytest.fixture
def tiny_load(monkeypatch):
    monkeypatch.setattr("dflashkit.api.load", tiny_generator_loader(max_positions=64))


def test_unknown_device_is_one_line_before_any_load(capsys):
    code, err = run_cli(capsys, "generate", "hi", "--device", "foo", "--model", "/nonexistent")
    assert code == 2 and "unknown device 'foo'" in err and "Traceback" not in err


@pytest.mark.parametrize("device", ["meta", "mps"])
def test_device_this_machine_cannot_run_is_one_line(capsys, device):
    """--device meta (no data) or mps on a machine without it got past the device check: a torch traceback after
    the load ('Cannot copy out of meta tensor', 'PyTorch is not linked with support for mps devices')."""
    if device == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has mps")
    code, err = run_cli(capsys, "generate", "hi", "--device", device, "--model", "/nonexistent")
    assert code == 2 and f"device '{device}'" in err and "Traceback" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_on_a_cpu_machine_says_so(capsys):
    code, err = run_cli(capsys, "generate", "hi", "--device", "cuda", "--model", "/nonexistent")
    assert code == 2 and "no usable CUDA GPU" in err and "--device cpu" in err


def test_answer_longer_than_the_context_is_refused(capsys, tiny_load):
    code, err = run_cli(capsys, *GEN, "hello", "--max-new-tokens", "100", "--max-length", "32")
    assert code == 2 and "context holds 32" in err and "at most 27" in err and "raise --max-length" in err
    code, err = run_cli(capsys, *GEN, "hello", "--max-new-tokens", "1000")
    assert code == 2 and "context holds 64" in err and "raise --max-length" not in err  # already the model's


def test_prompt_beyond_the_model_is_not_told_to_raise_max_length(capsys, tiny_load):
    """A prompt longer than the model's whole context was told to 'shorten the prompt or raise --max-length', and
    raising it then failed on the model's limit."""
    code, err = run_cli(capsys, *GEN, "x" * 80, "--max-new-tokens", "4", "--max-length", "32")
    assert code == 2 and "shorten the prompt" in err and "raise --max-length" not in err


def test_max_length_beyond_the_model_is_refused_not_clamped(capsys, tiny_load):
    code, err = run_cli(capsys, *GEN, "hello", "--max-new-tokens", "4", "--max-length", "100000")
    assert code == 2 and "exceeds the model's context of 64" in err


def test_block_size_one_stats_line(capfd, monkeypatch):
    """Block 1 drafts nothing: the stats say autoregressive, not a DFlash run with acceptance 0."""
    from dflashkit.cli.main import main

    monkeypatch.setattr("dflashkit.api.load", tiny_generator_loader(max_positions=64))
    assert main([*GEN, "hello", "--max-new-tokens", "3", "--block-size", "1", "--json"]) == 0
    stats = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert stats["mode"] == "autoregressive" and stats["completion_tokens"] == 3
    assert main([*GEN, "hello", "--max-new-tokens", "3", "--block-size", "4", "--json"]) == 0
    assert json.loads(capfd.readouterr().out.strip().splitlines()[-1])["mode"] == "dflash"


def test_autoregressive_needs_no_drafter(capfd, tmp_path):
    """Plain decoding of a target with no drafter given (not the embedded default): it was refused with 'no drafter
    given for this target', though --autoregressive decodes without one."""
    from dflashkit.cli.main import main

    model = save_tiny_model(tmp_path / "target")
    assert main([*GEN, "hello", "--model", model, "--device", "cpu", "--max-new-tokens", "3", "--json",
                 "--autoregressive"]) == 0
    stats = json.loads(capfd.readouterr().out.strip().splitlines()[-1])
    assert stats["mode"] == "autoregressive" and stats["completion_tokens"] == 3
    code, err = run_cli(capfd, *GEN, "hello", "--model", model, "--device", "cpu", "--max-new-tokens", "3")
    assert code == 2 and "no drafter given" in err  # DFlash still needs one


def test_output_piped_into_a_reader_that_leaves_is_no_traceback(tmp_path):
    """`dflashkit generate ... | head -c 5`: the streamed answer's next write raised BrokenPipeError (a traceback,
    then Python's 'Exception ignored' about stdout at exit)."""
    import os
    import subprocess
    import sys

    model = save_tiny_model(tmp_path / "target")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "dflashkit.cli.main", *GEN[:2], "hello", "--model", model,
                             "--draft", "random", "--device", "cpu", "--max-new-tokens", "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdout.close()  # before anything is written: every write meets a closed pipe
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141, err
    assert "Traceback" not in err and "BrokenPipeError" not in err


def test_one_shot_python_generate(tmp_path):
    """dflashkit.generate(): messages with chat=False ended in the tokenizer's ValueError after the model loaded."""
    import dflashkit
    from dflashkit.errors import RequestError

    model = save_tiny_model(tmp_path / "target")
    result = dflashkit.generate("hello", model, "random", chat=False, max_new_tokens=3)
    assert result.completion_tokens == 3 and result.finish_reason == "length"
    with pytest.raises(RequestError, match="chat=False takes the prompt as text"):
        dflashkit.generate([{"role": "user", "content": "hello"}], "/nonexistent", "random", chat=False)


def test_system_message_with_a_raw_prompt_is_refused_before_the_load(capsys):
    code, err = run_cli(capsys, *GEN, "hello", "--system", "be brief", "--model", "/nonexistent")
    assert code == 2 and "--system needs the chat template" in err and "Traceback" not in err


def test_seeded_sampling_keeps_one_block_size(capfd, monkeypatch):
    """The adaptive block size follows measured step times, and a step's block decides how many random numbers it
    draws: `generate --seed 3 --temperature 0.8` gave a different answer from one run to the next."""
    from dflashkit.cli.main import main

    loaded = []
    tiny = tiny_generator_loader(max_positions=64)
    monkeypatch.setattr("dflashkit.api.load", lambda *a, **kw: loaded.append(tiny(*a, **kw)) or loaded[-1])
    seeded = [*GEN, "hello", "--max-new-tokens", "12", "--temperature", "0.8", "--seed", "3"]
    assert main(seeded) == 0 and main(seeded) == 0
    first, second = (out for out in capfd.readouterr().out.splitlines() if not out.startswith("["))
    assert first == second
    assert [gen.controller.fixed for gen in loaded] == [4, 4]  # the drafter's block, whatever the step times
    assert main([*GEN, "hello", "--max-new-tokens", "3", "--temperature", "0.8"]) == 0  # unseeded: adaptive
    assert main([*GEN, "hello", "--max-new-tokens", "3", "--seed", "3"]) == 0  # greedy: the seed draws nothing
    assert [gen.controller.fixed for gen in loaded[2:]] == [None, None]


def test_one_shot_generate_checks_sampling_before_the_load():
    """dflashkit.generate(..., temperature=-1) loaded the model first (minutes for a large one), then refused it."""
    import dflashkit
    from dflashkit.errors import RequestError

    with pytest.raises(RequestError, match="invalid temperature=-1"):
        dflashkit.generate("hello", "/nonexistent", "random", temperature=-1)
    with pytest.raises(TypeError, match="max_tokens"):  # a misspelt setting, also before the load
        dflashkit.generate("hello", "/nonexistent", "random", max_tokens=5)


def test_one_shot_generate_keeps_one_block_size_for_a_seed(monkeypatch):
    """dflashkit.generate(..., seed=1, temperature=0.8) ran at the adaptive block size, which follows step times:
    the same seed gave another answer from one call to the next (as `generate --seed` did)."""
    import dflashkit

    loaded = []
    tiny = tiny_generator_loader(max_positions=64)
    monkeypatch.setattr("dflashkit.api.load", lambda *a, **kw: loaded.append(tiny(*a, **kw)) or loaded[-1])
    first, second = (dflashkit.generate("hello", chat=False, max_new_tokens=12, temperature=0.8, seed=1)
                     for _ in range(2))
    assert first.token_ids == second.token_ids
    dflashkit.generate("hello", chat=False, max_new_tokens=3, temperature=0.8)
    assert [gen.controller.fixed for gen in loaded] == [4, 4, None]
