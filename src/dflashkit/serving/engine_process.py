"""The engine core in a process of its own: the child loads the model, owns the device and steps; the server's
process keeps only HTTP. Commands go down one pipe, event batches come up another (one message per step).

The child is spawned (not forked: CUDA cannot cross a fork) and gets a picklable `build()` that returns the
Generator, e.g. `functools.partial(dflashkit.load, "Qwen/Qwen3-8B", ...)`. It ignores Ctrl-C (the server
shuts it down with a "stop" command) and exits when the server's end of the pipe closes.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import multiprocessing
import queue
import signal
import threading
from collections.abc import Callable

from ..errors import ConfigError, DFlashError
from .engine_core import Command, EngineCore, describe

log = logging.getLogger("dflashkit.serve")


class EngineProcess:
    def __init__(self, build: Callable[[], object]):
        self.build = build
        self.info: dict = {}
        self._proc: multiprocessing.process.BaseProcess | None = None
        self._commands = self._events = None
        self._send_lock = threading.Lock()  # the event loop and the shutdown thread may both send
        self._gone = False
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.is_alive() and not self._gone

    def launch(self) -> dict:
        """Spawn the child and wait until its Generator is ready; returns what it reports (max_length, ...).
        Raises ConfigError with the child's own message when the model cannot be loaded."""
        ctx = multiprocessing.get_context("spawn")
        child_commands, self._commands = ctx.Pipe(duplex=False)
        self._events, child_events = ctx.Pipe(duplex=False)
        self._proc = ctx.Process(target=engine_process_main, args=(self.build, child_commands, child_events),
                                 name="dflashkit-engine")
        self._proc.start()
        child_commands.close()
        child_events.close()
        atexit.register(self.stop, 5.0)
        try:
            kind, payload = self._events.recv()  # blocks while the model loads; EOF if the child dies
        except EOFError:
            self._proc.join(5)
            raise RuntimeError(f"the engine process exited (code {self._proc.exitcode}) before it was ready") from None
        if kind != "ready":
            message, user_error = payload
            self._proc.join(10)
            raise (ConfigError if user_error else RuntimeError)(f"the engine process could not start: {message}")
        self.info = payload
        return payload

    def start(self, loop: asyncio.AbstractEventLoop, deliver, gone) -> None:
        if self._proc is None:
            self.launch()
        self._loop = loop
        loop.add_reader(self._events.fileno(), self._readable, deliver, gone)

    def send(self, command: Command) -> None:
        with self._send_lock:
            self._commands.send(command)

    def detach(self) -> None:
        """Stop reading events (call on the event loop, before `stop`)."""
        if self._loop is not None and not self._gone:
            self._loop.remove_reader(self._events.fileno())

    def stop(self, timeout: float = 10.0) -> None:
        if self._proc is None or not self._proc.is_alive():
            return
        try:
            self.send(("stop", None, None))
        except OSError:
            pass
        self._proc.join(timeout)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

    def _readable(self, deliver, gone) -> None:
        try:
            while self._events.poll():
                kind, payload = self._events.recv()
                if kind == "events":
                    deliver(payload)
        except (EOFError, OSError):
            self._loop.remove_reader(self._events.fileno())
            self._gone = True
            self._proc.join(1)
            log.error("the engine process exited (code %s)", self._proc.exitcode)
            gone(f"the engine process exited (code {self._proc.exitcode})")


def engine_process_main(build: Callable[[], object], commands, events) -> None:
    """The child: build the Generator, say it is ready (or why not), then run the core until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: dflashkit engine: %(message)s")
    try:
        gen = build()
    except BaseException as exc:  # noqa: BLE001  (reported to the server, which fails with it)
        events.send(("failed", (f"{type(exc).__name__}: {exc}", isinstance(exc, DFlashError))))
        return
    events.send(("ready", describe(gen)))
    inbox: queue.Queue[Command] = queue.Queue()

    def read_commands() -> None:
        """Empty the command pipe as soon as the server writes. Read only between steps, a large command
        (a long prompt) kept the server's send waiting while the pipe was full, so it read no events; an
        event batch larger than that pipe (long answers ending) then kept the loop waiting too: both hung."""
        try:
            while True:
                command = commands.recv()
                inbox.put(command)
                if command[0] == "stop":
                    return
        except (EOFError, OSError):  # the server is gone
            inbox.put(("stop", None, None))

    threading.Thread(target=read_commands, name="dflashkit-commands", daemon=True).start()

    def receive(block: bool) -> list[Command]:
        try:
            received = [inbox.get(timeout=1.0) if block else inbox.get_nowait()]
        except queue.Empty:
            return []
        while True:
            try:
                received.append(inbox.get_nowait())
            except queue.Empty:
                return received

    EngineCore(gen, lambda batch: events.send(("events", batch))).run(receive)
