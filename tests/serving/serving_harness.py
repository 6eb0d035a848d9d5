"""A live server on 127.0.0.1 over a tiny random Llama with a character-level tokenizer (fast on CPU).

Not a conftest.py: sub-folder conftests all import as `conftest` and would shadow tests/conftest.py,
which the other test folders import from. Test modules import the fixture from here (one server each).
"""

from __future__ import annotations

import socket
import threading
import time
from contextlib import contextmanager

import httpx
import pytest
import torch

from dflashkit import Generator
from dflashkit.serving.app import ServerConfig, create_app

API_KEY = "test-key"
MODEL = "tiny"
CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def char_tokenizer():
    """One token per printable ASCII character plus chat specials; <|im_end|> is the end of turn."""
    from tokenizers import Tokenizer, decoders, models
    from transformers import PreTrainedTokenizerFast

    tokens = ["<|im_start|>", "<|im_end|>", "<unk>", "\n"] + [chr(i) for i in range(32, 127)]
    backend = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[], unk_token="<unk>"))
    backend.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", eos_token="<|im_end|>",
                                   additional_special_tokens=["<|im_start|>"], chat_template=CHAT_TEMPLATE)


class Throttled(Generator):
    """The real Generator, with knobs for tests: a pause per step, a step that fails on demand, and answers
    padded with `pad_text` characters (the size of a long answer's result, without generating one)."""

    delay = 0.0
    fail_steps = 0
    pad_text = 0

    def step(self):
        if self.delay:
            time.sleep(self.delay)
        updates = super().step()
        if self.fail_steps and self.num_running:  # after the step: the finished are freed, the rest hold slots
            self.fail_steps -= 1
            raise RuntimeError("injected engine failure")
        return updates

    def pop_result(self, seq_id):
        result = super().pop_result(seq_id)
        if self.pad_text:
            result.text += "z" * self.pad_text
        return result


def tiny_generator(max_batch: int = 8, max_length: int = 256) -> Throttled:
    from tiny_models import build_tiny

    from dflashkit.models.factory import random_draft

    tokenizer = char_tokenizer()
    target, reference = build_tiny("llama", seed=1, vocab=len(tokenizer))
    target.tokenizer = tokenizer  # end-of-turn token for stops
    draft = random_draft(target, block_size=8)
    # a fixed block size: seeded sampling repeats exactly (the adaptive size changes how many uniforms a step uses)
    gen = Throttled(target, draft, tokenizer, block_size=8, max_batch=max_batch, max_length=max_length)
    gen.reference = reference  # the untouched HF model: plain decoding to compare against
    return gen


def slow_tiny_generator(delay: float, pad_text: int = 0, **kwargs) -> Throttled:
    """`tiny_generator` pausing `delay` s a step (built inside an engine process, where tests cannot reach it)."""
    gen = tiny_generator(**kwargs)
    gen.delay, gen.pad_text = delay, pad_text
    return gen


@contextmanager
def live_server(gen, graceful_s: float | None = None, **config):
    """uvicorn in a background thread on a socket we bound ourselves (no port race); yields the base URL.
    `gen`: a Generator (engine on a thread) or an EngineProcess. `graceful_s`: serve's GracefulServer with that
    grace (app.state.server: its handle_exit stands in for SIGTERM)."""
    import uvicorn

    app = create_app(gen, ServerConfig(served_model_name=MODEL, **config))
    # proto given explicitly: asyncio sets TCP_NODELAY only on sockets whose proto says TCP, and without it
    # a kept-alive connection waits ~40 ms (Nagle vs delayed ACK) for the body after the headers
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    if graceful_s is None:
        server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=2))
    else:
        from dflashkit.serving.graceful import GracefulServer

        server = GracefulServer(uvicorn.Config(app, log_level="warning"), app.state.engine, graceful_s)
    app.state.server = server
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matrices: more OpenMP threads only spin (badly, on a busy machine)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.time() + 30
        while not server.started:
            if time.time() > deadline or not thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}", app
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
        torch.set_num_threads(threads)


class Server:
    def __init__(self, url: str, app, gen: Throttled):
        self.url, self.app, self.gen = url, app, gen
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)

    def openai(self, **kwargs):
        from openai import OpenAI

        return OpenAI(base_url=self.url + "/v1", api_key=API_KEY, max_retries=0, **kwargs)

    def async_openai(self):
        from openai import AsyncOpenAI

        return AsyncOpenAI(base_url=self.url + "/v1", api_key=API_KEY, max_retries=0, timeout=120)

    def metric(self, name: str) -> float:
        """Sum of a metric's samples (over all label sets)."""
        total = 0.0
        for line in httpx.get(self.url + "/metrics").text.splitlines():
            if line.startswith(name + " ") or line.startswith(name + "{"):
                total += float(line.rsplit(" ", 1)[1])
        return total

    def wait_idle(self, timeout: float = 10.0) -> None:
        deadline = time.time() + timeout
        while self.gen.num_running or self.gen.waiting or self.metric("dflashkit_running_sequences"):
            assert time.time() < deadline, "sequences still running after the clients left"
            time.sleep(0.05)


@pytest.fixture(scope="module")
def server():
    gen = tiny_generator()
    with live_server(gen, api_key=API_KEY, max_queue=64, max_body_bytes=64 * 1024) as (url, app):
        srv = Server(url, app, gen)
        yield srv
        srv.http.close()
