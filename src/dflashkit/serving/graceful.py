"""Shutdown that ends every request with an answer the client can read.

uvicorn, on SIGTERM or Ctrl-C, waits `timeout_graceful_shutdown` for open requests and then cancels them: a
whole-answer request got a plain-text 500 and a stream was cut with no error event; only afterwards did the
app's shutdown fail what was left with the documented 503. Here new requests are refused at once, requests in
flight get `grace_s` to finish, and those still open then end with the 503 `shutting_down` (JSON, or a stream's
error event) while the server can still send it; uvicorn's own deadline comes later.
"""

from __future__ import annotations

import asyncio

import uvicorn

from .engine_loop import EngineLoop

SEND_S = 3.0  # after the 503s: time for the handlers to write them before uvicorn cancels what is left


class GracefulServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, engine: EngineLoop, grace_s: float = 5.0):
        config.timeout_graceful_shutdown = grace_s + SEND_S
        super().__init__(config)
        self.engine, self.grace_s = engine, grace_s
        self._loop: asyncio.AbstractEventLoop | None = None

    async def startup(self, sockets=None) -> None:
        self._loop = asyncio.get_running_loop()
        await super().startup(sockets)

    def handle_exit(self, sig, frame) -> None:
        """Runs in a signal handler (or another thread in tests): hand the work to the event loop."""
        first = not self.should_exit
        super().handle_exit(sig, frame)
        if first and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._begin)

    def _begin(self) -> None:
        self.engine.begin_shutdown()
        self._loop.call_later(self.grace_s, self.engine.end_open_requests)
