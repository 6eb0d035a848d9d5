"""Found by probing: how a stream its client left midway is counted."""

from __future__ import annotations

import pytest
import serving_harness
from serving_harness import MODEL

server = serving_harness.server  # the module's live server fixture


def responses(server, status: str) -> float:
    return server.metric(f'dflashkit_requests_total{{endpoint="/v1/completions",status="{status}"}}')


def test_a_stream_left_midway_counts_as_499_not_200(server):
    """The middleware counted the status of the response's start: a client that left mid-stream was a 200,
    though docs/serving.md counts "the client left before its whole answer" as 499."""
    body = {"model": MODEL, "prompt": "hi", "max_tokens": 200, "temperature": 0}
    if server.http.post("/v1/completions", json=body).json()["choices"][0]["finish_reason"] != "length":
        pytest.skip("the random model ends this answer early")
    ok, gone = responses(server, "200"), responses(server, "499")
    server.gen.delay = 0.02  # 200 tokens now take seconds: the client surely leaves first
    try:
        with server.http.stream("POST", "/v1/completions", json={**body, "stream": True}) as r:
            lines = r.iter_lines()
            assert [next(lines) for _ in range(4)]
        server.wait_idle(timeout=5)
    finally:
        server.gen.delay = 0.0
    assert responses(server, "499") == gone + 1 and responses(server, "200") == ok
    whole = list(server.openai().completions.create(model=MODEL, prompt="hi", max_tokens=3, stream=True))
    assert whole and responses(server, "200") == ok + 1  # a stream read to its end is still a 200
