"""RQ adapter: an ``rq worker`` process with SimpleWorker (one job at a time, no fork)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import redis
import rq
from rq import Queue

# Workers get the URL from the environment, the adapter from its --url argument.
URL = os.environ.get("BENCH_REDIS_URL") or sys.argv[sys.argv.index("--url") + 1]
CHUNK = 1000
client = redis.Redis.from_url(URL)


def noop() -> None:
    pass


def incr() -> None:
    client.incr("bench:incr")


def stamp() -> None:
    client.rpush("bench:lat", time.time())


def main() -> None:
    from _common import (
        Worker,
        arguments,
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
    import rq_queue as m  # the module workers import, not __main__

    r = redis.Redis.from_url(args.url)
    q = Queue("default", connection=r)
    results: dict[str, Any] = {"queue": "rq", "version": rq.__version__}
    here = os.path.dirname(os.path.abspath(__file__))
    rq_cli = os.path.join(os.path.dirname(sys.executable), "rq")

    def fresh() -> None:
        r.flushdb()

    def one_by_one(func: Any, count: int) -> None:
        for _ in range(count):
            q.enqueue(func)

    def many(func: Any, count: int) -> None:
        for start in range(0, count, CHUNK):
            data = [Queue.prepare_data(func) for _ in range(min(CHUNK, count - start))]
            with r.pipeline() as pipe:
                q.enqueue_many(data, pipeline=pipe)
                pipe.execute()

    def start(url: str = args.url) -> Any:
        argv = [rq_cli, "worker", "-w", "rq.worker.SimpleWorker", "--url", url, "-q"]
        return lambda: Worker([*argv, "--path", here, "default"], {"BENCH_REDIS_URL": url})

    def run_drain(count: int, func: Any, url: str = args.url) -> Any:
        fresh()
        if func is m.incr:
            remaining = lambda: count - int(r.get("bench:incr") or 0)  # noqa: E731
        else:
            remaining = lambda: int(r.llen("rq:queue:default"))  # noqa: E731
        return drain(count, lambda n: many(func, n), start(url), remaining)

    fresh()
    safely(results, "enqueue_one", lambda: time_enqueue(args.jobs, lambda n: one_by_one(m.noop, n)))
    fresh()
    safely(results, "enqueue_batch", lambda: time_enqueue(args.jobs, lambda n: many(m.noop, n)))
    safely(results, "drain_threads_1", lambda: run_drain(args.jobs, m.noop))
    safely(results, "drain_incr_threads_1", lambda: run_drain(args.jobs, m.incr))
    if args.proxy_url:
        safely(
            results,
            "drain_proxy_threads_1",
            lambda: run_drain(args.proxy_jobs, m.noop, args.proxy_url),
        )

    def run_latency() -> dict[str, Any]:
        fresh()
        with start()():
            return latency(
                args.latency_samples,
                lambda: stamp_latency(r, "bench:lat", lambda: q.enqueue(m.stamp)),
            )

    safely(results, "latency", run_latency)
    fresh()
    safely(
        results,
        "memory_per_job",
        lambda: memory_per_job(r, args.memory_jobs, lambda n: many(m.noop, n)),
    )
    fresh()
    emit(results)


if __name__ == "__main__":
    main()
