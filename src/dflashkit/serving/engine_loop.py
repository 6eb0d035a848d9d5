"""The HTTP side of the engine: Handles for the routes, queue depth and metrics kept from the events, and the
engine core (`engine_core.py`) running on a thread of this process or in a process of its own.

`EngineProcess` (what `dflashkit serve` runs): the engine's Python and the event loop's (HTTP parsing, JSON,
SSE framing) never wait for each other on the GIL. `EngineThread` (tests, embedders with a ready Generator):
they share it. The routes see one `EngineLoop` either way, and all of its bookkeeping happens on the event
loop's thread, so it needs no locks.
"""

from __future__ import annotations

import asyncio
import itertools
import queue
import threading
import time

from .engine_core import Batch, Command, EngineCore, Event, describe
from .engine_process import EngineProcess
from .errors import APIError
from .metrics import Metrics
from .protocol import EngineRequest


def _shutting_down() -> APIError:
    return APIError(503, "the server is shutting down", type="server_error", code="shutting_down")


__all__ = ["EngineLoop", "EngineProcess", "EngineThread", "Event", "Handle"]


class Handle:
    """One request as the HTTP side sees it: an event queue, and `cancel` for a departed client."""

    def __init__(self, engine: EngineLoop | None, rid: int, request: EngineRequest):
        self.engine, self.rid, self.request = engine, rid, request
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.t_arrival = time.perf_counter()
        self.prompt_tokens = 0
        self.started = False  # has its first token: holds a slot
        self.ended = False  # its last event (done or error) arrived, or it was cancelled
        self.closed = False  # the reader saw the last event

    async def next(self) -> Event:
        event = await self.events.get()
        self.closed = event.kind in ("done", "error")
        return event

    def poll(self) -> Event | None:
        """The next event if one is already waiting, else None."""
        try:
            event = self.events.get_nowait()
        except asyncio.QueueEmpty:
            return None
        self.closed = event.kind in ("done", "error")
        return event

    def cancel(self) -> None:
        """Free the slot at the next step boundary (the client left); a no-op once the answer is complete."""
        if self.engine is not None:
            self.engine.cancel(self)


class EngineThread:
    """The core on a thread of this process, over a ready Generator."""

    def __init__(self, gen):
        self.gen = gen
        self.info = describe(gen)
        self._inbox: queue.Queue[Command] = queue.Queue()
        self._thread: threading.Thread | None = None

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, loop: asyncio.AbstractEventLoop, deliver, gone) -> None:
        def sink(batch: Batch) -> None:
            try:
                loop.call_soon_threadsafe(deliver, batch)
            except RuntimeError:  # the event loop has closed: nobody is listening
                pass

        core = EngineCore(self.gen, sink)
        self._thread = threading.Thread(target=core.run, args=(self._receive,), name="dflashkit-engine", daemon=True)
        self._thread.start()

    def send(self, command: Command) -> None:
        self._inbox.put(command)

    def detach(self) -> None:
        pass

    def stop(self, timeout: float) -> None:
        self._inbox.put(("stop", None, None))
        if self._thread is not None:
            self._thread.join(timeout)

    def _receive(self, block: bool) -> list[Command]:
        try:
            commands = [self._inbox.get(timeout=1.0) if block else self._inbox.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                commands.append(self._inbox.get_nowait())
            except queue.Empty:
                return commands


class EngineLoop:
    def __init__(self, engine: EngineThread | EngineProcess, *, max_queue: int = 256, metrics: Metrics | None = None):
        self.engine, self.max_queue = engine, max_queue
        self.metrics = metrics or Metrics(running=lambda: self.running, queued=lambda: self.queued)
        self._open: dict[int, Handle] = {}
        self._ids = itertools.count()
        self.queued = 0  # submitted, no first token yet
        self.running = 0  # first token out, not ended
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def alive(self) -> bool:
        return self._loop is not None and not self._stopping and self.engine.alive

    @property
    def max_length(self) -> int:
        return int(self.engine.info["max_length"])

    def start(self) -> None:
        """Call from the event loop that will read the events."""
        self._loop = asyncio.get_running_loop()
        self.engine.start(self._loop, self._deliver, self._gone)

    def begin_shutdown(self) -> None:
        """Refuse new requests (503 engine_unavailable, as /health says); those in flight run on."""
        self._stopping = True

    def end_open_requests(self) -> None:
        """Each request still open gets the 503 `shutting_down` now, while the server can still send it."""
        self._fail_open(_shutting_down())

    async def aclose(self, timeout: float = 10.0) -> None:
        """Stop the engine; requests still open get a 503."""
        self._stopping = True
        self.engine.detach()
        await asyncio.get_running_loop().run_in_executor(None, self.engine.stop, timeout)
        self._fail_open(_shutting_down())

    def submit(self, request: EngineRequest) -> Handle:
        """Queue a request, or refuse it now: 503 if the engine is down, 429 if the queue is full."""
        if not self.alive:
            raise APIError(503, "the engine is not running (starting up or shutting down); retry later",
                           type="server_error", code="engine_unavailable")
        # queued requests take the free slots first; only the rest wait (so --max-queue 0 still fills the slots)
        waiting = self.queued - max(0, int(self.engine.info["max_batch"]) - self.running)
        if waiting >= self.max_queue:
            raise APIError(429, f"{max(waiting, 0)} requests are already waiting for a slot (limit {self.max_queue}); "
                           "retry later", type="rate_limit_error", code="queue_full")
        h = Handle(self, next(self._ids), request)
        try:
            self.engine.send(("add", h.rid, request))
        except OSError:
            raise APIError(503, "the engine process is gone", type="server_error", code="engine_unavailable") from None
        self._open[h.rid] = h
        self.queued += 1
        return h

    def cancel(self, h: Handle) -> None:
        if h.ended:
            return
        try:
            self.engine.send(("abort", h.rid, None))
        except OSError:
            pass  # the engine is gone: nothing holds the slot any more
        self._end(h)
        self.metrics.record(lambda m: m.aborted.inc())

    # ------------------------------------------------------- on the event loop
    def _deliver(self, batch: Batch) -> None:
        now = time.perf_counter()
        for rid, event in batch:
            h = self._open.get(rid)
            if h is None:  # cancelled meanwhile
                continue
            if event.kind == "started":
                h.started = True
                self.queued -= 1
                self.running += 1
                self.metrics.record(lambda m, h=h: (m.ttft.observe(now - h.t_arrival),
                                                    m.prompt_tokens.inc(h.prompt_tokens)))
                continue
            if event.kind == "accepted":
                h.prompt_tokens = event.prompt_tokens
            elif event.kind == "delta":
                tokens = len(event.token_ids)
                self.metrics.record(lambda m, n=tokens: m.generated_tokens.inc(n))
            elif event.kind == "done":
                self._end(h)
                self.metrics.record(lambda m, h=h, r=event.result: self._observe_done(m, h, r, now))
            elif event.kind == "error":
                self._end(h)
                if event.failed_running:
                    self.metrics.record(lambda m: m.aborted.inc())
            h.events.put_nowait(event)

    @staticmethod
    def _observe_done(m: Metrics, h: Handle, r, now: float) -> None:
        if not h.request.stream:  # streamed tokens were counted as they went out
            m.generated_tokens.inc(r.completion_tokens)
        m.e2e.observe(now - h.t_arrival)
        for length in r.acceptance_lengths:
            m.acceptance.observe(length)
        if r.completion_tokens > 1:
            m.tpot.observe((r.elapsed_s - r.ttft_s) / (r.completion_tokens - 1))

    def _end(self, h: Handle) -> None:
        if h.ended:
            return
        h.ended = True
        self._open.pop(h.rid, None)
        if h.started:
            self.running -= 1
        else:
            self.queued -= 1

    def _gone(self, reason: str) -> None:
        """The engine process died: every open request fails now, new ones get 503 (see `alive`)."""
        self._fail_open(APIError(503, f"the engine stopped: {reason}", type="server_error", code="engine_unavailable"))

    def _fail_open(self, error: APIError) -> None:
        for h in list(self._open.values()):
            self._end(h)
            h.events.put_nowait(Event("error", error=error))
