"""Huey adapter: a ``huey_consumer`` process (thread workers) on RedisHuey (blocking reads)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import huey as huey_package
import redis
from huey import RedisHuey

# Workers get the URL from the environment, the adapter from its --url argument.
URL = os.environ.get("BENCH_REDIS_URL") or sys.argv[sys.argv.index("--url") + 1]
client = redis.Redis.from_url(URL)
huey = RedisHuey("bench", url=URL, results=False, blocking=True)


@huey.task()
def noop() -> None:
    pass


@huey.task()
def incr() -> None:
    client.incr("bench:incr")


@huey.task()
def stamp() -> None:
    client.rpush("bench:lat", time.time())


def main() -> None:
    from _common import (
        Worker,
        arguments,
        concurrencies,
        drain,
        emit,
        latency,
        memory_per_job,
        safely,
        stamp_latency,
        time_enqueue,
    )

    args = arguments()
    os.environ["BENCH_REDIS_URL"] = args.url
    import huey_queue as m  # the module workers import, not __main__

    r = redis.Redis.from_url(args.url)
    results: dict[str, Any] = {"queue": "huey", "version": huey_package.__version__}
    here = os.path.dirname(os.path.abspath(__file__))
    consumer = os.path.join(os.path.dirname(sys.executable), "huey_consumer")

    def fresh() -> None:
        r.flushdb()

    def one_by_one(task: Any, count: int) -> None:
        for _ in range(count):
            task()

    def start(workers: int, url: str = args.url) -> Any:
        argv = [consumer, "huey_queue.huey", "-k", "thread", "-w", str(workers), "-q"]
        env = {"BENCH_REDIS_URL": url, "PYTHONPATH": here}
        return lambda: Worker(argv, env)

    def run_drain(workers: int, count: int, task: Any, url: str = args.url) -> Any:
        fresh()
        if task is m.incr:
            remaining = lambda: count - int(r.get("bench:incr") or 0)  # noqa: E731
        else:
            remaining = lambda: int(r.llen("huey.redis.bench"))  # noqa: E731
        return drain(count, lambda n: one_by_one(task, n), start(workers, url), remaining)

    fresh()
    safely(results, "enqueue_one", lambda: time_enqueue(args.jobs, lambda n: one_by_one(m.noop, n)))
    results["enqueue_batch"] = None  # Huey has no bulk enqueue
    for c in concurrencies(args):
        safely(results, f"drain_threads_{c}", lambda c=c: run_drain(c, args.jobs, m.noop))
    safely(results, "drain_incr_threads_8", lambda: run_drain(8, args.jobs, m.incr))
    if args.proxy_url:
        safely(
            results,
            "drain_proxy_threads_8",
            lambda: run_drain(8, args.proxy_jobs, m.noop, args.proxy_url),
        )

    def run_latency() -> dict[str, Any]:
        fresh()
        with start(8)():
            return latency(args.latency_samples, lambda: stamp_latency(r, "bench:lat", m.stamp))

    safely(results, "latency", run_latency)
    fresh()
    safely(
        results,
        "memory_per_job",
        lambda: memory_per_job(r, args.memory_jobs, lambda n: one_by_one(m.noop, n)),
    )
    fresh()
    emit(results)


if __name__ == "__main__":
    main()
