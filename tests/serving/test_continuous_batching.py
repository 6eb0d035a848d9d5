"""Continuous batching: concurrent answers equal the same requests run alone; departed clients free slots."""

from __future__ import annotations

import asyncio
import contextlib
import time

import httpx
import pytest
from serving_harness import API_KEY, MODEL, live_server, server, tiny_generator  # noqa: F401  (fixture)

from dflashkit.serving.engine_core import EngineCore
from dflashkit.serving.protocol import EngineRequest

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel"]


def mixed_requests(n: int) -> list[dict]:
    """Prompts of 1..40ish characters, answers of 1..60 tokens, chat and completions, half streamed."""
    out = []
    for i in range(n):
        text = " ".join(WORDS[j % len(WORDS)] for j in range(i % 7 + 1))[: 3 + 5 * (i % 9)]
        out.append({"chat": i % 3 != 0, "stream": i % 2 == 0, "text": text, "max_tokens": 1 + (i * 13) % 60})
    return out


async def ask(client, req: dict) -> tuple[str, str, int]:
    """-> (text, finish_reason, completion_tokens), whichever way the request is sent."""
    common = dict(model=MODEL, max_tokens=req["max_tokens"], temperature=0)
    if req["stream"]:
        common.update(stream=True, stream_options={"include_usage": True})
    if req["chat"]:
        resp = await client.chat.completions.create(messages=[{"role": "user", "content": req["text"]}], **common)
    else:
        resp = await client.completions.create(prompt=req["text"], **common)
    if not req["stream"]:
        c = resp.choices[0]
        return (c.message.content if req["chat"] else c.text), c.finish_reason, resp.usage.completion_tokens
    text, finish, tokens = "", None, None
    async for chunk in resp:
        if chunk.choices:
            choice = chunk.choices[0]
            text += (choice.delta.content or "") if req["chat"] else choice.text
            finish = choice.finish_reason or finish
        if chunk.usage:
            tokens = chunk.usage.completion_tokens
    return text, finish, tokens


def test_32_concurrent_requests_equal_each_run_alone(server):
    requests = mixed_requests(32)

    async def alone():
        async with server.async_openai() as client:
            return [await ask(client, r) for r in requests]

    async def together():
        async with server.async_openai() as client:
            return await asyncio.gather(*(ask(client, r) for r in requests))

    expected = asyncio.run(alone())
    got = asyncio.run(together())
    for req, want, have in zip(requests, expected, got, strict=True):
        assert have == want, req
    assert {f for _, f, _ in got} <= {"stop", "length"}
    server.wait_idle()


def long_stream_prompt(server) -> list[dict]:
    """A prompt the random model answers at full length (so only a disconnect can end it early)."""
    for word in WORDS:
        messages = [{"role": "user", "content": f"Tell me about {word}."}]
        r = server.http.post("/v1/chat/completions", json={"model": MODEL, "messages": messages, "max_tokens": 150,
                                                          "temperature": 0})
        if r.json()["choices"][0]["finish_reason"] == "length":
            return messages
    pytest.skip("the random model ends every candidate prompt early")


def test_client_disconnect_mid_stream_frees_the_slot(server):
    messages = long_stream_prompt(server)
    aborted = server.metric("dflashkit_aborted_requests_total")
    server.gen.delay = 0.02  # 150 tokens now take seconds: the disconnect surely comes first
    try:
        body = {"model": MODEL, "messages": messages, "max_tokens": 150, "temperature": 0, "stream": True}
        with server.http.stream("POST", "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            seen = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: {") for line in seen)
            assert server.gen.num_running == 1
        server.wait_idle(timeout=5)  # closed mid-stream: the sequence is aborted, the slot free
        assert server.metric("dflashkit_aborted_requests_total") == aborted + 1
    finally:
        server.gen.delay = 0.0
    assert httpx.get(server.url + "/health").json() == {"status": "ok", "running": 0, "queued": 0}


def chat_responses(server, status: int) -> float:
    return server.metric(f'dflashkit_requests_total{{endpoint="/v1/chat/completions",status="{status}"}}')


def test_client_timeout_on_whole_answer_frees_the_slot(server):
    messages = long_stream_prompt(server)
    aborted = server.metric("dflashkit_aborted_requests_total")
    closed, failed = chat_responses(server, 499), chat_responses(server, 500)
    server.gen.delay = 0.02
    try:
        with pytest.raises(httpx.ReadTimeout):
            server.http.post("/v1/chat/completions", timeout=0.5,
                             json={"model": MODEL, "messages": messages, "max_tokens": 150, "temperature": 0})
        server.wait_idle(timeout=5)
        assert server.metric("dflashkit_aborted_requests_total") == aborted + 1
        # the handler ends as a 499; it read the result of the task it had just cancelled (a 500 and a traceback)
        deadline = time.time() + 5
        while chat_responses(server, 499) == closed:
            assert time.time() < deadline, "the departed client's request was never answered"
            time.sleep(0.02)
        assert chat_responses(server, 500) == failed
    finally:
        server.gen.delay = 0.0


def test_engine_failure_fails_its_requests_only(server):
    hi = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0}
    server.gen.fail_steps = 1
    r = server.http.post("/v1/chat/completions", json=hi)
    assert r.status_code == 500 and r.json()["error"]["type"] == "server_error"
    assert "injected engine failure" in r.json()["error"]["message"]
    server.wait_idle()
    ok = server.http.post("/v1/chat/completions", json=hi)  # the loop lives on
    assert ok.status_code == 200 and ok.json()["choices"][0]["finish_reason"] in ("stop", "length")


def _core_with(gen, *max_tokens: int):
    """An EngineCore over `gen` with one completion request per `max_tokens`, admitted by its next step."""
    events = []
    core = EngineCore(gen, events.extend)
    for rid, n in enumerate(max_tokens):
        core.add(rid, EngineRequest(messages=None, prompt="abc", max_tokens=n, default_max_tokens=None,
                                    temperature=0.0, top_p=1.0, top_k=0, seed=None, stop=None))
    return core, events


def _terminal(events) -> dict[int, list[str]]:
    ends: dict[int, list[str]] = {}
    for rid, event in events:
        if event.kind in ("done", "error"):
            ends.setdefault(rid, []).append(event.kind)
    return ends


def test_failed_step_ends_the_request_it_finished_and_freed():
    """max_tokens=1 finishes in its admission step, whose slot the step frees; the step then fails under the other.
    Only sequences still in a slot got an error: the finished one got neither done nor error (a hang)."""
    gen = tiny_generator()
    core, events = _core_with(gen, 1, 50)
    gen.fail_steps = 1
    core.step()
    assert _terminal(events) == {0: ["error"], 1: ["error"]}
    assert not gen.has_work() and not gen.sequences


def test_failure_while_reading_a_step_ends_every_request_once():
    """An exception while the step's updates are turned into events (here: reading a finished result) lost the
    events already built, the `done` of a request finished earlier in the same step included."""
    gen = tiny_generator()
    core, events = _core_with(gen, 1, 1, 50)
    pop = gen.pop_result

    def pop_result(seq_id):  # as Generator.pop_result: the sequence is gone, then building its result fails
        result = pop(seq_id)
        if seq_id == 1:
            raise RuntimeError("bad result")
        return result

    gen.pop_result = pop_result
    core.step()
    assert _terminal(events) == {0: ["error"], 1: ["error"], 2: ["error"]}
    assert not gen.has_work()


@contextlib.contextmanager
def only_slot_taken(max_queue: int):
    """A one-slot server whose slot a streaming request holds; on leaving, the slot must be freed and serve again."""
    gen = tiny_generator(max_batch=1)
    gen.delay = 0.05
    headers = {"Authorization": f"Bearer {API_KEY}"}
    body = {"model": MODEL, "prompt": "abc", "max_tokens": 200, "temperature": 0, "stream": True}
    with live_server(gen, api_key=API_KEY, max_queue=max_queue) as (url, app):
        with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
            with http.stream("POST", "/v1/completions", json=body) as running:
                assert running.status_code == 200
                deadline = time.time() + 10
                while gen.num_running == 0 or app.state.engine.queued:  # the first holds the only slot
                    assert time.time() < deadline
                    time.sleep(0.01)
                yield http, body
            deadline = time.time() + 10
            while gen.num_running or gen.waiting or app.state.engine.queued:
                assert time.time() < deadline, "slots not freed after the clients left"
                time.sleep(0.02)
            assert http.get("/health").status_code == 200
            short = {**body, "stream": False, "max_tokens": 4}
            assert http.post("/v1/completions", json=short).status_code == 200


def test_full_queue_answers_429_not_a_hang():
    with only_slot_taken(max_queue=1) as (http, body):
        with http.stream("POST", "/v1/completions", json=body) as waiting:
            assert waiting.status_code == 200  # the second waits in the queue...
            full = http.post("/v1/completions", json=body)  # ...and the third is turned away
            assert full.status_code == 429
            assert full.json()["error"]["code"] == "queue_full"


def test_queue_limit_zero_still_fills_the_free_slots():
    """--max-queue 0: no request waits, but one that finds a free slot is served (checked on leaving)."""
    with only_slot_taken(max_queue=0) as (http, body):
        full = http.post("/v1/completions", json=body)  # the only slot is taken: nobody may wait
        assert full.status_code == 429 and full.json()["error"]["code"] == "queue_full"
