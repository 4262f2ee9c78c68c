"""Tasks, the registries that hold them, and batches of jobs to schedule."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Callable, NoReturn, Protocol, TypeVar, Union, overload

import attrs

from . import const
from .exc import (
    AbortException,
    InvalidTaskError,
    NotAttachedError,
    RetryException,
    UnknownTask,
)

if TYPE_CHECKING:
    from .job import Job

__all__ = ["AbortException", "Batch", "RetryException", "Task", "Tasks"]

logger = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])


def _check_periodicity(
    instance: Task, attribute: attrs.Attribute[Any], value: timedelta | None
) -> None:
    if value is None:
        return
    if not isinstance(value, timedelta):
        raise InvalidTaskError(
            f"Task {instance.name!r}: periodicity must be a timedelta, got {value!r}"
        )
    if value.total_seconds() < const.MIN_PERIODICITY:
        raise InvalidTaskError(
            f"Task {instance.name!r}: periodicity {value} is under the minimum of "
            f"{const.MIN_PERIODICITY:g} s; use timedelta(seconds=1) or more"
        )


def _duration_or_none(
    setting: str, none_means: str
) -> Callable[[Task, attrs.Attribute[Any], timedelta | None], None]:
    """A validator of a setting that is a timedelta of 1 ms or more, or None."""

    def check(instance: Task, attribute: attrs.Attribute[Any], value: timedelta | None) -> None:
        if value is not None and (
            not isinstance(value, timedelta) or value.total_seconds() < 0.001
        ):
            raise InvalidTaskError(
                f"Task {instance.name!r}: {setting} must be a timedelta of 1 ms or more, or "
                f"None {none_means}, got {value!r}"
            )

    return check


#: A rate limit: at most ``count`` job starts within any ``period``.
RateLimit = tuple[int, timedelta]


def _rate_limit(value: Any) -> RateLimit | None:
    """A rate limit as a tuple (a list given in a settings file works too)."""
    return tuple(value) if isinstance(value, list) else value


def _check_rate_limit(instance: Task, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value is None:
        return
    if (
        isinstance(value, tuple)
        and len(value) == 2
        and _is_int(value[0])
        and value[0] >= 1
        and isinstance(value[1], timedelta)
        and value[1].total_seconds() >= 0.001
    ):
        return
    raise InvalidTaskError(
        f"Task {instance.name!r}: rate_limit must be (starts, period), an int of 1 or more "
        f"and a timedelta of 1 ms or more, such as (100, timedelta(minutes=1)), or None "
        f"for no limit; got {value!r}"
    )


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _zero_if_none(value: int | None) -> int:
    return 0 if value is None else value


@attrs.frozen
class Task:
    """A function registered to run as jobs, with its settings.

    Raises:
        InvalidTaskError: (a ValueError) for settings that cannot work.
    """

    func: Callable[..., Any]
    name: str
    queue: str
    max_retries: int = attrs.field(converter=_zero_if_none)
    periodicity: timedelta | None = attrs.field(validator=_check_periodicity)
    max_concurrency: int | None = None
    #: How long the result of a job that succeeded is kept; None keeps nothing.
    keep_result: timedelta | None = attrs.field(
        default=None, validator=_duration_or_none("keep_result", "to keep nothing")
    )
    #: How long a job may run before it is interrupted; None for no limit.
    time_limit: timedelta | None = attrs.field(
        default=None, validator=_duration_or_none("time_limit", "for no limit")
    )
    #: Whether scheduling stores no second job of this task with equal arguments
    #: while one that has not started yet waits (queued, or waiting for its
    #: time); a job put back for a retry no longer counts.
    unique: bool = False
    #: At most this many starts of its jobs within any such period, across the
    #: namespace: ``(100, timedelta(minutes=1))``; None for no limit.
    rate_limit: RateLimit | None = attrs.field(
        default=None, converter=_rate_limit, validator=_check_rate_limit
    )

    def __attrs_post_init__(self) -> None:
        where = f"Task {self.name!r}"
        # A bool is an int to Python, but True retries is a mistake, not 1.
        if not _is_int(self.max_retries) or self.max_retries < 0:
            raise InvalidTaskError(
                f"{where}: max_retries must be an int >= 0, got {self.max_retries!r}"
            )
        if self.max_concurrency is not None:
            if not _is_int(self.max_concurrency):
                raise InvalidTaskError(
                    f"{where}: max_concurrency must be an int, got {self.max_concurrency!r}"
                )
            if not self.max_retries:
                raise InvalidTaskError(
                    f"{where}: max_retries must be set if max_concurrency is set "
                    "(a job blocked by a dead worker is only recovered by a retry)"
                )
            if self.max_concurrency < 1:
                raise InvalidTaskError(
                    f"{where}: max_concurrency must be greater than zero, got "
                    f"{self.max_concurrency}"
                )
        if not isinstance(self.unique, bool):
            raise InvalidTaskError(f"{where}: unique must be True or False, got {self.unique!r}")
        if self.unique and self.periodicity is not None:
            raise InvalidTaskError(
                f"{where}: a periodic task cannot be unique (its runs have no arguments, "
                "and the schedule already stores one job per period)"
            )

    @property
    def task_name(self) -> str:
        """The name of the task (same as ``name``)."""
        return self.name


TaskLike = Union[str, Callable[..., Any], Task]


class Tasks:
    """A registry of tasks, with defaults for the tasks it creates.

    Args:
        queue: default queue of its tasks (else ``'spinach'``).
        max_retries: default number of retries of its tasks (else 0).
        periodicity: default periodicity of its tasks.
        max_concurrency: default concurrency limit of its tasks.
    """

    def __init__(
        self,
        queue: str | None = None,
        max_retries: int | None = None,
        periodicity: timedelta | None = None,
        max_concurrency: int | None = None,
    ) -> None:
        self._tasks: dict[str, Task] = {}
        self.queue = queue
        self.max_retries = max_retries
        self.periodicity = periodicity
        self.max_concurrency = max_concurrency
        self._engine: _Scheduler | None = None

    @property
    def names(self) -> list[str]:
        """Names of the registered tasks."""
        return list(self._tasks)

    @property
    def tasks(self) -> dict[str, Task]:
        """The registered tasks by name (a copy)."""
        return dict(self._tasks)

    def get(self, name: TaskLike) -> Task:
        """Return a task from its name, its decorated function or itself.

        Raises:
            UnknownTask: no such task is registered here.
        """
        task_name: Any
        if isinstance(name, Task):
            task_name = name.name
        elif callable(name):
            task_name = getattr(name, "task_name", None)
            if task_name is None:
                # A function registered with add(): found by identity, never by its name.
                for task in self._tasks.values():
                    if task.func is name:
                        return task
                self._unknown(f"function {getattr(name, '__qualname__', name)!r}")
        else:
            task_name = name
        try:
            return self._tasks[task_name]
        except (KeyError, TypeError):
            self._unknown(f"task {task_name!r}")

    def _unknown(self, what: str) -> NoReturn:
        known = ", ".join(repr(n) for n in sorted(self._tasks)) or "none"
        raise UnknownTask(
            f"Unknown {what}; the known tasks are: {known}. Register it with "
            "@tasks.task(name=...) and attach its registry with engine.attach_tasks()"
        ) from None

    def update(self, tasks: Tasks) -> None:
        """Add every task of another registry to this one.

        Raises:
            InvalidTaskError: a task name of ``tasks`` is already here for another function.
        """
        for task in tasks._tasks.values():
            existing = self._tasks.get(task.name)
            if existing is not None and existing != task:
                raise InvalidTaskError(
                    f"A different task named {task.name!r} is already registered"
                )
        self._tasks.update(tasks._tasks)

    @overload
    def task(
        self,
        func: F,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        periodicity: timedelta | None = None,
        max_concurrency: int | None = None,
        keep_result: timedelta | None = None,
        time_limit: timedelta | None = None,
        unique: bool = False,
        rate_limit: RateLimit | None = None,
    ) -> F: ...

    @overload
    def task(
        self,
        func: None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        periodicity: timedelta | None = None,
        max_concurrency: int | None = None,
        keep_result: timedelta | None = None,
        time_limit: timedelta | None = None,
        unique: bool = False,
        rate_limit: RateLimit | None = None,
    ) -> Callable[[F], F]: ...

    def task(
        self,
        func: F | None = None,
        *,
        name: str | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        periodicity: timedelta | None = None,
        max_concurrency: int | None = None,
        keep_result: timedelta | None = None,
        time_limit: timedelta | None = None,
        unique: bool = False,
        rate_limit: RateLimit | None = None,
    ) -> F | Callable[[F], F]:
        """Register a function as a task; use as ``@tasks.task(name='x')``.

        The function is returned unchanged (callable directly) with a
        ``task_name`` attribute. With ``keep_result``, the value a job returns
        is kept that long once it succeeded (see ``Engine.get_result``); it
        must then be plain JSON, like arguments. With ``time_limit``, a job
        running longer is interrupted with ``JobTimeLimitExceeded``. With
        ``unique=True``, scheduling a job while one with equal arguments waits
        stores nothing and returns the waiting job's id. With
        ``rate_limit=(100, timedelta(minutes=1))``, at most 100 jobs of the task
        start within any minute across the namespace; the jobs held back keep
        their place in their queue.
        """

        def register(func: F) -> F:
            self.add(
                func,
                name,
                queue,
                max_retries,
                periodicity,
                max_concurrency,
                keep_result,
                time_limit,
                unique,
                rate_limit,
            )
            try:
                func.task_name = name  # type: ignore[attr-defined]  # documented marker attribute
            except AttributeError:
                del self._tasks[name]  # type: ignore[arg-type]  # add() checked the name
                raise InvalidTaskError(
                    f"Task {name!r}: cannot mark {func!r} with its task name; wrap it in "
                    "a function of your own, or register it with tasks.add()"
                ) from None
            return func

        return register if func is None else register(func)

    def add(
        self,
        func: Callable[..., Any],
        name: str | None = None,
        queue: str | None = None,
        max_retries: int | None = None,
        periodicity: timedelta | None = None,
        max_concurrency: int | None = None,
        keep_result: timedelta | None = None,
        time_limit: timedelta | None = None,
        unique: bool = False,
        rate_limit: RateLimit | None = None,
    ) -> None:
        """Register a function as a task without decorating it.

        Raises:
            InvalidTaskError: (a ValueError) no name, a duplicate name, a
                reserved queue name, or settings that cannot work.
        """
        if not name or not isinstance(name, str):
            raise InvalidTaskError(
                f"Task of function {getattr(func, '__qualname__', func)!r} has no name: "
                "give one with @tasks.task(name='...')"
            )
        if name in self._tasks:
            raise InvalidTaskError(f"A task named {name!r} is already registered")
        queue = _first(queue, self.queue, const.DEFAULT_QUEUE)
        if not isinstance(queue, str) or not queue:
            raise InvalidTaskError(f"Task {name!r}: queue must be a non-empty str, got {queue!r}")
        if queue.startswith("_"):
            raise InvalidTaskError(
                f"Task {name!r}: queue names starting with '_' are reserved, got {queue!r}"
            )
        self._tasks[name] = Task(
            func,
            name,
            queue,
            _first(max_retries, self.max_retries, const.DEFAULT_MAX_RETRIES),
            _first(periodicity, self.periodicity, None),
            _first(max_concurrency, self.max_concurrency, None),
            keep_result,
            time_limit,
            unique,
            rate_limit,
        )

    def _require_engine(self) -> _Scheduler:
        if self._engine is None:
            raise NotAttachedError(
                "This Tasks registry is not attached to an Engine: "
                "call engine.attach_tasks(tasks) before scheduling through it"
            )
        return self._engine

    def schedule(self, task: TaskLike, *args: Any, **kwargs: Any) -> Job:
        """Schedule a job now, through the engine this registry is attached to."""
        return self._require_engine().schedule(task, *args, **kwargs)

    def schedule_at(self, task: TaskLike, at: datetime, *args: Any, **kwargs: Any) -> Job:
        """Schedule a job at ``at``, through the engine this registry is attached to."""
        return self._require_engine().schedule_at(task, at, *args, **kwargs)

    def schedule_batch(self, batch: Batch) -> list[Job]:
        """Schedule a batch, through the engine this registry is attached to."""
        return self._require_engine().schedule_batch(batch)


class _Scheduler(Protocol):
    """What a registry needs of the engine it is attached to (an Engine)."""

    @property
    def namespace(self) -> str: ...

    def schedule(self, task: TaskLike, *args: Any, **kwargs: Any) -> Job: ...

    def schedule_at(self, task: TaskLike, at: datetime, *args: Any, **kwargs: Any) -> Job: ...

    def schedule_batch(self, batch: Batch) -> list[Job]: ...


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


class Batch:
    """Jobs collected to be scheduled together, in one broker call."""

    def __init__(self) -> None:
        self.jobs_to_create: list[
            tuple[TaskLike, datetime | None, tuple[Any, ...], dict[str, Any]]
        ] = []

    def schedule(self, task: TaskLike, *args: Any, **kwargs: Any) -> None:
        """Add a job to run now."""
        self.jobs_to_create.append((task, None, args, kwargs))

    def schedule_at(self, task: TaskLike, at: datetime, *args: Any, **kwargs: Any) -> None:
        """Add a job to run at ``at`` (a naive datetime is UTC)."""
        self.jobs_to_create.append((task, at, args, kwargs))
