"""Fixtures of the fault scenarios and the hostile tests: a Redis server of their own, logs."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest

from spinach.testing.redis_server import RedisServer


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of the test's own, not started yet: the test starts it with its options."""
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed: the fault and hostile scenarios need one"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    data = tmp_path / "redis"
    data.mkdir()
    server = RedisServer(str(data))
    yield server
    server.stop()


@pytest.fixture
def log_dir(tmp_path: Path) -> Path:
    """Where worker processes write their logs."""
    path = tmp_path / "logs"
    path.mkdir()
    return path
