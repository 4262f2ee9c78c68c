"""Stopping jobs of thread workers: time limits and cancellation.

One watcher thread per pool of workers raises
:class:`~spinach.exc.JobTimeLimitExceeded` inside a job's thread at its limit,
and :meth:`Interrupts.interrupt` raises :class:`~spinach.exc.JobCancelled`
there when the job is cancelled, both with ``PyThreadState_SetAsyncExc``:
the thread sees the exception at its next Python bytecode. Code blocked
inside C (a socket read without a timeout, ``time.sleep``) sees it only once
it returns into Python.

An exception is set at most once per job, and only while the job is armed;
disarming clears it if it is still pending. So it lands inside the task, or
in the few bytecodes between the task's return and the disarming, where
:meth:`Interrupts.run` catches it too: never later, in the worker's own code.

A job without a time limit (most jobs) is armed without the lock, in a slot
its thread reuses: it costs one lock round trip, to disarm it.
"""

from __future__ import annotations

import ctypes
import heapq
import itertools
import threading
import time
from collections.abc import Container
from typing import Any, Callable

from .exc import JobCancelled, JobTimeLimitExceeded

__all__ = ["Interrupts"]

#: Entries disarmed early that the heap keeps before it is rebuilt without them.
_MIN_STALE = 64

# PyThreadState_SetAsyncExc(thread id, exception): one prototype to set the
# exception, one to clear it (a NULL exception, which None as a py_object is not).
_PROTOTYPE = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.py_object)
_set_async_exc = _PROTOTYPE(("PyThreadState_SetAsyncExc", ctypes.pythonapi))
_CLEARING = ctypes.PYFUNCTYPE(ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p)
_clear_async_exc = _CLEARING(("PyThreadState_SetAsyncExc", ctypes.pythonapi))


class _Watch:
    """One job under watch: its thread, its deadline (``time.monotonic()``, or
    None without a limit), and the exception set in its thread, if one was."""

    __slots__ = ("armed", "deadline", "fired", "in_heap", "thread_id")

    def __init__(self, thread_id: int, deadline: float | None) -> None:
        self.thread_id = thread_id
        self.deadline = deadline
        self.armed = True
        self.fired: type[BaseException] | None = None
        self.in_heap = False


class _Slot:
    """The job without a time limit that a worker thread runs: its key while it
    is armed (else None), and the exception set in the thread, if one was."""

    __slots__ = ("fired", "key", "thread_id")

    def __init__(self, thread_id: int) -> None:
        self.thread_id = thread_id
        self.key: object = None
        self.fired: type[BaseException] | None = None


class Interrupts:
    """Interrupts the jobs of thread workers that run past their time limit,
    or that are cancelled.

    Args:
        name: the name of the watcher thread, started with the first job that
            has a time limit.
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
        # The jobs with a time limit armed, by key, for interrupt().
        self._armed: dict[object, _Watch] = {}
        # The slot of each thread that ran a job without a time limit.
        self._local = threading.local()
        self._slots: list[_Slot] = []
        self._thread: threading.Thread | None = None
        self._stopping = False

    def run(
        self,
        key: object,
        limit: float | None,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        cancelled: Container[object] = (),
    ) -> tuple[Any, BaseException | None]:
        """Call ``func(*args, **kwargs)`` in this thread, interruptible by
        :meth:`interrupt` with ``key`` and, with a ``limit``, after ``limit``
        seconds. A ``key`` in ``cancelled`` when the call is armed (an
        interrupt that came before it) raises at once.

        Returns its result and None, or None and the exception it raised
        (:class:`JobTimeLimitExceeded` at the limit, :class:`JobCancelled`
        when interrupted).
        """
        if limit is None:
            return self._run_unlimited(key, func, args, kwargs, cancelled)
        watch = _Watch(threading.get_ident(), None if limit is None else time.monotonic() + limit)
        result: Any = None
        err: BaseException | None = None
        try:
            # Armed inside: from here on an exception may land anywhere.
            self._arm(key, watch, cancelled)
            try:
                result = func(*args, **kwargs)
            except BaseException as e:
                err = e
            finally:
                self._disarm(key, watch)
        except (JobTimeLimitExceeded, JobCancelled) as e:
            # Set at the limit or interrupted, it landed outside the task (before
            # the call, or after it returned), before it was disarmed: at most
            # once, so this disarming cannot be interrupted.
            self._disarm(key, watch)
            result, err = None, e
        fired = watch.fired
        if fired is not None and not isinstance(err, fired):
            # Set as the task ended (or swallowed by it): the job was stopped all the same.
            result, err = None, fired()
        return result, err

    def _run_unlimited(
        self,
        key: object,
        func: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        cancelled: Container[object],
    ) -> tuple[Any, BaseException | None]:
        """:meth:`run` without a time limit."""
        try:
            slot: _Slot = self._local.slot
        except AttributeError:
            slot = self._local.slot = _Slot(threading.get_ident())
            with self._lock:
                self._slots.append(slot)
        result: Any = None
        err: BaseException | None = None
        try:
            slot.fired = None
            # Armed: interrupt() may raise from here on. An interrupt that came
            # before it put the key in cancelled first, so one of the two sees
            # the other.
            slot.key = key
            if key in cancelled:
                self._cancel_at_arming(slot)
            try:
                result = func(*args, **kwargs)
            except BaseException as e:
                err = e
            finally:
                self._disarm_slot(slot)
        except (JobTimeLimitExceeded, JobCancelled) as e:
            # Interrupted outside the task, before it was disarmed: at most
            # once, so this disarming cannot be interrupted.
            self._disarm_slot(slot)
            result, err = None, e
        fired = slot.fired
        if fired is not None and not isinstance(err, fired):
            # Set as the task ended (or swallowed by it): the job was stopped all the same.
            result, err = None, fired()
        return result, err

    def _cancel_at_arming(self, slot: _Slot) -> None:
        """Raise JobCancelled for a job found cancelled as it was armed: once,
        whether or not interrupt() also saw it armed and set it already."""
        with self._lock:
            if slot.fired is not None:
                _clear_async_exc(slot.thread_id, None)
            slot.fired = JobCancelled
        raise JobCancelled()

    def _disarm_slot(self, slot: _Slot) -> None:
        with self._lock:
            if slot.key is None:
                return
            slot.key = None
            if slot.fired is not None:
                # Not raised yet: it never will be.
                _clear_async_exc(slot.thread_id, None)

    def interrupt(self, key: object) -> None:
        """Raise :class:`JobCancelled` in the thread of the job armed with
        ``key``, unless it is not armed or was already interrupted."""
        with self._lock:
            target: _Watch | _Slot | None = self._armed.get(key)
            if target is None:
                # Jobs without a time limit: one slot per worker thread.
                target = next((slot for slot in self._slots if slot.key == key), None)
            if target is not None and target.fired is None:
                self._raise(target, JobCancelled)

    def stop(self) -> None:
        """Stop the watcher thread; jobs watched meanwhile are no longer interrupted
        at their limit."""
        with self._lock:
            self._stopping = True
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()

    def _raise(self, target: _Watch | _Slot, exception: type[BaseException]) -> None:
        """Set ``exception`` in the thread of ``target``; with the lock held."""
        modified = _set_async_exc(target.thread_id, exception)
        if modified > 1:  # never expected; CPython's docs say to undo it
            _clear_async_exc(target.thread_id, None)
        if modified == 1:
            target.fired = exception

    def _arm(self, key: object, watch: _Watch, cancelled: Container[object]) -> None:
        with self._lock:
            self._armed[key] = watch
            if key in cancelled:
                watch.fired = JobCancelled
            elif watch.deadline is not None:
                heapq.heappush(self._heap, (watch.deadline, next(self._order), watch))
                watch.in_heap = True
                if self._thread is None:
                    self._thread = threading.Thread(
                        target=self._watch, name=self._name, daemon=True
                    )
                    self._thread.start()
                elif self._heap[0][2] is watch:
                    self._changed.notify()
        if watch.fired is not None:
            raise JobCancelled()

    def _disarm(self, key: object, watch: _Watch) -> None:
        with self._lock:
            if not watch.armed:
                return
            watch.armed = False
            if self._armed.get(key) is watch:
                del self._armed[key]
            if watch.fired is not None:
                # Not raised yet: it never will be.
                _clear_async_exc(watch.thread_id, None)
            if not watch.in_heap:
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
                    watch.in_heap = False
                    if not watch.armed:
                        self._stale -= 1
                        continue
                    if watch.fired is None:
                        self._raise(watch, JobTimeLimitExceeded)
                wait = self._heap[0][0] - now if self._heap else None
                self._changed.wait(wait)
