"""Spinach adapter: runs unchanged on this project and on Spinach 0.0.25.

``bench`` mode measures every scenario and prints JSON; ``worker`` mode is the
worker subprocess it starts (one process, ThreadWorkers or AsyncioWorkers).
"""

from __future__ import annotations

import os
import queue
import signal
import sys
import time
from typing import Any

import redis
from _common import (
    DEADLINE,
    Worker,
    arguments,
    concurrencies,
    drain,
    emit,
    latency,
    memory_per_job,
    rate,
    safely,
    stamp_latency,
    time_enqueue,
)

from spinach import AsyncioWorkers, Batch, Engine, MemoryBroker, RedisBroker, ThreadWorkers

NS = "bench"
CHUNK = 1000
client: redis.Redis | None = None
stamps: queue.Queue[float] = queue.Queue()


def noop() -> None:
    pass


async def anoop() -> None:
    pass


def incr() -> None:
    assert client is not None
    client.incr("bench:incr")


def stamp() -> None:
    if client is None:
        stamps.put(time.time())
    else:
        client.rpush("bench:lat", time.time())


def engine(broker: Any) -> Engine:
    result = Engine(broker, NS)
    result.task(noop, name="noop", queue="q")
    result.task(incr, name="incr", queue="q")
    result.task(stamp, name="stamp", queue="q")
    result.task(anoop, name="anoop", queue="aq")
    return result


def version() -> str:
    import spinach

    return str(getattr(spinach, "__version__", getattr(spinach, "VERSION", "?")))


def worker_main(url: str, kind: str, workers: int) -> None:
    global client
    client = redis.Redis.from_url(url)
    e = engine(RedisBroker(redis.Redis.from_url(url)))
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    if kind == "asyncio":
        e.start_workers(number=workers, queue="aq", block=False, workers_class=AsyncioWorkers)
    else:
        e.start_workers(number=workers, queue="q", block=False, workers_class=ThreadWorkers)
    while True:
        time.sleep(3600)


def batches(e: Engine, task: str, count: int) -> None:
    for start in range(0, count, CHUNK):
        batch = Batch()
        for _ in range(min(CHUNK, count - start)):
            batch.schedule(task)
        e.schedule_batch(batch)


def one_by_one(e: Engine, task: str, count: int) -> None:
    for _ in range(count):
        e.schedule(task)


def ready_length(client: redis.Redis, broker: Any, queue_name: str) -> int:
    keys = getattr(broker, "_keys", None)
    key = keys.ready(queue_name) if keys is not None else broker._to_namespaced(queue_name)
    return int(client.llen(key))


def on_deadline(signum: int, frame: Any) -> None:
    raise TimeoutError(f"the workers did not stop within {DEADLINE} s")


def memory_broker_scenarios(args: Any, results: dict[str, Any]) -> None:
    def drain_in_process(kind: str, workers: int) -> dict[str, Any]:
        e = engine(MemoryBroker())
        task, queue_name = ("anoop", "aq") if kind == "asyncio" else ("noop", "q")
        batches(e, task, args.jobs)
        cls = AsyncioWorkers if kind == "asyncio" else ThreadWorkers
        cpu, started = time.process_time(), time.perf_counter()
        # In the main thread (Spinach 0.0.25 installs signal handlers there), with
        # SIGALRM as the deadline: its asyncio workers may never stop.
        signal.signal(signal.SIGALRM, on_deadline)
        signal.alarm(int(DEADLINE))
        try:
            e.start_workers(
                number=workers,
                queue=queue_name,
                block=True,
                stop_when_queue_empty=True,
                workers_class=cls,
            )
        finally:
            signal.alarm(0)
        elapsed = time.perf_counter() - started
        return {
            "jobs": args.jobs,
            "jobs_per_s": round(rate(args.jobs, elapsed), 1),
            "cpu_ms_per_job": round(1000 * (time.process_time() - cpu) / args.jobs, 4),
        }

    def latency_in_process() -> dict[str, Any]:
        e = engine(MemoryBroker())
        e.start_workers(number=8, queue="q", block=False)
        try:

            def one() -> float:
                before = time.time()
                e.schedule("stamp")
                return stamps.get(timeout=30) - before

            return latency(args.latency_samples, one)
        finally:
            e.stop_workers()

    e = engine(MemoryBroker())
    safely(
        results,
        "memory:enqueue_one",
        lambda: time_enqueue(args.jobs, lambda n: one_by_one(e, "noop", n)),
    )
    safely(
        results,
        "memory:enqueue_batch",
        lambda: time_enqueue(args.jobs, lambda n: batches(e, "noop", n)),
    )
    for c in concurrencies(args):
        safely(results, f"memory:drain_threads_{c}", lambda c=c: drain_in_process("threads", c))
    for c in concurrencies(args):
        safely(results, f"memory:drain_asyncio_{c}", lambda c=c: drain_in_process("asyncio", c))
    safely(results, "memory:latency", latency_in_process)


def main() -> None:
    args = arguments()
    if args.mode == "worker":
        worker_main(args.url, args.kind, args.workers)
        return
    r = redis.Redis.from_url(args.url)
    broker = RedisBroker(redis.Redis.from_url(args.url))
    producer = engine(broker)
    results: dict[str, Any] = {"queue": "spinach", "version": version()}

    def fresh() -> None:
        broker.flush()
        r.delete("bench:incr", "bench:lat")

    def start(kind: str, workers: int, url: str = args.url) -> Any:
        argv = [sys.executable, __file__, "worker", "--url", url, "--kind", kind]
        return lambda: Worker([*argv, "--workers", str(workers)])

    def run_drain(kind: str, workers: int, count: int, task: str, url: str = args.url) -> Any:
        fresh()
        queue_name = "aq" if kind == "asyncio" else "q"
        if task == "incr":
            remaining = lambda: count - int(r.get("bench:incr") or 0)  # noqa: E731
        else:
            remaining = lambda: ready_length(r, broker, queue_name)  # noqa: E731
        return drain(
            count, lambda n: batches(producer, task, n), start(kind, workers, url), remaining
        )

    fresh()
    safely(
        results,
        "enqueue_one",
        lambda: time_enqueue(args.jobs, lambda n: one_by_one(producer, "noop", n)),
    )
    fresh()
    safely(
        results,
        "enqueue_batch",
        lambda: time_enqueue(args.jobs, lambda n: batches(producer, "noop", n)),
    )
    for c in concurrencies(args):
        safely(
            results, f"drain_threads_{c}", lambda c=c: run_drain("threads", c, args.jobs, "noop")
        )
    for c in concurrencies(args):
        safely(
            results, f"drain_asyncio_{c}", lambda c=c: run_drain("asyncio", c, args.jobs, "anoop")
        )
    safely(results, "drain_incr_threads_8", lambda: run_drain("threads", 8, args.jobs, "incr"))
    if args.proxy_url:
        safely(
            results,
            "drain_proxy_threads_8",
            lambda: run_drain("threads", 8, args.proxy_jobs, "noop", args.proxy_url),
        )

    def run_latency() -> dict[str, Any]:
        fresh()
        with start("threads", 8)():
            return latency(
                args.latency_samples,
                lambda: stamp_latency(r, "bench:lat", lambda: producer.schedule("stamp")),
            )

    safely(results, "latency", run_latency)
    fresh()
    safely(
        results,
        "memory_per_job",
        lambda: memory_per_job(r, args.memory_jobs, lambda n: batches(producer, "noop", n)),
    )
    fresh()
    memory_broker_scenarios(args, results)
    emit(results)
    os._exit(0)  # workers a deadline gave up on must not keep the process alive


if __name__ == "__main__":
    main()
