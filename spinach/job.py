"""Jobs: one scheduled run of a task, and how they are stored."""

from __future__ import annotations

import enum
import json
import math
import uuid
from datetime import datetime, timezone
from typing import Any, Callable, NoReturn

import attrs

from .exc import InvalidJobArgumentError

__all__ = ["FINISHED", "Job", "JobStatus", "check_arguments"]


class JobStatus(enum.Enum):
    """Where a job is in its life."""

    NOT_SET = 0
    WAITING = 1
    QUEUED = 2
    RUNNING = 3
    SUCCEEDED = 4
    FAILED = 5


#: The statuses of a job that ended for good: its outcome removes it from the broker.
FINISHED = frozenset((JobStatus.SUCCEEDED, JobStatus.FAILED))


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


#: One encoder for every job: building one per call costs more than encoding a small job.
_encode = json.JSONEncoder(separators=(",", ":"), allow_nan=False).encode


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

    @property
    def at(self) -> datetime:
        """When the job may start, aware UTC (a naive datetime assigned is UTC)."""
        return self._at

    @at.setter
    def at(self, value: datetime) -> None:
        self._at = _to_utc(value)

    @property
    def should_retry(self) -> bool:
        """Whether a failure of this run leads to another run."""
        return self.retries < self.max_retries

    @property
    def should_start(self) -> bool:
        """Whether the job is due, by this host's clock."""
        return datetime.now(timezone.utc) >= self.at

    @property
    def at_timestamp(self) -> float:
        """``at`` as a POSIX timestamp."""
        return self.at.timestamp()

    def serialize(self) -> str:
        """Return the job as JSON text, the form brokers store."""
        return _encode(
            {
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
        )

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
            )
        except (ValueError, TypeError, KeyError, OverflowError, AttributeError) as e:
            raise ValueError(f"not a serialized Spinach job ({e!r}): {job_json[:200]!r}") from e

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
) -> Job:
    """The job of fields read back from storage, checked as ``__init__`` would check
    them, but built without drawing an id only to replace it.

    Raises:
        TypeError, ValueError, OverflowError: a field is not what a job holds.
    """
    if not (
        type(task_name) is str
        and type(queue) is str
        and type(max_retries) is int
        and type(retries) is int
        and type(args) is list
        and type(kwargs) is dict
    ):
        raise TypeError("a field has the wrong type")
    values = {
        "task_name": task_name,
        "queue": queue,
        "_at": datetime.fromtimestamp(at, tz=timezone.utc),
        "max_retries": max_retries,
        "task_args": tuple(args),
        "task_kwargs": kwargs,
        "id": uuid.UUID(job_id),
        "status": status,
        "retries": retries,
        "task_func": None,
        "handout_token": None,
    }
    job = object.__new__(Job)
    for name in _FIELDS:
        object.__setattr__(job, name, values[name])
    return job


_FIELDS = tuple(field.name for field in attrs.fields(Job))


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


def check_arguments(task_name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """Check that a job's arguments survive a JSON round trip unchanged.

    Allowed: ``None``, ``bool``, ``int``, finite ``float``, ``str``, ``list``,
    ``tuple`` (read back as a list) and ``dict`` with ``str`` keys, nested;
    subclasses of these are read back as the plain type.

    Returns:
        An upper bound of the size of the arguments once serialized, in bytes.

    Raises:
        InvalidJobArgumentError: naming the task and the argument at fault.
    """
    total = 4
    for i, value in enumerate(args):
        try:
            total += _json_bound(value) + 1
        except _Rejected as e:
            _reject(task_name, f"args[{i}]{e.path}", e.value, e.why)
    for key, value in kwargs.items():
        try:
            total += _json_bound(value) + 12 * len(key) + 4
        except _Rejected as e:
            _reject(task_name, f"kwargs[{key!r}]{e.path}", e.value, e.why)
    return total


class _Rejected(Exception):
    """A value that is not JSON; ``path`` leads to it from the argument."""

    def __init__(self, value: Any, why: str) -> None:
        self.value, self.why, self.path = value, why, ""


def _json_bound(value: Any) -> int:
    """An upper bound of the length of ``value`` as JSON text (ASCII, escaped).

    Subclasses (str enums, SafeString, OrderedDict...) are accepted: they are
    stored as their JSON type and read back as the plain base type.

    Raises:
        _Rejected: ``value`` is not JSON or does not come back unchanged.
    """
    if isinstance(value, str):
        return 12 * len(value) + 2  # a character outside the BMP is escaped as 12
    if value is None or isinstance(value, bool):
        return 5
    if isinstance(value, int):
        return value.bit_length() // 3 + 2
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Rejected(value, "NaN and infinities are not JSON")
        return 25
    if isinstance(value, (list, tuple)):
        total = len(value) + 2
        for i, item in enumerate(value):
            try:
                total += _json_bound(item)
            except _Rejected as e:
                e.path = f"[{i}]{e.path}"
                raise
        return total
    if isinstance(value, dict):
        total = 2 * len(value) + 2
        for key, item in value.items():
            if not isinstance(key, str):
                raise _Rejected(value, f"key {key!r} is not a str, as JSON keys must be")
            try:
                total += 12 * len(key) + 2 + _json_bound(item)
            except _Rejected as e:
                e.path = f"[{key!r}]{e.path}"
                raise
        return total
    raise _Rejected(value, f"{type(value).__name__} is not a JSON type")


def _reject(task_name: str, path: str, value: Any, why: str) -> NoReturn:
    raise InvalidJobArgumentError(
        f"Task {task_name!r}: argument {path} = {value!r:.100} cannot be stored ({why}). "
        "Job arguments must be JSON types (str, int, float, bool, None, list, dict "
        "with str keys): pass an id, an ISO date string or a plain dict instead."
    )
