"""The openai backend against a stub server on 127.0.0.1: streaming, usage, DFlash fields, errors."""

from __future__ import annotations

import json
import socket

import pytest
from openai_stub import StubServer

from dflashkit.bench.backends.openai_api import OpenAIBackend, normalize_base_url
from dflashkit.bench.errors import BenchError
from dflashkit.bench.metrics import summarize
from dflashkit.bench.runner import run_suite
from dflashkit.bench.samples import Sample
from dflashkit.cli.main import main

SAMPLES = [Sample("a", ["first?", "second?"]), Sample("b", ["alone?"]), Sample("c", ["x?"])]


@pytest.mark.parametrize("placement", ["chunk", "usage", "mean"])
def test_streamed_requests_are_recorded_with_dflash_stats(placement):
    with StubServer(dflash=placement) as server:
        backend = OpenAIBackend(server.url)
        runs = run_suite(backend, SAMPLES, [2], 16, warmup=1, progress=False)
        backend.close()
    (run,) = runs
    assert backend.model == "stub-model"  # taken from /v1/models
    assert [(r.sample_id, r.turn) for r in run.records] == [("a", 0), ("a", 1), ("b", 0), ("c", 0)]
    for r in run.records:
        assert r.error is None and r.ttft_s is not None and r.ttft_s <= r.latency_s
        assert (r.prompt_tokens, r.completion_tokens, r.finish_reason) == (11, 6, "stop")
    expected_tau = 2.5 if placement == "mean" else 2.0
    assert summarize(run)["acceptance_length"] == pytest.approx(expected_tau)
    if placement != "mean":
        assert run.records[0].acceptance_lengths == [3, 2, 1]
    measured = [r for r in server.requests if not r["messages"][0]["content"].startswith(("Count", "Write"))]
    assert len(server.requests) - len(measured) == 2  # warm-up: one round of `concurrency` requests
    second = next(r for r in measured if len(r["messages"]) == 3)
    assert second["messages"][1] == {"role": "assistant", "content": "reply1 to you"}
    assert second["stream"] is True and second["max_tokens"] == 16 and second["temperature"] == 0.0


def test_api_key_is_sent_and_a_missing_one_is_explained():
    with StubServer(api_key="sekrit") as server:
        with pytest.raises(BenchError, match="--api-key"):
            OpenAIBackend(server.url).setup([1])
        backend = OpenAIBackend(server.url + "/v1/", api_key="sekrit")
        runs = run_suite(backend, SAMPLES[1:2], [1], 4, warmup=0, progress=False)
        backend.close()
    assert runs[0].records[0].error is None


def test_unreachable_server_is_a_clear_error():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()  # nothing listens there now
    with pytest.raises(BenchError, match="cannot reach an OpenAI-compatible server"):
        OpenAIBackend(f"http://127.0.0.1:{port}").setup([1])


def test_server_errors_are_recorded_and_all_failing_stops_the_run():
    with StubServer(fail=True) as server:
        with pytest.raises(BenchError, match="every request failed.*HTTP 500"):
            run_suite(OpenAIBackend(server.url), SAMPLES, [1], 4, warmup=0, progress=False)


def test_base_url_normalisation():
    assert normalize_base_url("http://h:1") == "http://h:1/v1"
    assert normalize_base_url("http://h:1/v1/") == "http://h:1/v1"
    with pytest.raises(BenchError, match="http://"):
        normalize_base_url("h:1")


def test_cli_against_the_stub(tmp_path, capsys):
    prompts = tmp_path / "p.jsonl"
    prompts.write_text(json.dumps({"prompt": "hi"}) + "\n" + json.dumps({"turns": ["a", "b"]}) + "\n")
    with StubServer() as server:
        code = main(["bench", "--backend", "openai", "--base-url", server.url, "--dataset", str(prompts),
                     "--concurrency", "1,2", "--max-new-tokens", "8", "--output", str(tmp_path / "out"),
                     "--no-progress", "--api-key", "not-recorded"])
    assert code == 0
    (path,) = (tmp_path / "out").glob("openai-p-*.json")
    report = json.loads(path.read_text())
    assert report["backend_info"]["base_url"] == server.url + "/v1"
    assert report["models"]["target"] == "stub-model"
    assert report["acceptance_length"] == pytest.approx(2.0) and report["speedup"] is None
    assert "not-recorded" not in path.read_text()
    assert (tmp_path / "out" / (path.stem + "-throughput.png")).is_file()
