"""Signals sent by engines and workers, with the namespace as sender.

``@signals.job_started.connect`` receives the signal of every engine,
``@signals.job_started.connect_via('my-namespace')`` the one of a single
engine. The API is blinker's. A receiver that raises is logged to the
``spinach.signals`` logger and never breaks the job.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Hashable
from typing import Any, Callable, TypeVar

import blinker
from typing_extensions import override

__all__ = [
    "SafeNamedSignal",
    "job_cancelled",
    "job_failed",
    "job_finished",
    "job_schedule_retry",
    "job_scheduling",
    "job_started",
    "worker_started",
    "worker_terminated",
]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


class SafeNamedSignal(blinker.NamedSignal):
    """A blinker signal whose failing receivers are logged, not raised.

    It also remembers, for a namespace sender, the receivers to call while
    none of them is weakly referenced, until one connects or disconnects:
    sending does not walk blinker's tables for every job.
    """

    def __init__(self, name: str, doc: str | None = None) -> None:
        super().__init__(name, doc)
        self._calls: dict[str, tuple[Callable[..., Any], ...]] = {}

    def __repr__(self) -> str:
        return f'SafeNamedSignal "{self.name}"'

    # The remembered receivers are forgotten after each change, and before: a send
    # in another thread meanwhile may remember them as they were, until then.
    @override
    def connect(self, receiver: F, sender: Any = blinker.ANY, weak: bool = True) -> F:
        self._calls = {}
        try:
            return super().connect(receiver, sender, weak)
        finally:
            self._calls = {}

    @override
    def _disconnect(self, receiver_id: Hashable, sender_id: Hashable) -> None:
        self._calls = {}
        try:
            super()._disconnect(receiver_id, sender_id)
        finally:
            self._calls = {}

    @override
    def _clear_state(self) -> None:
        self._calls = {}
        try:
            super()._clear_state()
        finally:
            self._calls = {}

    def _receivers_of(self, sender: Any) -> tuple[Callable[..., Any], ...]:
        calls = self._calls
        receivers = calls.get(sender) if type(sender) is str else None
        if receivers is None:
            receivers = tuple(self.receivers_for(sender))
            strong = not any(isinstance(r, weakref.ref) for r in self.receivers.values())
            if type(sender) is str and strong:
                calls[sender] = receivers
        return receivers

    @override
    def send(
        self,
        sender: Any | None = None,
        /,
        *,
        _async_wrapper: Callable[..., Any] | None = None,
        **kwargs: Any,
    ) -> list[tuple[Callable[..., Any], Any]]:
        results: list[tuple[Callable[..., Any], Any]] = []
        if self.is_muted or not self.receivers:
            return results
        for receiver in self._receivers_of(sender):
            try:
                results.append((receiver, receiver(sender, **kwargs)))
            except Exception:
                logger.exception("Receiver %r of signal %r raised; ignored", receiver, self.name)
        return results


def _signal(name: str, doc: str) -> SafeNamedSignal:
    return SafeNamedSignal(name, doc=doc)


job_scheduling = _signal(
    "job_scheduling",
    "Sent by the engine for each job it is about to store, in the thread that schedules "
    "it: (namespace, job). Receivers may set entries of job.meta (str to str), which is "
    "stored with the job: a trace context, a tenant, a request id.",
)
job_started = _signal("job_started", "Sent by a worker before it runs a job: (namespace, job).")
job_finished = _signal(
    "job_finished",
    "Sent by a worker after a job ran, whatever the outcome, and after each job_started "
    "(also for a job taken over right before its task was called): (namespace, job).",
)
job_schedule_retry = _signal(
    "job_schedule_retry", "Sent when a failed job will be retried: (namespace, job, err)."
)
job_failed = _signal("job_failed", "Sent when a job failed for good: (namespace, job, err).")
job_cancelled = _signal(
    "job_cancelled",
    "Sent by the engine whose cancel() cancelled a job, once per job: (namespace, job), "
    "the job as it was stored, with the status it had (WAITING, QUEUED or RUNNING).",
)
worker_started = _signal(
    "worker_started",
    "Sent by a worker thread or coroutine when it starts: (namespace, worker_name).",
)
worker_terminated = _signal(
    "worker_terminated", "Sent by a worker when it stops: (namespace, worker_name)."
)
