"""Script calls on a connection of the client's pool (spinach.brokers.redis.direct):
taken for a plain client, not for an instrumented one, and as safe as the client's."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import pytest
import redis

from spinach import Engine
from spinach.brokers.redis import RedisBroker


def _engine(client: redis.Redis, namespace: str) -> Engine:
    engine = Engine(RedisBroker(client), namespace)
    engine.task(lambda: None, name="noop")
    return engine


def test_a_plain_client_runs_scripts_without_its_execute_command(
    redis_client: redis.Redis, namespace: str
) -> None:
    """The scripts go straight to a pooled connection; replies read the same."""
    sent: list[Any] = []
    own = redis_client.execute_command

    def spy(*args: Any, **options: Any) -> Any:
        sent.append(args[0])
        return own(*args, **options)

    redis_client.execute_command = spy  # type: ignore[method-assign]
    engine = _engine(redis_client, namespace)
    engine.schedule("noop")
    engine.broker.get_jobs_from_queue("spinach", 10)
    # Loaded now (a script Redis lacks is loaded through the client): from here on, direct.
    sent.clear()
    job = engine.schedule("noop")
    (got,) = engine.broker.get_jobs_from_queue("spinach", 10)
    assert got.id == job.id
    assert got.task_name == "noop"
    assert "EVALSHA" not in sent
    engine.broker.flush()


class _Instrumented(redis.Redis):
    """A client whose execute_command is wrapped, as tracing instrumentation does."""

    seen: ClassVar[list[Any]] = []

    @functools.wraps(redis.Redis.execute_command)
    def execute_command(self, *args: Any, **options: Any) -> Any:
        self.seen.append(args[0])
        return super().execute_command(*args, **options)


def test_an_instrumented_client_keeps_its_spans(redis_url: str, namespace: str) -> None:
    """A client whose execute_command is wrapped (it has __wrapped__) sees every script call."""
    client = _Instrumented.from_url(redis_url)
    engine = _engine(client, namespace)
    engine.schedule("noop")
    assert engine.broker.get_jobs_from_queue("spinach", 10)
    assert _Instrumented.seen.count("EVALSHA") >= 2
    engine.broker.flush()
    client.close()


def test_scheduling_after_redis_dropped_every_connection(
    redis_client: redis.Redis, redis_url: str, namespace: str
) -> None:
    """A pooled connection killed by the server is replaced: the job is stored once."""
    engine = _engine(redis_client, namespace)
    engine.schedule("noop")
    killer = redis.Redis.from_url(redis_url)
    assert killer.execute_command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") >= 1
    engine.schedule("noop")
    assert engine.broker.count_jobs().queued == {"spinach": 2}
    killer.close()
    engine.broker.flush()


def test_a_client_instrumented_before_spinach_was_imported_keeps_its_spans(
    redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """redis-py's own execute_command wrapped in place (as OpenTelemetry's and
    Datadog's instrumentations do, with __wrapped__), before Spinach saw it."""
    from spinach.brokers.redis import direct

    seen: list[Any] = []
    own = redis.Redis.execute_command

    @functools.wraps(own)
    def wrapper(self: redis.Redis, *args: Any, **options: Any) -> Any:
        seen.append(args[0])
        return own(self, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", wrapper)
    monkeypatch.setattr(direct, "_OWN_EXECUTE", wrapper)
    client = redis.Redis.from_url(redis_url)
    engine = _engine(client, namespace)
    engine.schedule("noop")
    engine.schedule("noop")
    assert seen.count("EVALSHA") >= 2
    engine.broker.flush()
    client.close()
