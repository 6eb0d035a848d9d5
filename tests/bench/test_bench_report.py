"""The CLI end to end on a fake engine: JSON report keys, PNG files, table, compare, and clean errors."""

from __future__ import annotations

import json

import pytest
from benchkit import FakeGenerator

import dflashkit.bench.backends.local as local
from dflashkit.cli.main import main

PNG = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def fake_engine(monkeypatch):
    gen = FakeGenerator()
    monkeypatch.setattr(local, "_load", lambda *args: gen)
    return gen


def bench(tmp_path, *extra) -> tuple[int, list]:
    code = main(["bench", "--backend", "local", "--dataset", "mt-bench", "--num-prompts", "3", "--max-new-tokens",
                 "7", "--output", str(tmp_path / "out"), "--no-progress", *extra])
    return code, sorted((tmp_path / "out").iterdir()) if (tmp_path / "out").exists() else []


def test_report_json_and_plots(fake_engine, offline, tmp_path, capsys):
    code, files = bench(tmp_path, "--concurrency", "1,2")
    assert code == 0
    reports = [f for f in files if f.suffix == ".json"]
    assert len(reports) == 1 and reports[0].name.startswith("local-mt-bench-")
    report = json.loads(reports[0].read_text())
    for key in ("schema", "backend", "dataset", "dataset_source", "models", "settings", "environment", "speedup",
                "tokens_per_s", "acceptance_length", "by_concurrency", "summaries", "runs"):
        assert key in report, key
    for key in ("dflashkit", "torch", "transformers", "device_name", "git_commit", "python"):
        assert key in report["environment"], key
    assert report["settings"]["concurrency"] == [1, 2] and report["settings"]["max_new_tokens"] == 7
    assert "api_key" not in report["settings"]
    assert report["acceptance_length"] == pytest.approx(7 / 3)  # steps of 3, 3, 1
    assert isinstance(report["speedup"], float)
    assert report["models"]["draft"] == "fake-draft"
    first = report["runs"][0]["requests"][0]
    for key in ("sample_id", "turn", "prompt_tokens", "completion_tokens", "latency_s", "ttft_s",
                "acceptance_lengths", "text"):
        assert key in first, key
    assert len(report["runs"]) == 4 and all(len(r["requests"]) == 6 for r in report["runs"])  # 3 samples x 2 turns
    pngs = [f for f in files if f.suffix == ".png"]
    assert {p.name.rsplit("-", 1)[1] for p in pngs} == {"acceptance.png", "throughput.png", "speedup.png"}
    assert all(p.read_bytes()[:8] == PNG for p in pngs)
    out = capsys.readouterr().out
    assert "tok/s" in out and "dflash" in out and "identical to AR on 100%" in out


def test_single_concurrency_draws_only_the_histogram(fake_engine, offline, tmp_path):
    code, files = bench(tmp_path, "--mode", "dflash")
    assert code == 0
    assert [f.name.rsplit("-", 1)[1] for f in files if f.suffix == ".png"] == ["acceptance.png"]
    report = json.loads(next(f for f in files if f.suffix == ".json").read_text())
    assert report["speedup"] is None and report["mode"] == "dflash"


def test_compare_prints_both_runs(fake_engine, offline, tmp_path, capsys):
    bench(tmp_path)
    bench(tmp_path, "--max-new-tokens", "9")
    a, b = sorted((tmp_path / "out").glob("*.json"), key=lambda p: p.stat().st_mtime)
    capsys.readouterr()
    assert main(["compare", str(a), str(b), "--names", "before,after"]) == 0
    out = capsys.readouterr().out
    assert "tok/s before" in out and "tok/s after" in out and "max new tokens*" in out
    assert "dflash" in out and "differs between the runs" in out


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "nope"], "unknown dataset 'nope'"),
    (["--concurrency", "0"], "--concurrency must be >= 1"),
    (["--concurrency", "two"], "--concurrency takes positive integers"),
    (["--max-new-tokens", "0"], "--max-new-tokens must be >= 1"),
    (["--backend", "openai"], "needs --base-url"),
    (["--backend", "hf", "--concurrency", "4"], "batch 1"),
])
def test_bad_input_exits_2_with_a_message(fake_engine, offline, tmp_path, capsys, argv, message):
    code = main(["bench", "--output", str(tmp_path), "--num-prompts", "1", "--no-progress", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and "Traceback" not in err


def test_compare_rejects_files_that_are_not_reports(tmp_path, capsys):
    other = tmp_path / "other.json"
    other.write_text("{}")
    assert main(["compare", str(other), str(tmp_path / "absent.json")]) == 2
    assert "not a `dflashkit bench` report" in capsys.readouterr().err


def test_compare_lines_up_two_single_mode_runs():
    from dflashkit.bench.compare import render_comparison
    from dflashkit.bench.records import RequestRecord, RunResult
    from dflashkit.bench.report import build_report

    def report(mode: str, tokens: int) -> dict:
        record = RequestRecord("s", 0, 5, tokens, 1.0, 0.1)
        return build_report(backend=mode, dataset="d", source="x", settings={}, info={},
                            runs=[RunResult(mode, 1, 1.0, [record])])

    text = render_comparison(report("hf", 10), report("openai", 30), "base", "ours")
    row = next(line for line in text.splitlines() if line.startswith("hf vs openai"))
    assert row.split()[3:7] == ["1", "10.0", "30.0", "3.00x"]


def test_differing_outputs_report_where_they_part():
    from dflashkit.bench.metrics import compare_modes
    from dflashkit.bench.records import RequestRecord, RunResult

    def run(mode, texts):
        return RunResult(mode, 1, 1.0, [RequestRecord(f"s{i}", 0, 3, 5, 1.0, 0.1, text=t) for i, t in enumerate(texts)])

    summaries = [{"tokens_per_s": 10.0, "latency_s_p50": 1.0}] * 2
    ar, same = run("ar", ["abcdef", "xyz", "hello world"]), run("dflash", ["abcdef", "xyz", "hello world"])
    assert compare_modes([ar, same], summaries)["1"] == {"speedup": 1.0, "latency_speedup": 1.0,
                                                        "identical_outputs": 1.0, "compared_outputs": 3,
                                                        "differing_agree_chars_p50": None}
    parted = run("dflash", ["abcdXX", "q", "hello world"])  # part after 4 characters and at the first
    cmp = compare_modes([ar, parted], summaries)["1"]
    assert cmp["identical_outputs"] == pytest.approx(1 / 3) and cmp["differing_agree_chars_p50"] == 2.0


def test_a_later_turn_after_differing_answers_is_not_compared():
    """Turn 2 follows each mode's own turn-1 answer: after a difference the prompts differ, so no comparison."""
    from dflashkit.bench.metrics import compare_modes
    from dflashkit.bench.records import RequestRecord, RunResult

    def run(mode, texts):  # samples a, b with two turns each; records listed in another order per mode
        recs = [RequestRecord(sid, turn, 3, 5, 1.0, 0.1, text=t) for (sid, turn), t in texts.items()]
        return RunResult(mode, 1, 1.0, recs if mode == "ar" else recs[::-1])

    ar = run("ar", {("a", 0): "one", ("a", 1): "two", ("b", 0): "three", ("b", 1): "four"})
    dflash = run("dflash", {("a", 0): "one", ("a", 1): "two", ("b", 0): "thr33", ("b", 1): "other"})
    cmp = compare_modes([ar, dflash], [{"tokens_per_s": 1.0, "latency_s_p50": 1.0}] * 2)["1"]
    assert cmp["compared_outputs"] == 3 and cmp["identical_outputs"] == pytest.approx(2 / 3)
    assert cmp["differing_agree_chars_p50"] == 3.0


def test_sampled_runs_are_not_compared_with_ar_output(fake_engine, offline, tmp_path, capsys):
    """At T > 0 the table said 'DFlash output identical to AR on 0%', which reads as a broken engine; sampled
    answers are other draws from the same distribution."""
    code, _ = bench(tmp_path, "--temperature", "0.8", "--no-plots")
    out = capsys.readouterr().out
    assert code == 0 and "identical to AR" not in out
    assert "concurrency 1: sampled answers (T > 0) differ from AR's by design" in out
