"""The Redis server a benchmark runs against."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from spinach.testing.redis_server import RedisServer


@contextlib.contextmanager
def redis_url() -> Iterator[str]:
    """``SPINACH_BENCH_REDIS_URL``, else a throwaway server's URL."""
    url = os.environ.get("SPINACH_BENCH_REDIS_URL")
    if url:
        yield url
        return
    with tempfile.TemporaryDirectory() as directory, RedisServer(directory) as server:
        yield server.url


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]
