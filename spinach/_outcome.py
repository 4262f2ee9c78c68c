"""What a run's outcome does to its job: the retry policy, written once.

Both kinds of workers and the engine call :func:`settle`; the engine then
records the job in the broker according to the status it was given.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import Any

from . import signals
from ._bounds import check_result
from .exc import (
    AbortException,
    InvalidJobResultError,
    InvalidJobSignatureError,
    InvalidTaskTypeError,
    JobCancelled,
    RetryException,
    UnknownTask,
    UnreadableJobError,
    WorkerDiedError,
)
from .job import Job, JobError, JobStatus, _encode
from .logs import job_fields
from .utils import exponential_backoff, human_duration

logger = logging.getLogger("spinach.worker")

#: Errors of the engine (the job could not run here) that another run cannot mend.
_ENGINE_FINAL_ERRORS = (
    UnknownTask,
    InvalidTaskTypeError,
    InvalidJobSignatureError,
    UnreadableJobError,
)


def keep_result(job: Job, result: Any, max_size: int | None = None) -> InvalidJobResultError | None:
    """Keep the JSON text of ``result`` on ``job`` when its task keeps results;
    return the error that fails the job when the value cannot be kept (not
    JSON, or over ``max_size`` bytes once encoded)."""
    if job.keep_result is None:
        return None
    try:
        check_result(job.task_name, result)
    except InvalidJobResultError as e:
        return e
    text = _encode(result)
    # Encoded JSON is ASCII: its length is its size in bytes.
    if max_size is not None and len(text) > max_size:
        return InvalidJobResultError(
            f"Task {job.task_name!r} keeps its result, but its return value is {len(text):,} "
            f"bytes once encoded, over the limit of {max_size:,} bytes "
            "(Engine(max_job_size=...), which bounds results as it bounds jobs). Store large "
            "data elsewhere (a file, a database row) and return its id"
        )
    job.result_json = text
    return None


def settle(
    namespace: str,
    job: Job,
    duration: float | None,
    err: BaseException | None,
    now: datetime,
) -> None:
    """Give ``job`` its status after a run (or a failure to run) and report it.

    ``duration`` is ``None`` when the job did not run here (unknown task, or
    its worker died). A job to retry gets ``retries + 1`` and a new ``at``:
    the one of a :class:`RetryException`, now when its worker died, else an
    exponential backoff. A job that ended for good gets what the broker keeps
    of it: its times, and its error when it failed (see :mod:`spinach._ended`).
    """
    took = "" if duration is None else f" after {human_duration(duration)}"
    attempt = job.retries + 1
    if err is None:
        job.status = JobStatus.SUCCEEDED
        if job.result_json is not None:
            _ended(job, duration, now)
        if logger.isEnabledFor(logging.INFO):
            extra = job_fields(job, attempt, "succeeded", duration)
            logger.info("Finished execution of %s%s", job, took, extra=extra)
        return
    if isinstance(err, JobCancelled):
        # Already recorded CANCELLED by the broker, when it was cancelled.
        job.status = JobStatus.CANCELLED
        _ended(job, duration, now)
        extra = job_fields(job, attempt, "cancelled", duration)
        logger.info("Stopped %s%s: it was cancelled", job, took, extra=extra)
        return
    run = f"{job.retries + 1}/{job.max_retries + 1}"
    final = isinstance(err, (AbortException, InvalidJobResultError)) or (
        duration is None and isinstance(err, _ENGINE_FINAL_ERRORS)
    )
    if job.should_retry and not final:
        job.retries += 1
        if isinstance(err, RetryException) and err.at is not None:
            job.at = err.at
        elif isinstance(err, WorkerDiedError):
            job.at = now
        else:
            job.at = now + exponential_backoff(job.retries)
        job.status = JobStatus.WAITING if job.at > now else JobStatus.QUEUED
        signals.job_schedule_retry.send(namespace, job=job, err=err)
        delay = human_duration(max(0.0, (job.at - now).total_seconds()))
        what = "Retry requested by" if isinstance(err, RetryException) else "Error during"
        extra = job_fields(job, attempt, "retried", duration)
        logger.warning(
            "%s run %s of %s%s, retry in %s", what, run, job, took, delay, exc_info=err, extra=extra
        )
        return
    job.status = JobStatus.FAILED
    job.error = JobError.of(err)
    _ended(job, duration, now)
    signals.job_failed.send(namespace, job=job, err=err)
    extra = job_fields(job, attempt, "failed", duration)
    logger.error(
        "Error during run %s of %s%s, job failed", run, job, took, exc_info=err, extra=extra
    )


def fail(job: Job, err: BaseException, now: datetime) -> None:
    """Fail ``job`` for good, bypassing the retry policy: the last resort when
    settling it raised (the caller sends ``job_failed``)."""
    job.status = JobStatus.FAILED
    job.error = JobError.of(err)
    _ended(job, None, now)


def _ended(job: Job, duration: float | None, now: datetime) -> None:
    job.ended_at = now
    job.started_at = None if duration is None else now - timedelta(seconds=duration)
