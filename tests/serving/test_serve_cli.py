"""`dflashkit serve` as a real process on the embedded SmolLM2 (CPU): start, answer, stop."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import httpx
import pytest

pytestmark = pytest.mark.slow


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_serve_embedded_default_answers_a_chat():
    from openai import OpenAI

    port = free_port()
    cmd = [sys.executable, "-m", "dflashkit.cli.main", "serve", "--draft", "random", "--device", "cpu",
           "--port", str(port), "--max-batch", "2", "--max-length", "512", "--api-key", "smoke",
           "--log-level", "warning", "--warmup", "on"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 300  # the first load converts the GGUF (slow on a loaded 2-core machine)
        while True:
            assert proc.poll() is None, f"server exited: {proc.stdout.read()}"
            assert time.time() < deadline, "server did not come up in 300 s"
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        client = OpenAI(base_url=url + "/v1", api_key="smoke", max_retries=0, timeout=120)
        r = client.chat.completions.create(model="smollm2", temperature=0, max_tokens=16,
                                           messages=[{"role": "user", "content": "What is the capital of France?"}])
        assert r.choices[0].message.content.strip()
        assert r.usage.completion_tokens <= 16 and r.model_extra["dflash"]["steps"] >= 1
        assert "dflashkit_requests_total" in httpx.get(url + "/metrics").text
        proc.terminate()
        assert "warm-up stepped block sizes [1, 2, 4, 8, 16]" in proc.communicate(timeout=30)[0]
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
