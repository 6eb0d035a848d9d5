"""SIGTERM with requests in flight: those that finish within the grace get their answers; the rest end with the
documented 503 `shutting_down` (JSON for a whole answer, an error event for a stream), not uvicorn's plain-text
500 or a stream cut without a word."""

from __future__ import annotations

import json
import signal
import threading
import time

import httpx
from serving_harness import MODEL, live_server, slow_tiny_generator


def _chat(max_tokens: int, stream: bool = False) -> dict:
    return {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": max_tokens,
            "temperature": 0, "stream": stream}


def test_sigterm_lets_short_requests_finish_and_ends_the_rest_with_a_503():
    gen = slow_tiny_generator(0.05, max_length=512)
    results: dict[str, object] = {}
    with live_server(gen, graceful_s=1.0) as (url, app):
        client = httpx.Client(base_url=url, timeout=30)

        def whole(name: str, max_tokens: int) -> None:
            r = client.post("/v1/chat/completions", json=_chat(max_tokens))
            results[name] = (r.status_code, r.json())

        long_whole = threading.Thread(target=whole, args=("long", 400))
        long_whole.start()
        with client.stream("POST", "/v1/chat/completions", json=_chat(400, stream=True)) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data: "))
            assert "chat.completion.chunk" in first
            short = threading.Thread(target=whole, args=("short", 3))
            short.start()
            deadline = time.time() + 10
            while len(gen.sequences) < 3:  # all three in flight before the signal
                assert time.time() < deadline
                time.sleep(0.01)
            app.state.server.handle_exit(signal.SIGTERM, None)

            rest = [line[6:] for line in lines if line.startswith("data: ")]
            assert not app.state.engine.alive  # new requests (on a kept-alive connection) are refused
        short.join(10)
        long_whole.join(30)
    assert rest[-1] == "[DONE]"
    error = json.loads(rest[-2])["error"]
    assert error["code"] == "shutting_down" and error["type"] == "server_error"
    status, body = results["long"]
    assert status == 503 and body["error"]["code"] == "shutting_down"
    status, body = results["short"]
    assert status == 200 and body["choices"][0]["finish_reason"] == "length"
