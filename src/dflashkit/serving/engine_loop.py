"""The one thread that owns the Generator: takes requests and aborts between steps, steps, dispatches.

The Generator is not thread-safe, so nothing else touches it. The event loop talks to this thread
through a FIFO inbox (adds and aborts, in order) and gets events back on per-request asyncio queues
via `call_soon_threadsafe`. A failing request fails alone; a failing step fails the sequences it was
running (their cache rows are suspect); the thread itself never dies until `stop`.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from dataclasses import dataclass, field

from ..engine.sequence import GenerationResult
from ..errors import DFlashError
from .errors import APIError, bad_request, server_error
from .metrics import Metrics
from .prompts import plan
from .protocol import EngineRequest

log = logging.getLogger("dflashkit.serve")


@dataclass
class Event:
    kind: str  # "accepted" | "delta" | "done" | "error"
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    result: GenerationResult | None = None
    error: APIError | None = None


class Handle:
    """One request as the HTTP side sees it: an event queue, and `cancel` for a departed client."""

    def __init__(self, engine: EngineLoop, request: EngineRequest):
        self.engine, self.request = engine, request
        self.events: asyncio.Queue[Event] = asyncio.Queue()
        self.t_arrival = time.perf_counter()
        self.seq_id: int | None = None  # engine-thread fields from here
        self.prompt_tokens = 0
        self.in_queue = True  # counted in the queue depth until it gets a slot or ends
        self.ended = False  # engine side: done, failed or aborted
        self.closed = False  # HTTP side: saw the last event

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
        if not self.closed:
            self.engine._inbox.put(("abort", self))


class EngineLoop:
    def __init__(self, gen, *, max_queue: int = 256, metrics: Metrics | None = None):
        self.gen, self.max_queue = gen, max_queue
        self.metrics = metrics or Metrics()
        self._inbox: queue.Queue = queue.Queue()
        self._by_seq: dict[int, Handle] = {}
        self._queued = 0  # submitted, not yet holding a slot
        self._count_lock = threading.Lock()
        self.running = 0  # published by the engine thread after each step
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stopping = False

    # ----------------------------------------------------------- event-loop side
    @property
    def queued(self) -> int:
        return self._queued

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive() and not self._stopping

    def start(self) -> None:
        """Call from the event loop that will read the events."""
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="dflashkit-engine", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping = True
        self._inbox.put(("stop", None))
        if self._thread is not None:
            self._thread.join(timeout)

    def submit(self, request: EngineRequest) -> Handle:
        """Queue a request, or refuse it now: 503 if the engine is down, 429 if the queue is full."""
        if not self.alive:
            raise APIError(503, "the engine is not running (starting up or shutting down); retry later",
                           type="server_error", code="engine_unavailable")
        with self._count_lock:
            if self._queued >= self.max_queue:
                raise APIError(429, f"{self._queued} requests are already waiting for a slot (limit "
                               f"{self.max_queue}); retry later", type="rate_limit_error", code="queue_full")
            self._queued += 1
        handle = Handle(self, request)
        self._inbox.put(("add", handle))
        return handle

    # -------------------------------------------------------------- engine side
    def _run(self) -> None:
        while not self._stopping:
            try:
                self._drain(block=not self.gen.has_work())
                if self.gen.has_work() and not self._stopping:
                    self._step()
            except Exception:  # a bug here must not take the server down with it
                log.exception("engine loop iteration failed")
        self._shutdown()

    def _drain(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=1.0) if block else self._inbox.get_nowait()
        except queue.Empty:
            return
        while True:
            op, handle = item
            if op == "add":
                self._add(handle)
            elif op == "abort":
                self._abort(handle)
            try:
                item = self._inbox.get_nowait()
            except queue.Empty:
                return

    def _add(self, h: Handle) -> None:
        try:
            ids, params = plan(self.gen, h.request)
            h.seq_id = self.gen.add_request(ids, params, stream_text=h.request.stream)
        except APIError as exc:
            return self._fail(h, exc)
        except DFlashError as exc:
            return self._fail(h, bad_request(str(exc)))
        except Exception as exc:
            log.exception("could not add a request")
            return self._fail(h, server_error(f"could not start the request: {type(exc).__name__}: {exc}"))
        self._by_seq[h.seq_id] = h
        h.prompt_tokens = len(ids)
        self._send([(h, Event("accepted"))])

    def _abort(self, h: Handle) -> None:
        if h.ended:
            return
        if h.seq_id is not None:
            self._evict(h.seq_id)
        self._end(h)
        self.metrics.record(lambda m: m.aborted.inc())
        self.running = self.gen.num_running

    def _evict(self, seq_id: int) -> None:
        self.gen.abort(seq_id)  # also frees the slot of a sequence that finished inside a failed step
        if seq_id in self.gen.sequences:
            self.gen.pop_result(seq_id)

    def _step(self) -> None:
        try:
            updates = self.gen.step()
        except Exception as exc:
            log.exception("engine step failed")
            error = server_error(f"generation failed: {type(exc).__name__}: {exc}")
            for seq in [s for s in self.gen.slots if s is not None]:
                h = self._by_seq.get(seq.id)
                self._evict(seq.id)
                if h is not None:
                    self._fail(h, error)
                    self.metrics.record(lambda m: m.aborted.inc())
            self.running = self.gen.num_running
            return
        now = time.perf_counter()
        events, finished = [], []
        for u in updates:
            h = self._by_seq.get(u.seq_id)
            if h is None:
                continue
            if h.in_queue:  # admitted by this step: its first token is here
                self._leave_queue(h)
                self.metrics.record(lambda m, h=h: (m.ttft.observe(now - h.t_arrival),
                                                    m.prompt_tokens.inc(h.prompt_tokens)))
            if h.request.stream:  # a whole-answer request needs only "done": no event-loop wake-up per step
                events.append((h, Event("delta", token_ids=u.token_ids, text=u.text)))
            if u.finished:
                result = self.gen.pop_result(u.seq_id)
                self._end(h)
                events.append((h, Event("done", result=result)))
                finished.append((h, result))
        generated = sum(len(u.token_ids) for u in updates)
        self.metrics.record(lambda m: self._observe(m, generated, finished, now))
        self.running = self.gen.num_running
        self._send(events)

    @staticmethod
    def _observe(m: Metrics, generated: int, finished: list, now: float) -> None:
        m.generated_tokens.inc(generated)
        for h, r in finished:
            m.e2e.observe(now - h.t_arrival)
            for length in r.acceptance_lengths:
                m.acceptance.observe(length)
            if r.completion_tokens > 1:
                m.tpot.observe((r.elapsed_s - r.ttft_s) / (r.completion_tokens - 1))

    def _fail(self, h: Handle, error: APIError) -> None:
        self._end(h)
        self._send([(h, Event("error", error=error))])

    def _end(self, h: Handle) -> None:
        if h.seq_id is not None:
            self._by_seq.pop(h.seq_id, None)
        self._leave_queue(h)
        h.ended = True

    def _leave_queue(self, h: Handle) -> None:
        if h.in_queue:
            h.in_queue = False
            with self._count_lock:
                self._queued -= 1

    def _send(self, events: list[tuple[Handle, Event]]) -> None:
        if not events or self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(_deliver, events)
        except RuntimeError:  # the event loop has closed: nobody is listening
            pass

    def _shutdown(self) -> None:
        """Fail whatever is still queued or running: the clients get an answer, not a hang."""
        error = APIError(503, "the server is shutting down", type="server_error", code="shutting_down")
        while True:
            try:
                op, h = self._inbox.get_nowait()
            except queue.Empty:
                break
            if op == "add":
                self._fail(h, error)
        for h in list(self._by_seq.values()):
            self._evict(h.seq_id)
            self._fail(h, error)
        self.running = 0


def _deliver(events: list[tuple[Handle, Event]]) -> None:
    for handle, event in events:
        handle.events.put_nowait(event)
