"""A throwaway redis-server for the integration tests, on a free loopback port.

``SPINACH_TEST_REDIS_URL`` points the tests at a server of your own instead.
Without a redis-server the tests fail in CI and are skipped elsewhere.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator

import attrs
import pytest
import redis


@attrs.define
class RedisServer:
    """A redis-server process started for the tests."""

    port: int
    directory: str
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, *extra: str) -> None:
        self.process = subprocess.Popen(
            [
                "redis-server",
                "--port", str(self.port),
                "--bind", "127.0.0.1",
                "--save", "",
                "--appendonly", "no",
                "--dir", self.directory,
                *extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )  # fmt: skip
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except (redis.AuthenticationError, redis.ResponseError):
                break  # it answers: it is up, and wants a password
            except redis.ConnectionError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    raise RuntimeError(f"redis-server did not start on port {self.port}") from None
                time.sleep(0.02)
            finally:
                client.close()

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait()
            self.process = None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


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
        server = RedisServer(free_port(), directory)
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
