"""One background thread that owns the engine; web handlers talk to it through a command queue.

All engine calls happen on this thread (the engine is not thread-safe); torch releases the GIL
while it computes, so the web server's event loop stays responsive. Whatever a step produces is
handed to the request's sink; a failing step fails the requests it held, never the loop.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Callable, Hashable
from typing import Any

from gaperon.errors import GaperonError, UsageError
from gaperon.infer.engine import EngineLike
from gaperon.infer.sampling import Sampling

log = logging.getLogger(__name__)


class Overloaded(RuntimeError):
    """Too many requests in flight: the caller should answer 'try again later' (HTTP 503)."""


Sink = Callable[[Any], object]  # receives StepOutput objects, or an Exception when the request failed


class EngineLoop:
    """max_pending: most requests in flight (running + waiting for a slot); beyond it `submit`
    raises `Overloaded` instead of letting the wait queue (and every client's latency) grow without
    bound. Requests beyond the engine's batch size but within this bound wait for a free slot."""

    def __init__(self, engine: EngineLike, max_pending: int = 1024) -> None:
        if max_pending < 1:
            raise UsageError(f"max_pending must be >= 1, got {max_pending}")
        self.engine = engine
        self.max_pending = max_pending
        self.max_len: int = engine.max_len
        self._commands: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._sinks: dict[Hashable, Sink] = {}
        self._ids = itertools.count()
        self._lock = threading.Lock()
        self._inflight = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gaperon-engine", daemon=True)
        self.steps = 0
        self.cancelled = 0

    @property
    def num_active(self) -> int:
        """Requests submitted and neither finished nor cancelled yet."""
        with self._lock:
            return self._inflight

    def start(self) -> None:
        self._thread.start()

    def close(self, timeout: float = 10.0) -> None:
        self._stop.set()
        self._commands.put(("wake",))
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(
        self, prompt_ids: list[int], sampling: Sampling, sink: Sink, echo_logprobs: int | None = None
    ) -> int:
        with self._lock:
            if self._inflight >= self.max_pending:
                raise Overloaded(f"the server is busy ({self._inflight} requests in flight); retry later")
            self._inflight += 1
        rid = next(self._ids)
        self._commands.put(("add", rid, prompt_ids, sampling, echo_logprobs, sink))
        return rid

    def cancel(self, rid: int) -> None:
        self._commands.put(("cancel", rid))

    # ---- the loop thread ----------------------------------------------------------------------
    def _done(self, rid: Hashable) -> None:
        """Forget a request (its sink is dropped): call before delivering its last output."""
        if self._sinks.pop(rid, None) is not None:
            with self._lock:
                self._inflight -= 1

    def _handle(self, cmd: tuple[Any, ...]) -> None:
        if cmd[0] == "add":
            _, rid, prompt, sampling, echo_logprobs, sink = cmd
            self._sinks[rid] = sink
            try:
                self.engine.add_request(prompt, sampling, request_id=rid, echo_logprobs=echo_logprobs)
            except GaperonError as e:  # a request the engine refuses: that client gets a 400
                self._done(rid)
                _deliver(sink, e)
        elif cmd[0] == "cancel":
            if self.engine.cancel(cmd[1]):
                self.cancelled += 1  # stopped before it finished: the client went away
            self._done(cmd[1])

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                cmd = self._commands.get(timeout=None if not self.engine.has_work() else 0)
            except queue.Empty:
                cmd = None
            while cmd is not None:
                self._handle(cmd)
                try:
                    cmd = self._commands.get_nowait()
                except queue.Empty:
                    cmd = None
            if self._stop.is_set() or not self.engine.has_work():
                continue
            try:
                outputs = self.engine.step()
                self.steps += 1
            except Exception as e:  # noqa: BLE001 - a bug in a step fails its requests (logged), not the server
                log.exception("engine step failed")
                for rid, sink in list(self._sinks.items()):
                    self.engine.cancel(rid)
                    self._done(rid)
                    _deliver(sink, RuntimeError(f"generation failed: {e}"))
                continue
            for out in outputs:
                receiver = self._sinks.get(out.request_id)
                if receiver is None:
                    continue
                # Count the request done before its client can see the end of it.
                if out.finished:
                    self._done(out.request_id)
                _deliver(receiver, out)


def _deliver(sink: Sink, item: Any) -> None:
    try:
        sink(item)
    except RuntimeError:  # the receiver's event loop is closed (its client is gone): nothing to tell
        log.debug("dropped an engine output for a vanished request", exc_info=True)
