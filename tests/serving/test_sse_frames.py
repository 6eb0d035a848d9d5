"""Streamed answers: deltas that piled up while the HTTP side was busy leave as one frame, nothing lost."""

from __future__ import annotations

import asyncio
import json

from dflashkit.engine.sequence import GenerationResult
from dflashkit.serving.engine_loop import Event, Handle
from dflashkit.serving.protocol import EngineRequest
from dflashkit.serving.responses import Reply
from dflashkit.serving.sse import DONE, stream_events


def _frames(events: list[Event], chat: bool = False) -> list:
    async def run() -> list[bytes]:
        handle = Handle(None, 0, EngineRequest.__new__(EngineRequest))
        for event in events:  # all waiting before the stream reads the first
            handle.events.put_nowait(event)
        return [f async for f in stream_events(handle, Reply(model="m", chat=chat), include_usage=True)]

    frames = asyncio.run(run())
    assert frames[-1] == DONE
    return [json.loads(f[len(b"data: "):]) for f in frames[:-1]]


def _result(text: str) -> GenerationResult:
    return GenerationResult(token_ids=[1, 2, 3], text=text, finish_reason="stop", acceptance_lengths=[2, 1],
                            prompt_tokens=4, completion_tokens=3, ttft_s=0.0, elapsed_s=0.1)


def test_waiting_deltas_are_joined_into_one_frame():
    frames = _frames([Event("delta", text="Hel"), Event("delta", text=""), Event("delta", text="lo"),
                      Event("done", result=_result("Hello"))])
    texts = [f["choices"][0]["text"] for f in frames if f["choices"]]
    assert texts == ["Hello", ""]  # one delta frame, then the finish frame
    assert frames[-2]["choices"][0]["finish_reason"] == "stop" and frames[-1]["usage"]["completion_tokens"] == 3


def test_an_error_after_deltas_still_sends_the_text_first():
    from dflashkit.serving.errors import server_error

    frames = _frames([Event("delta", text="a"), Event("delta", text="b"), Event("error", error=server_error("x"))],
                     chat=True)
    assert frames[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert frames[1]["choices"][0]["delta"] == {"content": "ab"}
    assert "error" in frames[2] and len(frames) == 3
