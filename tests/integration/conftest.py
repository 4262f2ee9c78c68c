"""A throwaway redis-server for the integration tests, on a free loopback port.

``SPINACH_TEST_REDIS_URL`` points the tests at a server of your own instead.
Without a redis-server the tests fail in CI and are skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis

from spinach import Engine, Tasks
from spinach.brokers.redis import RedisBroker
from spinach.testing.redis_server import RedisServer


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    url = os.environ.get("SPINACH_TEST_REDIS_URL")
    if url:
        yield url
        return
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed: install it or set SPINACH_TEST_REDIS_URL"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    with tempfile.TemporaryDirectory() as directory:
        server = RedisServer(directory)
        server.start()
        try:
            yield server.url
        finally:
            server.stop()


@pytest.fixture(params=[False, True], ids=["bytes", "decoded"])
def redis_client(request: pytest.FixtureRequest, redis_url: str) -> Iterator[redis.Redis]:
    """A client of the test server, decoding responses or not."""
    client = redis.Redis.from_url(redis_url, decode_responses=request.param)
    yield client
    client.close()


@pytest.fixture
def namespace() -> str:
    return f"it-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def redis_engine(redis_url: str, namespace: str) -> Iterator[Engine]:
    """An engine without tasks on the test server, in a namespace of its own,
    flushed and closed at the end of the test."""
    engine = Engine(RedisBroker.from_url(redis_url), namespace)
    yield engine
    engine.broker.flush()
    engine.broker.close()  # type: ignore[attr-defined]


@pytest.fixture
def from_url() -> Iterator[Callable[..., RedisBroker]]:
    """RedisBroker.from_url, closing the brokers it made at the end of the test."""
    brokers: list[RedisBroker] = []

    def make(url: str, **kwargs: Any) -> RedisBroker:
        broker = RedisBroker.from_url(url, **kwargs)
        brokers.append(broker)
        return broker

    yield make
    for broker in brokers:
        broker.close()


def make_engine(broker: RedisBroker, namespace: str, runs: list[Any]) -> Engine:
    """An engine with one task, ``record``, appending its argument to ``runs``."""
    tasks = Tasks()
    tasks.add(runs.append, "record", max_retries=2)
    engine = Engine(broker, namespace, heartbeat_interval=0.1, dead_worker_timeout=5)
    engine.attach_tasks(tasks)
    return engine
