"""Dramatiq adapter: a ``dramatiq`` worker process (1 process, N threads) on its RedisBroker."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

# Workers get the URL from the environment, the adapter from its --url argument.
URL = os.environ.get("BENCH_REDIS_URL") or sys.argv[sys.argv.index("--url") + 1]
CHUNK = 1000
client = redis.Redis.from_url(URL)
dramatiq.set_broker(RedisBroker(url=URL))


@dramatiq.actor(max_retries=0)
def noop() -> None:
    pass


@dramatiq.actor(max_retries=0)
def incr() -> None:
    client.incr("bench:incr")


@dramatiq.actor(max_retries=0)
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
    import dramatiq_queue as m  # the module workers import, not __main__

    r = redis.Redis.from_url(args.url)
    results: dict[str, Any] = {"queue": "dramatiq", "version": dramatiq.__version__}
    here = os.path.dirname(os.path.abspath(__file__))

    def fresh() -> None:
        r.flushdb()

    def one_by_one(actor: Any, count: int) -> None:
        for _ in range(count):
            actor.send()

    def grouped(actor: Any, count: int) -> None:
        for start in range(0, count, CHUNK):
            dramatiq.group(actor.message() for _ in range(min(CHUNK, count - start))).run()

    def start(threads: int, url: str = args.url) -> Any:
        argv = [sys.executable, "-m", "dramatiq", "dramatiq_queue"]
        argv += ["--processes", "1", "--threads", str(threads)]
        env = {"BENCH_REDIS_URL": url, "PYTHONPATH": here}
        return lambda: Worker(argv, env)

    def run_drain(threads: int, count: int, actor: Any, url: str = args.url) -> Any:
        fresh()
        if actor is m.incr:
            remaining = lambda: count - int(r.get("bench:incr") or 0)  # noqa: E731
        else:
            remaining = lambda: int(r.llen("dramatiq:default"))  # noqa: E731
        return drain(count, lambda n: grouped(actor, n), start(threads, url), remaining)

    fresh()
    safely(results, "enqueue_one", lambda: time_enqueue(args.jobs, lambda n: one_by_one(m.noop, n)))
    fresh()
    safely(results, "enqueue_batch", lambda: time_enqueue(args.jobs, lambda n: grouped(m.noop, n)))
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
            return latency(
                args.latency_samples, lambda: stamp_latency(r, "bench:lat", m.stamp.send)
            )

    safely(results, "latency", run_latency)
    fresh()
    safely(
        results,
        "memory_per_job",
        lambda: memory_per_job(r, args.memory_jobs, lambda n: grouped(m.noop, n)),
    )
    fresh()
    emit(results)


if __name__ == "__main__":
    main()
