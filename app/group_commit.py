"""Group commit: calls made at the same moment by the concurrent requests of one process, sent together.

Each request's call joins a queue and waits for the process' one lock. Whoever holds the lock takes
every call queued so far, its own among them, sends them in one go and hands each caller its own result;
the callers whose call went with it find it done when they get the lock and leave at once. A lone
request goes alone, as soon as it comes, so this adds no wait; under load, one round trip to Redis
carries the calls of every request that came while the last one was on the wire, which spares the
process and Redis most of a round trip's cost (system calls, wake-ups, the client's own bookkeeping).

The lock is `threading.Lock()` looked up when a GroupCommit is made: under gunicorn's gevent worker,
which patches `threading` before it loads the app, it is gevent's, and a request waiting for it lets
the others run.
"""

from __future__ import annotations

import threading
from collections import deque
from typing import Callable, Generic, TypeVar

Call = TypeVar("Call")
Result = TypeVar("Result")


class _Pending(Generic[Call, Result]):
    __slots__ = ("call", "result", "error", "done")

    def __init__(self, call: Call):
        self.call = call
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.done = False


class GroupCommit(Generic[Call, Result]):
    """`submit(call)` → its result, sent with the calls submitted meanwhile by `send(calls)`.

    `send` answers a list of results (or exceptions, raised to their own callers) in the calls' order;
    when `send` itself raises an Exception, every call it was given raises it. Should the sender be
    interrupted (a BaseException: its greenlet killed, the process stopping), the other calls go back to
    the queue and the next caller sends them: `send` must be idempotent, a call may then reach it twice."""

    def __init__(self, send: Callable[[list[Call]], list[Result | BaseException]]):
        self._send = send
        self._lock = threading.Lock()
        self._queued: deque[_Pending[Call, Result]] = deque()  # append and popleft are atomic

    def submit(self, call: Call) -> Result:
        pending: _Pending[Call, Result] = _Pending(call)
        self._queued.append(pending)
        with self._lock:
            if not pending.done:  # still queued: nobody has taken it while this caller waited
                self._send_queued()
        if pending.error is not None:
            raise pending.error
        return pending.result  # type: ignore[return-value]

    def _send_queued(self) -> None:
        batch = []
        while self._queued:
            batch.append(self._queued.popleft())
        try:
            results = self._send([pending.call for pending in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"group commit: {len(results)} results for {len(batch)} calls")
        except Exception as error:  # noqa: BLE001 - every caller of the batch gets it
            results = [error] * len(batch)
        except BaseException:
            self._queued.extendleft(reversed(batch))  # no caller waits for ever; the next one sends them
            raise
        for pending, result in zip(batch, results):
            if isinstance(result, BaseException):
                pending.error = result
            else:
                pending.result = result
            pending.done = True
