"""The one thread that touches the policy: requests arriving together become one ``step_batch``.

``ECoTPolicy.step`` / ``step_batch`` are not thread-safe, so every model call and every change
of a session's state (reset, edit) runs here, in submission order. The worker takes the first
waiting request, then waits at most ``max_wait_ms`` for up to ``max_batch - 1`` more, and runs
them as one batched forward. Requests in one call share an ``unnorm_key`` and have distinct
sessions (a session's steps are sequential); the rest go into the next call. If a batched call
fails, each of its requests is retried alone, so one bad request cannot fail the others.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ecot.serve.protocol import ProtocolError

log = logging.getLogger("ecot.serve")


@dataclass
class StepRequest:
    """One policy step to run; its result arrives in ``future`` as ``(PolicyOutput, info)``."""

    image: np.ndarray
    instruction: str
    session: Any  # a PolicySession
    unnorm_key: str | None = None
    edit: dict | None = None  # applied to the session before the step ({} clears its edits)
    reset: bool = False  # reset the session before the step
    on_text: Callable[[str], None] | None = None  # called on the worker thread with the text so far
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)
    submitted: float = field(default_factory=time.perf_counter)


@dataclass
class _Call:
    fn: Callable[[], Any]
    future: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


def apply_edit(session: Any, edit: dict) -> None:
    """``session.edit(**fields)`` (merged into the session's edits), or ``session.edit(None)`` for
    an empty edit (clears them). A value the policy refuses raises :class:`ProtocolError`."""
    try:
        if edit:
            session.edit(**edit)
        else:
            session.edit(None)
    except (ValueError, TypeError) as err:
        raise ProtocolError(f"bad edit: {err}") from None


def close_session(session: Any, background: bool) -> None:
    """Release a session (its async reasoning thread, if any); ``background`` when that may block."""
    close = getattr(session, "close", None)
    if close is None:
        return
    if background:
        threading.Thread(target=close, name="ecot-session-close", daemon=True).start()
    else:
        close()


class BatchingWorker:
    """Runs ``policy.step_batch`` on one thread, batching requests that arrive together."""

    def __init__(self, policy: Any, max_batch: int = 8, max_wait_ms: float = 5.0):
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self.policy = policy
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self._queue: queue.Queue = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="ecot-policy-worker", daemon=True)
        self._stopped = False
        self.batches = 0  # counters, for /healthz and the benchmark
        self.steps = 0
        self.largest_batch = 0
        self._thread.start()

    # ------------------------------------------------------------------ API (any thread)
    def submit(self, request: StepRequest) -> concurrent.futures.Future:
        if self._stopped:
            raise RuntimeError("the policy worker has stopped")
        self._queue.put(request)
        return request.future

    def call(self, fn: Callable[[], Any]) -> concurrent.futures.Future:
        """Run ``fn()`` on the worker thread (between model calls); its result arrives in the future."""
        if self._stopped:
            raise RuntimeError("the policy worker has stopped")
        item = _Call(fn)
        self._queue.put(item)
        return item.future

    def stop(self, timeout: float = 10.0) -> None:
        self._stopped = True
        self._queue.put(None)
        self._thread.join(timeout)

    # ------------------------------------------------------------------ worker thread
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                break
            items = [item]
            deadline = time.perf_counter() + self.max_wait
            stop = False
            while sum(isinstance(i, StepRequest) for i in items) < self.max_batch:
                remaining = deadline - time.perf_counter()
                try:
                    nxt = self._queue.get(timeout=remaining) if remaining > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stop = True
                    break
                items.append(nxt)
            self._process(items)
            if stop:
                break
        while True:  # fail whatever is left
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not None and not item.future.done():
                item.future.set_exception(RuntimeError("the policy worker has stopped"))

    def _process(self, items: list) -> None:
        groups: list[list[StepRequest]] = []
        for item in items:
            if isinstance(item, _Call):
                self._run_call(item)
                continue
            for group in groups:
                if group[0].unnorm_key == item.unnorm_key and all(r.session is not item.session for r in group):
                    group.append(item)
                    break
            else:
                groups.append([item])
        for group in groups:
            self._step(group)

    @staticmethod
    def _run_call(item: _Call) -> None:
        if not item.future.set_running_or_notify_cancel():
            return
        try:
            item.future.set_result(item.fn())
        except BaseException as err:  # delivered to the caller
            item.future.set_exception(err)

    def _step(self, group: list[StepRequest]) -> None:
        ready = []
        for req in group:
            if not req.future.set_running_or_notify_cancel():
                continue
            try:
                if req.reset:
                    req.session.reset()
                if req.edit is not None:
                    apply_edit(req.session, req.edit)
            except Exception as err:
                req.future.set_exception(err)
                continue
            ready.append(req)
        if not ready:
            return
        try:
            outs = self._forward(ready)
        except Exception as err:
            if len(ready) == 1:
                log.exception("policy step failed")
                ready[0].future.set_exception(err)
                return
            log.warning("batched step of %d failed (%s); retrying each request alone", len(ready), err)
            for req in ready:
                try:
                    out = self._forward([req])[0]
                except Exception as single_err:
                    log.exception("policy step failed")
                    req.future.set_exception(single_err)
                else:
                    self._deliver(req, out, 1)
            return
        for req, out in zip(ready, outs):
            self._deliver(req, out, len(ready))

    def _forward(self, reqs: list[StepRequest]) -> list:
        started = time.perf_counter()
        callbacks = [r.on_text for r in reqs]

        def on_text(index: int, text: str) -> None:
            cb = callbacks[index]
            if cb is not None:
                try:
                    cb(text)
                except Exception:  # a viewer or stream going away must not break the step
                    log.debug("on_text callback failed", exc_info=True)

        outs = self.policy.step_batch(
            [r.image for r in reqs],
            [r.instruction for r in reqs],
            unnorm_key=reqs[0].unnorm_key,
            sessions=[r.session for r in reqs],
            on_text=on_text if any(callbacks) else None,
        )
        outs = list(outs)
        if len(outs) != len(reqs):
            raise RuntimeError(f"step_batch returned {len(outs)} outputs for {len(reqs)} requests")
        self.batches += 1
        self.steps += len(reqs)
        self.largest_batch = max(self.largest_batch, len(reqs))
        for r in reqs:
            r.started = started  # type: ignore[attr-defined]
        return outs

    @staticmethod
    def _deliver(req: StepRequest, out: Any, batch_size: int) -> None:
        done = time.perf_counter()
        started = getattr(req, "started", req.submitted)
        info = {
            "batch_size": batch_size,
            "queue_ms": round((started - req.submitted) * 1000, 2),
            "infer_ms": round((done - started) * 1000, 2),
        }
        req.future.set_result((out, info))
