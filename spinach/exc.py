"""Exceptions raised by Spinach.

Every error of this package derives from :class:`SpinachError`; where the
meaning matches a builtin, the error derives from that builtin too, so
``except ValueError`` keeps working::

    SpinachError(Exception)
    ├── UnknownTask                       a job or call names a task nobody registered
    ├── InvalidJobSignatureError          arguments that do not bind to the task function
    ├── InvalidJobArgumentError(TypeError)  an argument that is not plain JSON
    ├── JobTooLargeError(ValueError)      a job over the engine's max_job_size
    ├── InvalidTaskError(ValueError)      a task definition that cannot work
    ├── InvalidTaskTypeError(TypeError)   a plain ``def`` task given to asyncio workers
    ├── WorkersError(RuntimeError)        workers started while already running
    ├── ConfigurationError(ValueError)    a setting out of its range
    ├── NotAttachedError(RuntimeError)    a registry or broker used before it is attached
    ├── BrokerInUseError(RuntimeError)    one broker given to two engines
    ├── WorkerDiedError                   the reason given for a job whose worker died
    ├── UnreadableJobError                the reason given for a stored job that could not
    │                                     be read back (failed without running)
    ├── TargetError(ValueError)           ``spinach doctor`` cannot use its target
                                          (in :mod:`spinach.doctor`)
    ├── BrokerConnectionError(ConnectionError)  the broker's server stayed out of reach
    ├── BrokerFullError                   the broker's server refuses new data (Redis
    │                                     at maxmemory with noeviction)
    ├── InvalidJobResultError(TypeError)  a kept result that is not plain JSON
    ├── UnknownJobError(LookupError)      a job id that is unknown, or whose outcome is not kept
    ├── JobFailedError                    ``get_result`` of a job that failed for good
    ├── JobCancelledError                 ``get_result`` of a job that was cancelled
    ├── RetryException                    raised by a task to ask for a retry
    └── AbortException                    raised by a task to fail its job for good

    JobTimeLimitExceeded(BaseException)   raised inside a job that ran past its
                                          task's time_limit
    JobCancelled(BaseException)           raised inside a running job of thread workers
                                          that ``Engine.cancel`` cancelled

``RetryException`` and ``AbortException`` keep their Spinach 0.0.25 names and
can still be imported from :mod:`spinach.task`, where 0.0.25 defined them.

:class:`JobError`, what is kept of the exception a job failed with, is
defined here too, and exported by :mod:`spinach.job`.
"""

from __future__ import annotations

import traceback
from datetime import datetime
from typing import Any

import attrs

__all__ = [
    "AbortException",
    "BrokerConnectionError",
    "BrokerFullError",
    "BrokerInUseError",
    "ConfigurationError",
    "InvalidJobArgumentError",
    "InvalidJobResultError",
    "InvalidJobSignatureError",
    "InvalidTaskError",
    "InvalidTaskTypeError",
    "JobCancelled",
    "JobCancelledError",
    "JobFailedError",
    "JobTimeLimitExceeded",
    "JobTooLargeError",
    "NotAttachedError",
    "RetryException",
    "SpinachError",
    "UnknownJobError",
    "UnknownTask",
    "UnreadableJobError",
    "WorkerDiedError",
    "WorkersError",
]


#: Most characters kept of an error's message, and of its traceback (the end is kept).
MAX_ERROR_MESSAGE = 4_000
MAX_ERROR_TRACEBACK = 32_000


@attrs.frozen
class JobError:
    """Why a job failed, as text: what the broker keeps of the exception."""

    #: The exception's class, ``module.QualifiedName`` (a builtin's name alone).
    type: str
    #: ``str()`` of the exception, cut to its first 4,000 characters.
    message: str
    #: The formatted traceback, cut to its last 32,000 characters.
    traceback: str

    @classmethod
    def of(cls, err: BaseException) -> JobError:
        """The error of an exception, with the traceback it was raised with."""
        kind = type(err)
        name = kind.__qualname__
        if kind.__module__ != "builtins":
            name = f"{kind.__module__}.{name}"
        try:
            message = str(err)
        except Exception as e:  # a __str__ that raises must not lose the failure
            message = f"<str() of the error raised {type(e).__name__}>"
        text = "".join(traceback.format_exception(kind, err, err.__traceback__))
        if len(message) > MAX_ERROR_MESSAGE:
            message = message[:MAX_ERROR_MESSAGE] + "..."
        if len(text) > MAX_ERROR_TRACEBACK:
            text = "..." + text[-MAX_ERROR_TRACEBACK:]
        return cls(name, message, text)


class SpinachError(Exception):
    """Base class of every error raised by Spinach."""


class UnknownTask(SpinachError):
    """A task name that no registry attached to the engine knows."""


class InvalidJobSignatureError(SpinachError):
    """The arguments given to schedule a job do not bind to the task function."""


class InvalidJobArgumentError(SpinachError, TypeError):
    """A job argument that cannot be stored as plain JSON and read back unchanged."""


class InvalidJobResultError(SpinachError, TypeError):
    """A task keeping its result returned a value that cannot be stored as plain JSON.

    The job fails for good with this error: running it again would return
    the same kind of value.
    """


class UnknownJobError(SpinachError, LookupError):
    """A job id the broker does not know: never scheduled, ended and not kept,
    expired, or a job of a task that keeps no result."""


class JobFailedError(SpinachError):
    """Raised by ``get_result`` for a job that failed for good.

    Attributes:
        job: what the broker holds of the job (a :class:`~spinach.job.JobInfo`),
            with its status ``FAILED``.
        error: the job's error: its type, message and traceback, as text.
    """

    def __init__(self, job: Any) -> None:
        error = job.error
        assert isinstance(error, JobError)
        super().__init__(
            f"Job {job.id} of task {job.task_name!r} failed: {error.type}: {error.message}"
        )
        self.job = job
        self.error = error


class JobCancelledError(SpinachError):
    """Raised by ``get_result`` for a job that was cancelled (``Engine.cancel``).

    Attributes:
        job: what the broker holds of the job (a :class:`~spinach.job.JobInfo`),
            with its status ``CANCELLED``.
    """

    def __init__(self, job: Any) -> None:
        super().__init__(f"Job {job.id} of task {job.task_name!r} was cancelled")
        self.job = job


class JobTooLargeError(SpinachError, ValueError):
    """A job larger, once serialized, than the engine's ``max_job_size``."""


class InvalidTaskError(SpinachError, ValueError):
    """A task definition that cannot work (no name, a duplicate, bad limits...)."""


class InvalidTaskTypeError(SpinachError, TypeError):
    """A task whose kind does not suit the workers asked to run it."""


class WorkersError(SpinachError, RuntimeError):
    """Workers started while the engine's workers are already running."""


class ConfigurationError(SpinachError, ValueError):
    """A setting out of its range, such as ``start_workers(number=0)``."""


class NotAttachedError(SpinachError, RuntimeError):
    """A registry or a broker used before it is attached to an engine."""


class BrokerInUseError(SpinachError, RuntimeError):
    """A broker given to a second engine: each engine needs its own broker."""


class WorkerDiedError(SpinachError):
    """Reason of the failure of a job whose worker stopped heartbeating while running it."""


class UnreadableJobError(SpinachError):
    """Reason of the failure of a stored job that could not be read back.

    Its payload was damaged or over the bounds of what a job may hold (see
    :mod:`spinach._bounds`): the job is failed without running, and the
    broker keeps a copy of the payload aside.
    """


class BrokerConnectionError(SpinachError, ConnectionError):
    """The broker's server could not be reached, even after retries."""


class BrokerFullError(SpinachError):
    """The broker's server refuses to store new jobs: it is full.

    Raised by scheduling when Redis is at ``maxmemory`` with the
    ``noeviction`` policy. Nothing was stored. Workers keep running and
    draining the queues, which frees memory.
    """


class RetryException(SpinachError):
    """Raised by a task to ask for a retry, at ``at`` if given (a naive value is UTC).

    It counts against the task's ``max_retries``.
    """

    def __init__(self, message: str, at: datetime | None = None) -> None:
        if at is not None and not isinstance(at, datetime):
            raise TypeError(f"RetryException(at=...) must be a datetime or None, got {at!r}")
        super().__init__(message)
        self.at = at


class AbortException(SpinachError):
    """Raised by a task to fail its job now, with no more retries."""


class JobTimeLimitExceeded(BaseException):
    """Raised inside a job that ran past its task's ``time_limit``.

    A ``BaseException``, as ``KeyboardInterrupt`` is, so that the task's own
    ``except Exception`` does not swallow it and go on running. Its job fails
    with it, and the task's retry policy applies as to any failure.
    """


class JobCancelled(BaseException):
    """Raised inside a running job of thread workers when it is cancelled
    (``Engine.cancel``); an asyncio job's task is cancelled instead.

    A ``BaseException``, as :class:`JobTimeLimitExceeded` is. The job is
    already recorded ``CANCELLED`` when it is raised: what the task does then
    changes nothing, and the job is not retried.
    """
