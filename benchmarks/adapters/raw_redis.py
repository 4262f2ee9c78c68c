"""Raw redis-py: the floor every queue is measured against.

``enqueue_one`` is one RPUSH round trip per job (a 150-byte value),
``enqueue_batch`` one RPUSH of 100 values per call, ``memory_per_job`` the
bytes of a 150-byte list entry, and ``latency`` the time from an RPUSH to a
``BLPOP`` in a worker process getting it (the worker stamps the time).
"""

from __future__ import annotations

import sys
import time
from typing import Any

import redis
from _common import (
    Worker,
    arguments,
    emit,
    latency,
    memory_per_job,
    safely,
    stamp_latency,
    time_enqueue,
)

VALUE = b"x" * 150
BULK = 100


def worker_main(url: str) -> None:
    client = redis.Redis.from_url(url)
    while True:
        popped = client.blpop(["bench:raw"], timeout=1)
        if popped is not None:
            client.rpush("bench:lat", time.time())


def main() -> None:
    args = arguments()
    if args.mode == "worker":
        worker_main(args.url)
        return
    r = redis.Redis.from_url(args.url)
    results: dict[str, Any] = {"queue": "redis-py", "version": redis.__version__}

    def one_by_one(count: int) -> None:
        for _ in range(count):
            r.rpush("bench:raw", VALUE)

    def bulk(count: int) -> None:
        for start in range(0, count, BULK):
            r.rpush("bench:raw", *[VALUE] * min(BULK, count - start))

    r.flushdb()
    safely(results, "enqueue_one", lambda: time_enqueue(args.jobs, one_by_one))
    r.flushdb()
    safely(results, "enqueue_batch", lambda: time_enqueue(args.jobs, bulk))
    r.flushdb()

    def run_latency() -> dict[str, Any]:
        argv = [sys.executable, __file__, "worker", "--url", args.url]
        with Worker(argv):
            return latency(
                args.latency_samples,
                lambda: stamp_latency(r, "bench:lat", lambda: r.rpush("bench:raw", VALUE)),
            )

    safely(results, "latency", run_latency)
    r.flushdb()
    safely(results, "memory_per_job", lambda: memory_per_job(r, args.memory_jobs, bulk))
    r.flushdb()
    emit(results)


if __name__ == "__main__":
    main()
