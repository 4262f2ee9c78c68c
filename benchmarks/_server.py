"""The Redis server a benchmark runs against, and measures run with a given Spinach."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from typing import Any

from spinach.testing.redis_server import RedisServer

HERE = os.path.dirname(os.path.abspath(__file__))


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


def measure_with(package: str, module: str, *args: Any) -> Any:
    """``module.measure(*args)`` (a module of ``benchmarks/``) run in a process of
    its own with the Spinach of the checkout ``package``, and what it returned
    (through JSON)."""
    code = (
        f"import json, os, sys, spinach, {module}; "
        "assert os.path.realpath(spinach.__file__).startswith(os.path.realpath(sys.argv[2])), "
        "spinach.__file__; "
        f"print(json.dumps({module}.measure(*json.loads(sys.argv[1]))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, json.dumps(args), package],
        env=dict(os.environ, PYTHONPATH=os.pathsep.join([package, HERE])),
        # Not the checkout's root: python -c puts the working directory first
        # on sys.path, where that checkout's spinach would win over package's.
        cwd=HERE,
        check=True,
        capture_output=True,
        text=True,
    )
    return json.loads(out.stdout)
