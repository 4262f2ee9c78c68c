"""Jobs: one scheduled run of a task, and how they are stored."""

from __future__ import annotations

import enum
import hashlib
import json
import math
import uuid
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any, Callable

import attrs

from ._bounds import check_arguments, check_stored, short_repr
from .exc import JobError

__all__ = [
    "FINISHED",
    "Job",
    "JobError",
    "JobInfo",
    "JobStatus",
    "check_arguments",
    "unique_key",
]


class JobStatus(enum.Enum):
    """Where a job is in its life."""

    NOT_SET = 0
    WAITING = 1
    QUEUED = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5
    CANCELLED = 6


#: The statuses of a job that ended for good: its outcome removes it from the broker.
FINISHED = frozenset((JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED))


@attrs.frozen
class JobInfo:
    """What the broker holds of one job, read by :meth:`Engine.get_job`.

    A job is visible while it is waiting, queued or running; once it ended,
    only while its result is kept (a task with ``keep_result``), while it is
    in the failed store, or while the record of its cancellation is kept.
    """

    id: uuid.UUID
    status: JobStatus
    task_name: str
    queue: str
    #: When the job may start (for an ended job: when its last run could start).
    at: datetime
    #: Retries used: 0 for a first run.
    retries: int
    max_retries: int
    task_args: tuple[Any, ...]
    task_kwargs: dict[str, Any]
    #: When its current or last run was handed to a worker (None before).
    started_at: datetime | None = None
    #: When it ended for good (None before).
    ended_at: datetime | None = None
    #: Why it failed, for a ``FAILED`` job.
    error: JobError | None = None
    #: The value its task returned, for a ``SUCCEEDED`` job of a task keeping results.
    result: Any = None
    #: The job's metadata (:attr:`Job.meta`).
    meta: dict[str, str] = attrs.field(factory=dict)

    @classmethod
    def of_job(
        cls, job: Job, status: JobStatus, started_at: datetime | None = None, **outcome: Any
    ) -> JobInfo:
        """The information of a job read back from the broker, with its status."""
        return cls(
            job.id,
            status,
            job.task_name,
            job.queue,
            job.at,
            job.retries,
            job.max_retries,
            job.task_args,
            job.task_kwargs,
            started_at,
            meta=dict(job.meta),
            **outcome,
        )


def _to_utc(value: datetime) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"a job's 'at' must be a datetime, got {value!r}")
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _to_kwargs(value: dict[str, Any] | None) -> dict[str, Any]:
    return {} if value is None else dict(value)


def _to_args(value: tuple[Any, ...] | None) -> tuple[Any, ...]:
    return () if value is None else tuple(value)


#: What reading back a stored job raises when it is not one (RecursionError:
#: JSON nested deeper than the reader's stack allows).
_UNREADABLE = (ValueError, TypeError, KeyError, AttributeError, OverflowError, RecursionError)

#: One encoder for every job: building one per call costs more than encoding a small job.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode
_canonical = json.JSONEncoder(separators=(",", ":"), allow_nan=False, sort_keys=True).encode


#: Bounds of a job's metadata: entries, and bytes of its JSON text.
MAX_META_ENTRIES, MAX_META_BYTES = 64, 4096


def check_meta(meta: object, where: str = "a job's meta") -> dict[str, str]:
    """``meta`` when it is valid metadata for a job: a dict of str to str, of
    at most :data:`MAX_META_ENTRIES` entries and :data:`MAX_META_BYTES` bytes
    of JSON.

    Raises:
        TypeError: it is not a dict of str to str.
        ValueError: it is over the bounds.
    """
    if type(meta) is not dict:
        raise TypeError(f"{where} must be a dict of str to str, got {short_repr(meta)}")
    for key, value in meta.items():
        if type(key) is not str or type(value) is not str:
            raise TypeError(
                f"{where} must map str to str, got {short_repr(key)}: {short_repr(value)}"
            )
    if len(meta) > MAX_META_ENTRIES:
        raise ValueError(f"{where} has {len(meta)} entries, over the bound of {MAX_META_ENTRIES}")
    size = len(_encode(meta).encode())
    if size > MAX_META_BYTES:
        raise ValueError(f"{where} is {size} bytes of JSON, over the bound of {MAX_META_BYTES}")
    return meta


def unique_key(task_name: str, args: Sequence[Any], kwargs: dict[str, Any]) -> str:
    """The key of a job of a unique task: a digest of its task name and the
    canonical JSON of its arguments (keys sorted), 32 hex digits."""
    text = _canonical([task_name, list(args), kwargs])
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()


@attrs.define(eq=False, on_setattr=attrs.setters.NO_OP)
class Job:
    """One run of a task, with the arguments to call it with.

    Args:
        task_name: name of the task to run.
        queue: queue the job is stored in.
        at: when the job may start; a naive datetime is UTC.
        max_retries: how many times the job is retried after a failure.
        task_args: positional arguments of the task.
        task_kwargs: keyword arguments of the task.
    """

    task_name: str
    queue: str
    # A property converts what is assigned to ``at``: attrs' own conversion on
    # assignment would slow down setting every other field.
    _at: datetime = attrs.field(converter=_to_utc, alias="at")
    max_retries: int
    task_args: tuple[Any, ...] = attrs.field(default=None, converter=_to_args)
    task_kwargs: dict[str, Any] = attrs.field(default=None, converter=_to_kwargs)
    id: uuid.UUID = attrs.field(init=False, factory=uuid.uuid4)
    status: JobStatus = attrs.field(init=False, default=JobStatus.NOT_SET)
    retries: int = attrs.field(init=False, default=0)
    #: The task function, set by the engine before the job runs.
    task_func: Callable[..., Any] | None = attrs.field(init=False, default=None)
    #: Set by a broker when it hands the job out; proves the job is still ours
    #: when its outcome is recorded. Not part of the stored payload.
    handout_token: str | None = attrs.field(init=False, default=None)
    #: Why the broker could not read this job back, if it could not (see
    #: :meth:`could_not_read`). Not part of the stored payload.
    unreadable: str | None = attrs.field(init=False, default=None)
    #: Seconds to keep the result of this run, from its task (set by the
    #: engine before the job runs); None keeps nothing.
    keep_result: float | None = attrs.field(init=False, default=None)
    #: Seconds this run may take, from its task (set by the engine before the
    #: job runs); None for no limit.
    time_limit: float | None = attrs.field(init=False, default=None)
    #: The outcome of the run that ended the job for good, once settled (see
    #: :mod:`spinach._outcome`): when it started and ended, its error when it
    #: failed, its result as JSON text when kept. Not part of the stored payload.
    started_at: datetime | None = attrs.field(init=False, default=None)
    ended_at: datetime | None = attrs.field(init=False, default=None)
    error: JobError | None = attrs.field(init=False, default=None)
    result_json: str | None = attrs.field(init=False, default=None)
    #: Metadata carried with the job and stored with it: a small dict of str
    #: to str (see :func:`check_meta`), set when it is scheduled by receivers of
    #: the ``job_scheduling`` signal (a trace context, a tenant...), never by
    #: the task's arguments. Empty for a job stored without any.
    meta: dict[str, str] = attrs.field(init=False, factory=dict)
    #: For a job of a unique task, the key of its task and arguments (set by
    #: the engine when it schedules it): a broker stores no second job with the
    #: same key while this one waits. Not part of the stored payload.
    unique_key: str | None = attrs.field(init=False, default=None)
    # The id and its text, once asked for (see id_text).
    _id_text: tuple[uuid.UUID, str] | None = attrs.field(init=False, default=None)

    @property
    def at(self) -> datetime:
        """When the job may start, aware UTC (a naive datetime assigned is UTC)."""
        return self._at

    @at.setter
    def at(self, value: datetime) -> None:
        self._at = _to_utc(value)

    @property
    def id_text(self) -> str:
        """``str(job.id)``, kept once made: brokers need it for every job they record."""
        cached = self._id_text
        if cached is not None and cached[0] is self.id:
            return cached[1]
        text = str(self.id)
        self._id_text = (self.id, text)
        return text

    @property
    def should_retry(self) -> bool:
        """Whether a failure of this run leads to another run."""
        return self.retries < self.max_retries

    @property
    def should_start(self) -> bool:
        """Whether the job is due, by this host's clock."""
        return datetime.now(timezone.utc) >= self.at

    @property
    def at_timestamp(self) -> int:
        """``at`` as a POSIX timestamp rounded up to the second, an int as in 0.0.25.

        Brokers store the exact ``at``; this rounded value is for applications.
        """
        return math.ceil(self.at.timestamp())

    def serialize(self) -> str:
        """Return the job as JSON text, the form brokers store (``meta`` only
        when it has entries, so that Spinach 0.0.25 reads it)."""
        fields = {
            "id": str(self.id),
            "status": self.status.value,
            "task_name": self.task_name,
            "queue": self.queue,
            "max_retries": self.max_retries,
            "retries": self.retries,
            "at": self.at.timestamp(),
            "task_args": self.task_args,
            "task_kwargs": self.task_kwargs,
        }
        if self.meta:
            fields["meta"] = self.meta
        return _encode(fields)

    @classmethod
    def deserialize(cls, job_json: str | bytes) -> Job:
        """Build a job from the text :meth:`serialize` returned.

        Raises:
            ValueError: the text is not a serialized job.
        """
        try:
            data = json.loads(job_json)
            return _job_of_fields(
                data["id"],
                data["task_name"],
                data["queue"],
                data["max_retries"],
                data["retries"],
                data["at"],
                data["task_args"],
                data["task_kwargs"],
                JobStatus(data["status"]),
                data.get("meta"),
            )
        except _UNREADABLE as e:
            raise ValueError(f"not a serialized Spinach job ({e!r}): {job_json[:200]!r}") from e

    @classmethod
    def could_not_read(
        cls, job_id: str, why: str, at: datetime, task_name: str = "", queue: str = ""
    ) -> Job:
        """A stand-in for a stored job that a broker could not read back.

        It has the job's id, ``at`` as given, and the task name and queue where
        the broker could read them (else empty); :attr:`unreadable` says why.
        The engine fails it (:class:`~spinach.exc.UnreadableJobError`) without
        running it, which removes it from the broker.

        Raises:
            ValueError: ``job_id`` is not a job id.
        """
        job = cls(task_name, queue, at, 0)
        job.id = uuid.UUID(job_id)
        job.unreadable = why
        return job

    def __repr__(self) -> str:
        return f"Job <{self.task_name} {self.status.name} {self.id}>"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Job):
            return NotImplemented
        return _identity(self) == _identity(other)

    __hash__ = None  # type: ignore[assignment]  # mutable record, like a list


def _job_of_fields(
    job_id: str,
    task_name: Any,
    queue: Any,
    max_retries: Any,
    retries: Any,
    at: Any,
    args: Any,
    kwargs: Any,
    status: JobStatus,
    meta: Any = None,
) -> Job:
    """The job of fields read back from storage, checked as ``__init__`` would check
    them, but built without drawing an id only to replace it.

    Raises:
        TypeError, ValueError, OverflowError: a field is not what a job holds,
            or the arguments are over the bounds of :mod:`spinach._bounds`.
    """
    if not (
        type(task_name) is str
        and type(queue) is str
        and type(max_retries) is int
        and type(retries) is int
        and type(args) is list
        and type(kwargs) is dict
    ):
        raise TypeError(
            _wrong_kinds(
                task_name=task_name,
                queue=queue,
                max_retries=max_retries,
                retries=retries,
                task_args=args,
                task_kwargs=kwargs,
            )
        )
    if args or kwargs:
        check_stored(args, kwargs)
    job = _new_job(Job)
    for unset in _UNSET:
        unset(job, None)
    identity = uuid.UUID(job_id)
    _set_id_text(job, (identity, job_id))
    for set_value, value in zip(
        _SETTERS,
        (
            task_name,
            queue,
            datetime.fromtimestamp(at, tz=timezone.utc),
            max_retries,
            tuple(args),
            kwargs,
            identity,
            status,
            retries,
        ),
    ):
        set_value(job, value)
    _set_meta(job, {} if meta is None else check_meta(meta, "the stored meta"))
    return job


_FIELDS = tuple(field.name for field in attrs.fields(Job))
_new_job = object.__new__
#: Setting a field of a Job without its on-setattr hooks: the slot's own setter.
_SETTERS = tuple(
    getattr(Job, name).__set__
    for name in (
        "task_name",
        "queue",
        "_at",
        "max_retries",
        "task_args",
        "task_kwargs",
        "id",
        "status",
        "retries",
    )
)
_set_id_text = getattr(Job, "_id_text").__set__  # noqa: B009 - the slot, not the field
_set_meta = getattr(Job, "meta").__set__  # noqa: B009 - the slot, not the field
#: The fields a job read back from storage starts without: None each.
_UNSET = tuple(
    getattr(Job, field.name).__set__
    for field in attrs.fields(Job)
    if field.name not in ("task_name", "queue", "_at", "max_retries", "task_args")
    and field.name not in ("task_kwargs", "id", "status", "retries", "_id_text")
)
_STORED_KINDS = {"task_name": str, "queue": str, "max_retries": int, "retries": int}
_STORED_KINDS.update(task_args=list, task_kwargs=dict)


def _wrong_kinds(**fields: Any) -> str:
    """Which stored fields have the wrong type (``True`` is not an int here)."""
    return "; ".join(
        f"{name} is {type(value).__name__} {short_repr(value)}, not {_STORED_KINDS[name].__name__}"
        for name, value in fields.items()
        if type(value) is not _STORED_KINDS[name]
    )


def _identity(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.status,
        job.task_name,
        job.queue,
        job.at,
        job.max_retries,
        job.retries,
        job.task_args,
        job.task_kwargs,
    )
