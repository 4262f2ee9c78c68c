"""Time limits of jobs on thread workers: one watcher thread per pool of workers.

At a job's limit the watcher raises :class:`~spinach.exc.JobTimeLimitExceeded`
inside the job's thread with ``PyThreadState_SetAsyncExc``: the thread sees
it at its next Python bytecode. Code blocked inside C (a socket read without
a timeout, ``time.sleep``) sees it only once it returns into Python.

The exception is set at most once per job, and only while the job is armed;
disarming clears it if it is still pending. So it lands inside the task, or
in the few bytecodes between the task's return and the disarming, where
:meth:`TimeLimits.run` catches it too: never later, in the worker's own code.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from typing import Any, Callable

from .exc import JobTimeLimitExceeded

__all__ = ["TimeLimits"]

#: Entries disarmed early that the heap keeps before it is rebuilt without them.
_MIN_STALE = 64

# PyThreadState_SetAsyncExc(thread id, exception): one prototype to set the
# exception, one to clear it (a NULL exception, which None as a py_object is not).
_PROTOTYPE = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)
_set_async_exc = _PROTOTYPE(("PyThreadState_SetAsyncExc", ctypes.pythonapi))
_CLEARING = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_clear_async_exc = _CLEARING(("PyThreadState_SetAsyncExc", ctypes.pythonapi))


class _Watch:
    """One job under watch: its thread and deadline (``time.monotonic()``)."""

    __slots__ = ("armed", "deadline", "fired", "thread_id")

    def __init__(self, thread_id: int, deadline: float) -> None:
        self.thread_id = thread_id
        self.deadline = deadline
        self.armed = True
        self.fired = False


class TimeLimits:
    """Interrupts the jobs of thread workers that run past their time limit.

    Args:
        name: the name of the watcher thread, started with the first job watched.
    """

    def __init__(self, name: str) -> None:
        self._name = name
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._heap: list[tuple[float, int, _Watch]] = []
        # Entries of the heap disarmed before their deadline: dropped in one pass
        # once they are most of it, so that the heap holds about the jobs running.
        self._stale = 0
        self._order = itertools.count()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def run(self, limit: float, call: Callable[[], Any]) -> tuple[Any, BaseException | None]:
        """Call ``call`` in this thread, interrupting it after ``limit`` seconds.

        Returns its result and None, or None and the exception it raised
        (:class:`JobTimeLimitExceeded` at the limit).
        """
        watch = _Watch(threading.get_ident(), time.monotonic() + limit)
        result: Any = None
        err: BaseException | None = None
        try:
            # Armed inside: from here on the exception may land anywhere.
            self._arm(watch)
            try:
                result = call()
            except BaseException as e:
                err = e
            finally:
                self._disarm(watch)
        except JobTimeLimitExceeded as e:
            # Set at the limit, it landed outside the task (before the call, or
            # after it returned), before it was disarmed: at most once, so this
            # disarming cannot be interrupted.
            self._disarm(watch)
            result, err = None, e
        if watch.fired and not isinstance(err, JobTimeLimitExceeded):
            # The limit was reached as the task ended: it ran past it all the same.
            result, err = None, JobTimeLimitExceeded()
        return result, err

    def stop(self) -> None:
        """Stop the watcher thread; jobs watched meanwhile are no longer interrupted."""
        with self._lock:
            self._stopping = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()

    def _arm(self, watch: _Watch) -> None:
        with self._lock:
            heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
            if self._thread is None:
                self._thread = threading.Thread(target=self._watch, name=self._name, daemon=True)
                self._thread.start()
            elif self._heap[0][2] is watch:
                self._changed.notify()

    def _disarm(self, watch: _Watch) -> None:
        with self._lock:
            if not watch.armed:
                return
            watch.armed = False
            if watch.fired:
                # Not raised yet: it never will be.
                _clear_async_exc(watch.thread_id, None)
                return
            self._stale += 1
            if self._stale > _MIN_STALE and 2 * self._stale > len(self._heap):
                self._heap = [entry for entry in self._heap if entry[2].armed]
                heapq.heapify(self._heap)
                self._stale = 0

    def _watch(self) -> None:
        with self._lock:
            while not self._stopping:
                now = time.monotonic()
                while self._heap and (not self._heap[0][2].armed or self._heap[0][0] <= now):
                    _, _, watch = heapq.heappop(self._heap)
                    if not watch.armed:
                        self._stale -= 1
                        continue
                    modified = _set_async_exc(watch.thread_id, JobTimeLimitExceeded)
                    if modified > 1:  # never expected; CPython's docs say to undo it
                        _clear_async_exc(watch.thread_id, None)
                    watch.fired = modified == 1
                wait = self._heap[0][0] - now if self._heap else None
                self._changed.wait(wait)
