"""Check a Redis server, and an engine's tasks, against the production checklist.

:func:`diagnose` runs the checks of ``spinach doctor`` (see ``docs/doctor.md``)
and returns a :class:`Report`::

    from spinach.doctor import diagnose

    report = diagnose(spin)  # an Engine, a RedisBroker or a Redis URL
    print(report.to_text())
    if report.failed:
        ...

Each check reads the live server with a few plain commands, and SCAN reads
at most 10,000 keys, so running it against a busy server is cheap.
"""

from __future__ import annotations

import json
from typing import Any, Literal, Union
from urllib.parse import quote

import attrs
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from . import const
from ._doctor_checks import SCAN_LIMIT, Check, Status, run_checks
from .brokers.redis import RedisBroker
from .clock import Clock, SystemClock
from .engine import Engine
from .exc import SpinachError

__all__ = ["SCAN_LIMIT", "Check", "Report", "Status", "TargetError", "TaskInfo", "diagnose"]

Delivery = Literal["at-most-once", "at-least-once"]
_STATUSES: tuple[Status, ...] = ("fail", "warn", "unknown", "pass")
_LABELS = {"pass": "PASS", "warn": "WARN", "fail": "FAIL", "unknown": "UNKNOWN"}


class TargetError(SpinachError, ValueError):
    """What the doctor was given cannot be checked: a bad URL, an unreachable
    server, refused credentials, or an engine whose broker is not Redis."""


@attrs.frozen
class TaskInfo:
    """How the jobs of one task of the engine are delivered.

    Attributes:
        name: the task's name.
        queue: the queue its jobs go to.
        delivery: ``"at-most-once"`` (no retry) or ``"at-least-once"``.
        max_retries: retries after a failure or a dead worker.
        max_concurrency: most jobs of the task running at once; None for no limit.
        periodicity: seconds between two runs of a periodic task, else None.
    """

    name: str
    queue: str
    delivery: Delivery
    max_retries: int
    max_concurrency: int | None
    periodicity: float | None


@attrs.frozen
class Report:
    """The outcome of :func:`diagnose`.

    Attributes:
        target: the URL of the server checked, without its password.
        namespace: the namespace checked; None for a bare URL, where every
            namespace found is reported.
        checks: the checks, in the order of the production checklist.
        tasks: the engine's tasks, by name; empty without an engine.
    """

    target: str
    namespace: str | None
    checks: tuple[Check, ...]
    tasks: tuple[TaskInfo, ...] = ()

    @property
    def failed(self) -> bool:
        """Whether a check failed (warnings and unknowns do not count)."""
        return any(check.status == "fail" for check in self.checks)

    def counts(self) -> dict[Status, int]:
        """How many checks ended with each status."""
        return {s: sum(c.status == s for c in self.checks) for s in _STATUSES}

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON types."""
        return {
            "target": self.target,
            "namespace": self.namespace,
            "failed": self.failed,
            "counts": self.counts(),
            "checks": [attrs.asdict(check) for check in self.checks],
            "tasks": [attrs.asdict(task) for task in self.tasks],
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The report as a JSON document; see :meth:`to_dict`."""
        return json.dumps(self.to_dict(), indent=indent)

    def to_text(self) -> str:
        """The report as a readable checklist, then the tasks, then a summary line."""
        scope = "" if self.namespace is None else f" namespace {self.namespace!r}"
        lines = [f"spinach doctor: {self.target}{scope}"]
        for check in self.checks:
            line = f"[{_LABELS[check.status]}] {check.name}: {check.detail}"
            if check.fix is not None and check.status != "pass":
                line += f" -> fix: {check.fix}"
            lines.append(line)
        if self.tasks:
            lines += ["", f"Tasks of namespace {self.namespace!r}:", *_task_table(self.tasks)]
        counts = self.counts()
        lines += [
            "",
            f"{counts['fail']} failed, {counts['warn']} warning(s), {counts['unknown']} unknown, "
            f"{counts['pass']} passed",
        ]
        return "\n".join(lines)


def _duration(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _task_table(tasks: tuple[TaskInfo, ...]) -> list[str]:
    rows = [("TASK", "QUEUE", "DELIVERY", "RETRIES", "CONCURRENCY", "PERIODICITY")]
    for t in tasks:
        rows.append(
            (
                t.name,
                t.queue,
                t.delivery,
                str(t.max_retries),
                "-" if t.max_concurrency is None else str(t.max_concurrency),
                "-" if t.periodicity is None else f"every {_duration(t.periodicity)}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]


def _task_infos(engine: Engine) -> tuple[TaskInfo, ...]:
    # The engine's registry is private, but this module belongs to the package.
    tasks = engine._tasks.tasks
    return tuple(
        TaskInfo(
            name=task.name,
            queue=task.queue,
            delivery="at-least-once" if task.max_retries else "at-most-once",
            max_retries=task.max_retries,
            max_concurrency=task.max_concurrency,
            periodicity=None if task.periodicity is None else task.periodicity.total_seconds(),
        )
        for _, task in sorted(tasks.items())
    )


def describe(client: redis.Redis) -> str:
    """The URL of a client's server, with its user but without its password."""
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    db = kwargs.get("db", 0)
    if issubclass(pool.connection_class, redis.UnixDomainSocketConnection):
        return f"unix://{kwargs.get('path')}?db={db}"
    scheme = "rediss" if issubclass(pool.connection_class, redis.SSLConnection) else "redis"
    user = kwargs.get("username")
    auth = f"{quote(user, safe='')}@" if user else ""
    host = str(kwargs.get("host", "localhost"))
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{auth}{host}:{kwargs.get('port', 6379)}/{db}"


def _client(url: str) -> redis.Redis:
    if not url.startswith(("redis://", "rediss://", "unix://")):
        raise TargetError(
            f"{url!r} is not a Redis URL: it must start with redis://, rediss:// or unix://"
        )
    try:
        # No retries: a refused password or a closed port is the answer, not an outage.
        return redis.Redis.from_url(
            url, socket_connect_timeout=5, socket_timeout=10, retry=Retry(NoBackoff(), 0)
        )
    except ValueError as e:
        raise TargetError(f"Invalid Redis URL: {e}") from None


def _connect(client: redis.Redis) -> None:
    where = describe(client)
    try:
        client.ping()
    except (redis.AuthenticationError, redis.AuthenticationWrongNumberOfArgsError) as e:
        if not client.connection_pool.connection_kwargs.get("password"):
            raise TargetError(
                f"Redis at {where} requires a password: put it in the URL "
                "(redis://user:password@host:port/db)"
            ) from None
        raise TargetError(
            f"Redis at {where} refused the user or password of the URL: {str(e).rstrip('.')}"
        ) from None
    except redis.ResponseError:
        pass  # any other refusal (an ACL without PING) still proves that the server answers
    except redis.RedisError as e:
        raise TargetError(
            f"Cannot reach Redis at {where}: {str(e).rstrip('.')}. Check that the server "
            "runs and that the URL is right"
        ) from None


Target = Union[Engine, RedisBroker, str]


def diagnose(target: Target, *, clock: Clock | None = None) -> Report:
    """Check a Redis server for Spinach, and list an engine's tasks.

    Args:
        target: an :class:`~spinach.engine.Engine` with a ``RedisBroker`` (its
            namespace is checked and its tasks listed), a ``RedisBroker`` (its
            namespace is checked), or a Redis URL (every namespace found on the
            server is reported).
        clock: this host's clock, compared with the server's; the system clock
            by default.

    Raises:
        TargetError: the URL is invalid, the server cannot be reached or refuses
            the credentials, or the engine's broker is not a ``RedisBroker``.
    """
    clock = clock if clock is not None else SystemClock()
    tasks: tuple[TaskInfo, ...] = ()
    timeout = const.DEFAULT_DEAD_WORKER_TIMEOUT
    namespace: str | None = None
    if isinstance(target, str):
        client = _client(target)
        try:
            return _run(client, describe(client), None, timeout, tasks, clock)
        finally:
            client.close()
    if isinstance(target, Engine):
        broker = target.broker
        if not isinstance(broker, RedisBroker):
            raise TargetError(
                f"The engine's broker is a {type(broker).__name__}: the doctor checks a "
                "Redis server, so give it an engine with a RedisBroker"
            )
        namespace = target.namespace
        # Live workers are those the engine itself would not declare dead.
        timeout = target._dead_worker_timeout
        tasks = _task_infos(target)
    elif isinstance(target, RedisBroker):
        broker, namespace = target, target.namespace
    else:
        raise TargetError(
            f"Cannot diagnose a {type(target).__name__}: give an Engine, a RedisBroker "
            "or a Redis URL"
        )
    return _run(broker.redis, describe(broker.redis), namespace, timeout, tasks, clock)


def _run(
    client: redis.Redis,
    where: str,
    namespace: str | None,
    timeout: float,
    tasks: tuple[TaskInfo, ...],
    clock: Clock,
) -> Report:
    _connect(client)
    try:
        checks = run_checks(client, namespace, timeout, clock)
    except (redis.ConnectionError, redis.TimeoutError) as e:
        raise TargetError(f"Lost the connection to Redis at {where}: {e}") from None
    return Report(where, namespace, tuple(checks), tasks)
