"""Found by probing the server as a client would: requests OpenAI's API accepts, HTTP methods, departures."""

from __future__ import annotations

import asyncio
import json

import pytest
import serving_harness
from serving_harness import API_KEY, MODEL

server = serving_harness.server  # the module's live server fixture (an assignment: test arguments may shadow it)

HI = [{"role": "user", "content": "hi"}]


def test_null_stream_is_not_streaming(server):
    """OpenAI's schema has `stream` nullable (clients send unset fields as null): it was a 400 invalid_type."""
    for path, body in [("/v1/chat/completions", {"messages": HI}), ("/v1/completions", {"prompt": "hi"})]:
        r = server.http.post(path, json={**body, "model": MODEL, "max_tokens": 3, "stream": None})
        assert r.status_code == 200, r.text
        assert r.json()["usage"]["completion_tokens"] <= 3


def test_stream_options_include_obfuscation_is_accepted(server):
    """openai's client offers `stream_options={"include_obfuscation": False}`: it was a 400 unrecognized_argument."""
    chunks = list(server.openai().chat.completions.create(
        model=MODEL, messages=HI, max_tokens=3, temperature=0, stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False}))
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens <= 3


def test_echoed_assistant_message_dump_is_accepted(server):
    """`message.model_dump()` echoes `function_call: null` and `audio: null` (valid in OpenAI's schema): a 400."""
    r = server.http.post("/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 3, "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "yo", "function_call": None, "audio": None, "refusal": None,
             "tool_calls": None},
            {"role": "user", "content": "more"}]})
    assert r.status_code == 200, r.text

def test_answer_echoed_with_the_clients_own_model_dump_is_accepted(server):
    """openai's `ChatCompletionMessage.model_dump()` also writes `annotations: null` (web-search citations): a
    history built from the server's own answer that way was a 400 unrecognized_argument."""
    client = server.openai()
    first = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=3, temperature=0)
    echoed = first.choices[0].message.model_dump()
    assert "annotations" in echoed
    again = client.chat.completions.create(model=MODEL, max_tokens=3, temperature=0,
                                           messages=[*HI, echoed, {"role": "user", "content": "more"}])
    assert again.choices[0].finish_reason in ("stop", "length")


def test_answer_of_the_clients_stream_helper_echoed_back_is_accepted(server):
    """`client.chat.completions.stream(...)` (and `.parse`) return a message whose `model_dump()` also has
    `parsed: null` (the client's own parse of `content`): echoing it back was a 400 unrecognized_argument."""
    client = server.openai()
    with client.chat.completions.stream(model=MODEL, messages=HI, max_tokens=3, temperature=0) as stream:
        for _ in stream:
            pass
        echoed = stream.current_completion_snapshot.choices[0].message.model_dump()
    assert "parsed" in echoed
    again = client.chat.completions.create(model=MODEL, max_tokens=3, temperature=0,
                                           messages=[*HI, echoed, {"role": "user", "content": "more"}])
    assert again.choices[0].finish_reason in ("stop", "length")



@pytest.mark.parametrize("field,value", [("function_call", {"name": "f", "arguments": "{}"}), ("audio", {"id": "a"})])
def test_non_null_function_call_or_audio_is_refused_by_name(server, field, value):
    r = server.http.post("/v1/chat/completions", json={
        "model": MODEL, "max_tokens": 3, "messages": [{"role": "assistant", "content": "x", field: value}, *HI]})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "unsupported_parameter" and r.json()["error"]["param"] == f"messages.0.{field}"


@pytest.mark.parametrize("path", ["/health", "/metrics", "/v1/models", f"/v1/models/{MODEL}"])
def test_head_is_answered_like_get(server, path):
    """HTTP requires HEAD wherever GET is served (load balancers probe with it): it was a 405."""
    get, head = server.http.get(path), server.http.head(path)
    assert head.status_code == get.status_code == 200
    assert head.content == b""
    assert server.http.head("/v1/models", headers={"Authorization": ""}).status_code == 401


def test_client_gone_mid_upload_is_499_not_500(server):
    """A client that hung up before the whole body arrived escaped as a 500 with a traceback in the log."""
    port = int(server.url.rsplit(":", 1)[1])
    body = json.dumps({"model": MODEL, "prompt": "hi", "max_tokens": 3}).encode()

    async def half_a_body() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + API_KEY.encode()
                     + b"\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body[:5])
        await writer.drain()
        await asyncio.sleep(0.2)
        writer.close()
        await asyncio.sleep(0.3)  # the server notices the disconnect

    def count(status: str) -> float:
        return sum(float(line.rsplit(" ", 1)[1]) for line in server.http.get("/metrics").text.splitlines()
                   if line.startswith('dflashkit_requests_total{endpoint="/v1/completions"')
                   and f'status="{status}"' in line)

    before_500, before_499 = count("500"), count("499")
    asyncio.run(half_a_body())
    assert count("500") == before_500 and count("499") == before_499 + 1
    assert server.http.get("/health").json()["status"] == "ok"


QWEN_LIKE_TEMPLATE = (  # the shape of Qwen2.5/Qwen3's: a default system prompt, and no branch for other roles
    "{% if messages[0]['role'] == 'system' %}<|im_start|>system\n{{ messages[0]['content'] }}<|im_end|>\n"
    "{% else %}<|im_start|>system\nDefault.<|im_end|>\n{% endif %}"
    "{% for m in messages %}{% if m.role == 'user' or (m.role == 'system' and not loop.first) %}"
    "<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% elif m.role == 'assistant' %}"
    "<|im_start|>assistant\n{{ m.content }}<|im_end|>\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def test_developer_message_reaches_the_prompt_as_system():
    """A `developer` message (OpenAI's name for system instructions) vanished from Qwen-style prompts."""
    from serving_harness import char_tokenizer

    from dflashkit.engine.generator import chat_prompt
    from dflashkit.serving.protocol import chat_request

    tokenizer = char_tokenizer()
    tokenizer.chat_template = QWEN_LIKE_TEMPLATE
    as_developer = [{"role": "developer", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    as_system = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]
    prompts = [tokenizer.decode(chat_prompt(tokenizer, chat_request({"messages": m})[1].messages))
               for m in (as_developer, as_system)]
    assert "Be brief." in prompts[0] and "Default." not in prompts[0]
    assert prompts[0] == prompts[1]
