"""The engine's methods to see jobs by id, wait for their results, and handle failed jobs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
import uuid
from collections.abc import Iterable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Union

from . import signals
from ._ended import cancelled_outcome
from .const import DEFAULT_KEEP_FAILED
from .exc import ConfigurationError, JobCancelledError, JobFailedError, UnknownJobError
from .job import Job, JobInfo, JobStatus

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

    from .brokers.base import Broker
    from .task import Tasks

__all__ = ["JobId", "JobLifecycle"]

logger = logging.getLogger("spinach.engine")

#: What names a job: its id, the id's text, or the job itself.
JobId: TypeAlias = Union[uuid.UUID, str, Job]

#: Longest wait of get_result between two looks at the job, in seconds: a
#: safety net for a notification lost while reconnecting, not the way it wakes up.
_LOOK_AGAIN = 5.0


class _LoopEvent(threading.Event):
    """A threading.Event that also wakes a coroutine of ``loop`` awaiting
    ``woken`` when it is set, from any thread."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__()
        self._loop = loop
        self.woken = asyncio.Event()

    def set(self) -> None:
        super().set()
        # The loop may be closed by now: nobody is waiting any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self.woken.set)

    def clear(self) -> None:
        super().clear()
        self.woken.clear()


def job_id_text(job_id: JobId) -> str | None:
    """The text of a job id, or None for a str that is not a job id.

    Raises:
        TypeError: ``job_id`` is neither a UUID, a str nor a Job.
    """
    if isinstance(job_id, Job):
        return str(job_id.id)
    if isinstance(job_id, uuid.UUID):
        return str(job_id)
    if isinstance(job_id, str):
        try:
            return str(uuid.UUID(job_id))
        except ValueError:
            return None
    raise TypeError(f"a job id must be a uuid.UUID, a str or a Job, got {job_id!r}")


class JobLifecycle:
    """What an :class:`~spinach.engine.Engine` offers to see and steer jobs by id."""

    _broker: Broker
    _tasks: Tasks
    _namespace: str
    _keep_failed: timedelta | None

    def get_job(self, job_id: JobId) -> JobInfo | None:
        """What the broker holds of a job: its status, and its result or error
        once it ended; None when it holds nothing of it.

        Waiting, queued and running jobs are always found. Once a job ended it
        is found only while its result is kept (a task with ``keep_result``)
        or while it is in the failed store.
        """
        text = job_id_text(job_id)
        return None if text is None else self._broker.get_job(text)

    def get_result(self, job_id: JobId, timeout: float | None = None) -> Any:
        """Wait for a job of a task keeping results to end, and return its result.

        Woken by the broker's notifications, not by polling.

        Args:
            timeout: most seconds to wait; None waits as long as it takes.

        Raises:
            JobFailedError: the job failed for good; its ``error`` says why.
            JobCancelledError: the job was cancelled.
            TimeoutError: the job had not ended after ``timeout`` seconds.
            UnknownJobError: the job is unknown, its result expired, or its
                task keeps no result.
        """
        text, deadline = self._wait_target("get_result", job_id, timeout)
        with self._broker.watch_job(text) as ended:
            while True:
                ended.clear()
                info = self._not_failed(text, self._broker.get_job(text))
                if info.status is JobStatus.SUCCEEDED:
                    return info.result
                ended.wait(self._wait_for(text, info, deadline, timeout))

    async def get_job_async(self, job_id: JobId) -> JobInfo | None:
        """:meth:`get_job` for asyncio code: the loop goes on while the broker
        is read (see :meth:`Broker.get_job_async`)."""
        text = job_id_text(job_id)
        return None if text is None else await self._broker.get_job_async(text)

    async def get_result_async(self, job_id: JobId, timeout: float | None = None) -> Any:
        """:meth:`get_result` for asyncio code: the loop goes on while the job is
        read, and the wait between two looks, woken by the broker's
        notifications, holds no thread and polls nothing."""
        text, deadline = self._wait_target("get_result_async", job_id, timeout)
        ended = _LoopEvent(asyncio.get_running_loop())
        with self._broker.watch_job(text, ended):
            while True:
                ended.clear()
                info = self._not_failed(text, await self._broker.get_job_async(text))
                if info.status is JobStatus.SUCCEEDED:
                    return info.result
                wait = self._wait_for(text, info, deadline, timeout)
                if not ended.is_set():
                    # Not asyncio.wait_for: before Python 3.12 it can lose a cancel
                    # that comes as the wait ends.
                    woken = asyncio.ensure_future(ended.woken.wait())
                    try:
                        await asyncio.wait({woken}, timeout=wait)
                    finally:
                        woken.cancel()

    @staticmethod
    def _wait_target(method: str, job_id: JobId, timeout: float | None) -> tuple[str, float | None]:
        """The job id's text and the time.monotonic() deadline of a wait for its result.

        Raises:
            ConfigurationError: ``timeout`` is negative.
            UnknownJobError: ``job_id`` is not a job id.
        """
        if timeout is not None and timeout < 0:
            raise ConfigurationError(f"{method}(timeout=...) must be 0 or more, got {timeout!r}")
        text = job_id_text(job_id)
        if text is None:
            raise UnknownJobError(f"{job_id!r} is not a job id: pass job.id or its text")
        return text, None if timeout is None else time.monotonic() + timeout

    def _not_failed(self, text: str, info: JobInfo | None) -> JobInfo:
        """``info``, of a job that succeeded or has not ended yet.

        Raises:
            UnknownJobError, JobFailedError, JobCancelledError: as :meth:`get_result`.
        """
        if info is None:
            raise UnknownJobError(
                f"No job {text} is known: it was never scheduled in this namespace, "
                "or it ended and nothing of it is kept (its task keeps no result, or "
                "its result expired)"
            )
        if info.status is JobStatus.FAILED:
            raise JobFailedError(info)
        if info.status is JobStatus.CANCELLED:
            raise JobCancelledError(info)
        if info.status is not JobStatus.SUCCEEDED:
            self._check_keeps_result(info)
        return info

    @staticmethod
    def _wait_for(text: str, info: JobInfo, deadline: float | None, timeout: float | None) -> float:
        """Seconds to wait before the next look at a job that has not ended.

        Raises:
            TimeoutError: ``deadline`` has passed.
        """
        wait = _LOOK_AGAIN
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                raise TimeoutError(
                    f"Job {text} of task {info.task_name!r} had not ended after "
                    f"{timeout:g} s (it is {info.status.name})"
                )
        return wait

    def _check_keeps_result(self, info: JobInfo) -> None:
        task = self._tasks.tasks.get(info.task_name)
        if task is not None and task.keep_result is None:
            raise UnknownJobError(
                f"Task {info.task_name!r} keeps no result, so job {info.id} will have none "
                "to return: register it with @tasks.task(..., keep_result=timedelta(...))"
            )

    def cancel(self, job_id: JobId) -> bool:
        """Cancel a job; False when it is unknown or already ended.

        A waiting or queued job is removed and recorded ``CANCELLED`` in one
        atomic step: it never runs. A running job is recorded ``CANCELLED`` in
        the same way, never retried, and its worker is told to stop it: a
        thread job gets :class:`~spinach.exc.JobCancelled` raised at its next
        Python bytecode, an asyncio job's task is cancelled. The record is
        kept as long as failed jobs are (``keep_failed``, 7 days when None):
        :meth:`get_job` reports it, and :meth:`get_result` raises
        :class:`~spinach.exc.JobCancelledError`. Sends ``job_cancelled``.
        """
        text = job_id_text(job_id)
        if text is None:
            return False
        keep = self._keep_failed if self._keep_failed is not None else DEFAULT_KEEP_FAILED
        job = self._broker.cancel_job(
            text, cancelled_outcome(self._broker.now()), keep.total_seconds()
        )
        if job is None:
            return False
        logger.info("Cancelled %s (it was %s)", job, job.status.name)
        signals.job_cancelled.send(self._namespace, job=job)
        return True

    def failed_jobs(self, limit: int = 100, offset: int = 0) -> list[JobInfo]:
        """Jobs of the failed store, the latest failure first, each with its error."""
        if not _is_count(limit) or not _is_count(offset):
            raise ConfigurationError(
                f"failed_jobs() takes a limit and an offset of 0 or more, got {limit!r} "
                f"and {offset!r}"
            )
        return self._broker.failed_jobs(limit, offset) if limit else []

    def requeue_failed(self, job_ids: Iterable[JobId] | None = None) -> int:
        """Queue failed jobs again, keeping their ids, with their retries reset;
        every failed job for None. Returns how many were queued.

        Each job leaves the failed store and enters its queue in one atomic step.
        """
        return self._broker.requeue_failed(None if job_ids is None else self._ids(job_ids))

    def purge_failed(self, job_ids: Iterable[JobId] | None = None) -> int:
        """Forget failed jobs; every one for None. Returns how many were forgotten."""
        return self._broker.purge_failed(None if job_ids is None else self._ids(job_ids))

    @staticmethod
    def _ids(job_ids: Iterable[JobId]) -> list[str]:
        if isinstance(job_ids, (str, uuid.UUID, Job)):
            job_ids = [job_ids]
        texts = []
        for job_id in job_ids:
            text = job_id_text(job_id)
            if text is None:
                raise UnknownJobError(
                    f"{job_id!r} is not a job id: pass jobs, their ids, or the ids' text"
                )
            texts.append(text)
        return texts


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0
