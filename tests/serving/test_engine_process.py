"""The engine in a process of its own (`dflashkit serve`'s default): same answers, streams, limits, aborts,
errors through the pipe, and a clear 503 when the engine process dies."""

from __future__ import annotations

import asyncio
import functools
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from serving_harness import API_KEY, MODEL, live_server, slow_tiny_generator, tiny_generator
from tiny_models import reference_greedy

from dflashkit.serving.engine_process import EngineProcess

MESSAGES = [{"role": "user", "content": "Say hello."}]


@pytest.fixture(scope="module")
def process_server():
    engine = EngineProcess(functools.partial(slow_tiny_generator, 0.005, max_batch=8))
    assert engine.launch()["max_batch"] == 8
    with live_server(engine, api_key=API_KEY) as (url, app):
        yield url, app, engine
    assert not engine.alive  # stopped with the server


def _client(url: str):
    from openai import AsyncOpenAI, OpenAI

    return (OpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0),
            AsyncOpenAI(base_url=url + "/v1", api_key=API_KEY, max_retries=0, timeout=120))


def test_answers_equal_plain_decoding_alone_and_concurrently(process_server):
    url, _, _ = process_server
    client, aclient = _client(url)
    local = tiny_generator()  # same seeded weights as the engine process's
    prompts = [local.tokenizer.encode(t) for t in ["Hello there", "The weather", "x", "abc def ghi", "Once"] * 3]
    eos = local.tokenizer.eos_token_id
    expected = []
    for p in prompts:
        plain = reference_greedy(local.reference, p, 24)
        expected.append(plain[:plain.index(eos) + 1] if eos in plain else plain)

    async def all_at_once():
        return await asyncio.gather(*[aclient.completions.create(model=MODEL, prompt=p, max_tokens=24, temperature=0)
                                      for p in prompts])

    for r, p, want in zip(asyncio.run(all_at_once()), prompts, expected, strict=True):
        assert r.choices[0].text == local.tokenizer.decode(want, skip_special_tokens=True)
        assert r.usage.completion_tokens == len(want) and r.usage.prompt_tokens == len(p)
    whole = client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, temperature=0)
    chunks = list(client.chat.completions.create(model=MODEL, messages=MESSAGES, max_tokens=30, temperature=0,
                                                 stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == whole.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens


def test_errors_cross_the_pipe_and_the_engine_lives_on(process_server):
    url, _, _ = process_server
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        r = http.post("/v1/completions", json={"model": MODEL, "prompt": "x" * 300, "max_tokens": 10})
        assert r.status_code == 400 and r.json()["error"]["code"] == "context_length_exceeded"
        r = http.post("/v1/completions", json={"model": MODEL, "prompt": [10 ** 6], "max_tokens": 4})
        assert r.status_code == 400 and r.json()["error"]["param"] == "prompt"
        assert http.get("/v1/models").json()["data"][0]["max_model_len"] == 256
        r = http.post("/v1/completions", json={"model": MODEL, "prompt": "abc", "max_tokens": 4, "temperature": 0})
        assert r.status_code == 200


def test_disconnect_mid_stream_frees_the_slot(process_server):
    url, _, _ = process_server
    body = {"model": MODEL, "prompt": "abc", "max_tokens": 200, "temperature": 0, "stream": True,
            "stop": None}
    with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
        with http.stream("POST", "/v1/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            assert any(next(lines).startswith("data: {") for _ in range(4))
            assert http.get("/health").json()["running"] == 1
        deadline = time.time() + 10
        while http.get("/health").json()["running"]:
            assert time.time() < deadline, "the slot was not freed"
            time.sleep(0.05)
        assert "dflashkit_aborted_requests_total 1" in http.get("/metrics").text


def test_a_dead_engine_process_answers_503_not_a_hang():
    engine = EngineProcess(functools.partial(slow_tiny_generator, 0.01, max_batch=2))
    engine.launch()
    with live_server(engine, api_key=API_KEY) as (url, _):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=30) as http:
            body = {"model": MODEL, "prompt": "abc", "max_tokens": 200, "temperature": 0, "stream": True}
            with http.stream("POST", "/v1/completions", json=body) as r:
                lines = r.iter_lines()
                next(lines)
                engine._proc.kill()  # the engine dies mid-answer
                rest = [line for line in lines if line]
            assert any('"engine_unavailable"' in line for line in rest) and rest[-1] == "data: [DONE]"
            assert http.get("/health").status_code == 503
            r = http.post("/v1/completions", json={"model": MODEL, "prompt": "abc", "max_tokens": 4})
            assert r.status_code == 503 and r.json()["error"]["code"] == "engine_unavailable"


def test_a_model_that_cannot_load_fails_launch_with_its_reason():
    from dflashkit import load
    from dflashkit.errors import ConfigError

    engine = EngineProcess(functools.partial(load, "/nonexistent/model/dir", device="cpu"))
    with pytest.raises((ConfigError, RuntimeError), match="engine process could not start"):
        engine.launch()


def test_a_large_prompt_sent_while_a_large_answer_goes_up_is_no_deadlock():
    """The server's send of a large command waits while the command pipe is full, and meanwhile reads no events;
    the engine, sending a batch larger than the event pipe (long answers ending), read no commands: each
    waited for the other, and every request hung, /health too."""
    engine = EngineProcess(functools.partial(slow_tiny_generator, 0.5, pad_text=200_000, max_batch=2))
    engine.launch()
    with live_server(engine, api_key=API_KEY) as (url, _):
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=20) as http:
            def ask(prompt: str):
                return http.post("/v1/completions", json={"model": MODEL, "prompt": prompt, "max_tokens": 1})

            with ThreadPoolExecutor(2) as pool:
                short = pool.submit(ask, "abc")  # its 200 kB answer goes up at the end of a 0.5 s step
                time.sleep(0.2)
                large = pool.submit(ask, "a" * 300_000)  # a 300 kB command, sent during that step
                assert short.result().status_code == 200
                assert large.result().json()["error"]["code"] == "context_length_exceeded"
            assert http.get("/health", timeout=5).status_code == 200
