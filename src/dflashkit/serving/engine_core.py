"""The engine side of the server: owns the Generator, applies adds and aborts between steps, steps, emits events.

It knows nothing of asyncio or HTTP: it runs on a thread of the server's process or in a process of its own
(`engine_loop.py` joins it to the event loop either way), reads commands `(op, request id, payload)` and hands
every step's events to a sink as one batch. A failing request fails alone; a failing step fails the sequences
it was running (their cache rows are suspect); the loop itself lives until it is told to stop.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from ..engine.sequence import GenerationResult
from ..errors import DFlashError
from .errors import APIError, bad_request, server_error
from .prompts import plan
from .protocol import EngineRequest

log = logging.getLogger("dflashkit.serve")


@dataclass
class Event:
    kind: str  # "accepted" | "started" (first token: it holds a slot) | "delta" | "done" | "error"
    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    result: GenerationResult | None = None
    error: APIError | None = None
    prompt_tokens: int = 0  # "accepted": the prompt's length in tokens
    failed_running: bool = False  # "error": a step failed under this running sequence


Batch = list[tuple[int, Event]]
Command = tuple[str, int | None, EngineRequest | None]  # ("add" | "abort" | "stop", request id, request)


def describe(gen) -> dict:
    """What the HTTP side needs to know of the engine (it may live in another process)."""
    return {"max_length": gen.max_length, "max_batch": gen.max_batch, "speculative": gen.speculative,
            "draft_source": getattr(gen, "draft_source", None)}


class EngineCore:
    def __init__(self, gen, sink: Callable[[Batch], None]):
        self.gen, self.sink = gen, sink
        self._request_of: dict[int, int] = {}  # sequence id -> request id
        self._sequence_of: dict[int, int] = {}  # request id -> sequence id
        self._streamed: set[int] = set()  # request ids that want a delta per step
        self._not_started: set[int] = set()  # request ids still waiting for their first token

    def run(self, receive: Callable[[bool], list[Command]]) -> None:
        """Until a "stop" command: apply the commands that arrived (waiting for one while idle), then step."""
        while True:
            try:
                for op, rid, request in receive(not self.gen.has_work()):
                    if op == "stop":
                        self._evict_all()
                        return
                    if op == "add":
                        self.add(rid, request)
                    elif op == "abort":
                        self.abort(rid)
                if self.gen.has_work():
                    self.step()
            except Exception:  # a bug here must not take the server down with it
                log.exception("engine loop iteration failed")

    def add(self, rid: int, request: EngineRequest) -> None:
        try:
            ids, params = plan(self.gen, request)
            seq_id = self.gen.add_request(ids, params, stream_text=request.stream)
        except APIError as exc:
            return self.sink([(rid, Event("error", error=exc))])
        except DFlashError as exc:
            return self.sink([(rid, Event("error", error=bad_request(str(exc))))])
        except Exception as exc:
            log.exception("could not add a request")
            error = server_error(f"could not start the request: {type(exc).__name__}: {exc}")
            return self.sink([(rid, Event("error", error=error))])
        self._request_of[seq_id], self._sequence_of[rid] = rid, seq_id
        self._not_started.add(rid)
        if request.stream:
            self._streamed.add(rid)
        self.sink([(rid, Event("accepted", prompt_tokens=len(ids)))])

    def abort(self, rid: int) -> None:
        """Free the slot of a request whose client left (a no-op once it has ended)."""
        seq_id = self._sequence_of.get(rid)
        if seq_id is not None:
            self._forget(rid)
            self._evict(seq_id)

    def step(self) -> None:
        try:
            events = self._events(self.gen.step())
        except Exception as exc:
            log.exception("engine step failed")
            return self._fail_running(server_error(f"generation failed: {type(exc).__name__}: {exc}"))
        if events:
            self.sink(events)

    def _events(self, updates) -> Batch:
        """The step's events. Finished requests are forgotten only once all are built: a failure midway must
        still find them to fail them (their `done` is lost with the rest of the batch)."""
        events: Batch = []
        finished = []
        for u in updates:
            rid = self._request_of.get(u.seq_id)
            if rid is None:
                continue
            if rid in self._not_started:  # admitted by this step: its first token is here
                self._not_started.discard(rid)
                events.append((rid, Event("started")))
            if rid in self._streamed:  # a whole answer needs only "done": no event-loop wake-up per step
                events.append((rid, Event("delta", token_ids=u.token_ids, text=u.text)))
            if u.finished:
                events.append((rid, Event("done", result=self.gen.pop_result(u.seq_id))))
                finished.append(rid)
        for rid in finished:
            self._forget(rid)
        return events

    def _fail_running(self, error: APIError) -> None:
        """One error for every request past the queue: those in a slot, and those the failed step finished and
        already freed (only slotted ones were failed: the others never got an end)."""
        queued = {s.id for s in self.gen.waiting}
        events = []
        for seq_id, rid in list(self._request_of.items()):
            if seq_id not in queued:
                self._forget(rid)
                self._evict(seq_id)
                events.append((rid, Event("error", error=error, failed_running=True)))
        for seq in [s for s in self.gen.slots if s is not None]:  # their cache rows are suspect
            self._evict(seq.id)
        if events:
            self.sink(events)

    def _forget(self, rid: int) -> None:
        seq_id = self._sequence_of.pop(rid)
        self._request_of.pop(seq_id, None)
        self._streamed.discard(rid)
        self._not_started.discard(rid)

    def _evict(self, seq_id: int) -> None:
        self.gen.abort(seq_id)  # also frees the slot of a sequence that finished inside a failed step
        self.gen.sequences.pop(seq_id, None)  # no result to build (that may be what failed)

    def _evict_all(self) -> None:
        for rid, seq_id in list(self._sequence_of.items()):
            self._forget(rid)
            self._evict(seq_id)
