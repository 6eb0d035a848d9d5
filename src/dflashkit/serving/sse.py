"""Server-sent events: one answer's engine events as `data: {json}` frames, ended by `data: [DONE]`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from starlette.responses import StreamingResponse

from .engine_loop import Event, Handle
from .responses import Reply, dflash_stats

DONE = b"data: [DONE]\n\n"


def frame(obj: dict) -> bytes:
    return b"data: " + json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


async def stream_events(handle: Handle, reply: Reply, include_usage: bool) -> AsyncIterator[bytes]:
    """Role chunk (chat), text deltas, the finish chunk (with `dflash` stats), the usage chunk, [DONE].

    An engine failure after the headers went out becomes an `{"error": ...}` frame: the status is
    already 200, so the body is the only place left to say it."""
    if reply.chat:
        yield frame(reply.chunk(role=True, with_usage_field=include_usage))
    while True:
        event = await handle.next()
        if event.kind == "delta":
            text, event = _pile(handle, event.text)
            if text:
                yield frame(reply.chunk(text, with_usage_field=include_usage))
            if event is None:
                continue
        if event.kind == "done":
            last = reply.chunk(finish_reason=event.result.finish_reason, with_usage_field=include_usage)
            last["dflash"] = dflash_stats(event.result)
            yield frame(last)
            if include_usage:
                yield frame(reply.usage_chunk(event.result))
            break
        elif event.kind == "error":
            yield frame(event.error.body())
            break
    yield DONE


def _pile(handle: Handle, text: str) -> tuple[str, Event | None]:
    """Join the deltas that piled up while this stream was busy into one frame: when the HTTP side falls
    behind the engine (many streams, a slow client), it sends fewer, larger frames instead of lagging more.
    Returns the text and the first non-delta event met, if any."""
    while (event := handle.poll()) is not None:
        if event.kind != "delta":
            return text, event
        text += event.text
    return text, None


class EngineStream(StreamingResponse):
    """A streamed answer that aborts its sequence however the response ends (disconnect, cancel, error)."""

    def __init__(self, handle: Handle, content: AsyncIterator[bytes], **kwargs):
        super().__init__(content, **kwargs)
        self.handle = handle

    async def __call__(self, scope, receive, send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self.handle.cancel()
