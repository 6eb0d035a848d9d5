"""The GPU job scripts' control flow, with a stand-in `python` that records each dflashkit command and writes the
files the next phase reads: a broken script would otherwise first show on a lent GPU, costing its minutes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

FAKE_PYTHON = r'''#!/usr/bin/env bash
# -m dflashkit.cli.main CMD ...: record the command, write what it would write; anything else: the real python
if [[ "$1" != "-m" || "$2" != "dflashkit.cli.main" ]]; then exec "$REAL_PYTHON" "$@"; fi
shift 2
echo "$*" >> "$CALLS"
cmd=$1; shift
out=""; prev=""
for a in "$@"; do [[ $prev == "--out" ]] && out=$a; prev=$a; done
case $cmd in
  datagen) mkdir -p "$out"; echo '{}' > "$out/datagen.json"; echo '{"datagen": {"rows": 1}}' ;;
  train) mkdir -p "$out/draft"; echo '{"event": "done", "step": 1}' > "$out/log.jsonl"
         echo '{}' > "$out/train_config.json" ;;
  eval) echo '{"tau": 1.0}' > "$out" ;;
esac
'''


@pytest.fixture
def fake_env(tmp_path):
    if shutil.which("bash") is None:
        pytest.skip("needs bash")
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "python"
    fake.write_text(FAKE_PYTHON)
    fake.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "REAL_PYTHON": sys.executable,
           "CALLS": str(tmp_path / "calls.txt"), "TARGET": str(tmp_path / "target"), "PROMPTS": "p.jsonl",
           "WORK": str(tmp_path / "work")}
    return env, tmp_path


def _calls(tmp_path: Path) -> list[str]:
    return (tmp_path / "calls.txt").read_text().splitlines()


def test_train_smollm2_with_corpus_answers_trains_on_both(fake_env):
    env, tmp = fake_env
    done = subprocess.run(["bash", "scripts/train_smollm2.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "CORPUS": "1", "OUT": str(tmp / "out")}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = _calls(tmp)
    assert [c.split()[0] for c in calls] == ["datagen", "datagen", "train", "eval"]
    corpus = next(c for c in calls if "--answers corpus" in c)
    assert f"--out {tmp}/work/corpus" in corpus and "--prompts p.jsonl" in corpus
    train = next(c for c in calls if c.startswith("train"))
    assert f"--data {tmp}/work/data {tmp}/work/corpus --out" in train
    assert (tmp / "out" / "summary.txt").is_file() and (tmp / "out" / "corpus_datagen.json").is_file()


def test_compare_corpus_labels_trains_arm_a_without_and_arm_b_with_the_corpus(fake_env):
    env, tmp = fake_env
    report = tmp / "report.txt"
    done = subprocess.run(["bash", "scripts/compare_corpus_labels.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "OUT": str(tmp / "cmp"), "REPORT": str(report)}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    calls = _calls(tmp)
    assert [c.split()[0] for c in calls] == ["datagen", "datagen", "train", "eval", "train", "eval"]
    train_a, train_b = [c for c in calls if c.startswith("train")]
    assert f"--data {tmp}/work/data --out {tmp}/work/run_A" in train_a and "--time-budget-s 420" in train_a
    assert f"--data {tmp}/work/data {tmp}/work/corpus --out {tmp}/work/run_B" in train_b
    text = report.read_text()
    assert "== A" in text and "== B" in text and text.count('"tau": 1.0') == 2
    assert json.loads((tmp / "cmp" / "B" / "tau.json").read_text()) == {"tau": 1.0}


def test_train_smollm2_warms_the_kernels_during_datagen_with_the_real_runs_shapes(fake_env):
    env, tmp = fake_env
    done = subprocess.run(["bash", "scripts/train_smollm2.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**env, "WARM": "1", "LAYERS": "3", "BATCH": "4", "MAX_LEN": "256",
                               "OUT": str(tmp / "out")}, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "kernel warm-up done" in done.stdout
    calls = _calls(tmp)
    assert sorted(c.split()[0] for c in calls) == ["datagen", "eval", "train", "train"]
    warm = next(i for i, c in enumerate(calls) if f"--out {tmp}/work/warm-run" in c)
    real = next(i for i, c in enumerate(calls) if f"--out {tmp}/work/run " in c)
    assert warm < real  # training waits for the warm-up
    for flag in ("--num-layers 3", "--batch-size 4", "--anchors 128", "--max-len 256", "--attention auto"):
        assert flag in calls[warm] and flag in calls[real]
    from dflashkit.training.dataset import SequenceData

    rows = SequenceData([tmp / "work" / "warm-data"], max_len=256)
    assert len(rows) == 4 * 40 and int(rows.lengths.max()) <= 256 and rows.max_token < 8192


def test_train_smollm2_warm_up_stays_off_without_a_gpu_or_a_datagen(fake_env):
    env, tmp = fake_env
    bare = {k: v for k, v in env.items() if k != "WARM"}
    bare["PATH"] = f"{tmp / 'bin'}:/usr/bin:/bin"  # no nvidia-smi
    done = subprocess.run(["bash", "scripts/train_smollm2.sh"], cwd=ROOT, capture_output=True, text=True,
                          env={**bare, "OUT": str(tmp / "out")}, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert not any("warm-run" in c for c in _calls(tmp)) and "warm-up" not in done.stdout


def test_train_smollm2_continues_from_a_drafter_only_when_asked(fake_env):
    env, tmp = fake_env
    for init_draft, expected in (("", None), (str(tmp / "shipped"), f"--init-draft {tmp}/shipped --anchors")):
        (tmp / "calls.txt").unlink(missing_ok=True)
        done = subprocess.run(["bash", "scripts/train_smollm2.sh"], cwd=ROOT, capture_output=True, text=True,
                              env={**env, "WARM": "0", "INIT_DRAFT": init_draft, "OUT": str(tmp / "out")},
                              timeout=120)
        assert done.returncode == 0, done.stdout + done.stderr
        train = next(c for c in _calls(tmp) if c.startswith("train"))
        assert (expected in train) if expected else ("--init-draft" not in train)
