"""Each script of examples/ runs as it is, on the MemoryBroker and on Redis."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from spinach.testing.redis_server import RedisServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

#: Each example, and a line its output must hold.
KEY_LINES = {
    "quickstart.py": "greet('world') = 'Hello, world!'",
    "retries.py": "fetch_rate('EUR') succeeded on run 3",
    "periodic.py": "tick ran 2 times; workers stopped",
    "concurrency.py": "render: 6 jobs, at most 2 running at once",
    "batches.py": "stored 6 jobs in one call: {'spinach': 6}",
    "asyncio_workers.py": "fetched 10 URLs",
    "signals.py": "[billing only] divide(1, 0) failed: ZeroDivisionError",
    "fastapi_app.py": "3 orders charged",
}


def run_example(name: str, redis_url: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "SPINACH_REDIS_URL"}
    if redis_url is not None:
        env["SPINACH_REDIS_URL"] = redis_url
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        timeout=60,
        capture_output=True,
        text=True,
        env=env,
        cwd=EXAMPLES.parent,
        check=False,
    )


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A throwaway redis-server for the Redis runs of the examples."""
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed: the Redis runs of the examples need one")
    with RedisServer(str(tmp_path_factory.mktemp("redis"))) as server:
        yield server.url


def test_every_example_is_tested() -> None:
    """Each script of examples/ has a key line checked below."""
    assert sorted(p.name for p in EXAMPLES.glob("*.py")) == sorted(KEY_LINES)


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", sorted(KEY_LINES))
def test_example_on_memory_broker(name: str) -> None:
    """The example exits 0 on the MemoryBroker and prints its key line."""
    result = run_example(name, None)
    assert result.returncode == 0, result.stderr
    assert KEY_LINES[name] in result.stdout, result.stdout


@pytest.mark.timeout(90)
@pytest.mark.parametrize("name", sorted(KEY_LINES))
def test_example_on_redis(name: str, redis_url: str) -> None:
    """The example exits 0 with SPINACH_REDIS_URL set and prints its key line."""
    result = run_example(name, redis_url)
    assert result.returncode == 0, result.stderr
    assert KEY_LINES[name] in result.stdout, result.stdout
