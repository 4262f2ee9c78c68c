"""Spinach adapter: runs unchanged on this project and on Spinach 0.0.25.

``bench`` mode measures every scenario and prints JSON; ``worker`` mode is the
worker subprocess it starts (one process, ThreadWorkers or AsyncioWorkers).
The scenarios of kept results and failed jobs run only on a Spinach that keeps
results (``keep_result``); ``benchmarks/lifecycle.py`` uses them too.
"""

from __future__ import annotations

import inspect
import os
import queue
import signal
import sys
import time
from datetime import datetime, timedelta, timezone
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
    wait_until,
)

from spinach import AsyncioWorkers, Batch, Engine, MemoryBroker, RedisBroker, Tasks, ThreadWorkers

NS = "bench"
CHUNK = 1000
client: redis.Redis | None = None
stamps: queue.Queue[float] = queue.Queue()
#: Whether this Spinach keeps results (not 0.0.25, nor this project before its job lifecycle).
KEEPS_RESULTS = "keep_result" in inspect.signature(Tasks.task).parameters
KEPT_FOR = timedelta(hours=1)
#: A larger result: a string of 1 KB.
KILOBYTE = "x" * 1024


def noop() -> None:
    pass


async def anoop() -> None:
    pass


def echo(n: int) -> int:
    return n


def echo_kept(n: int) -> int:
    return n


def kilobyte_kept(n: int) -> str:
    return KILOBYTE


def fail(n: int) -> None:
    raise ValueError("boom")


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
    result.task(echo, name="echo", queue="q")
    if KEEPS_RESULTS:
        result.task(echo_kept, name="echo_kept", queue="q", keep_result=KEPT_FOR)
        result.task(kilobyte_kept, name="kilobyte_kept", queue="q", keep_result=KEPT_FOR)
        # No retry: each job goes to the failed store at its first error.
        result.task(fail, name="fail", queue="q", max_retries=0)
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


def batches(e: Engine, task: str, count: int, numbered: bool = False) -> None:
    """Schedule ``count`` jobs in batches; ``numbered``: each with its number as argument."""
    for start in range(0, count, CHUNK):
        batch = Batch()
        for i in range(start, min(start + CHUNK, count)):
            if numbered:
                batch.schedule(task, i)
            else:
                batch.schedule(task)
        e.schedule_batch(batch)


def future_batches(e: Engine, task: str, count: int) -> None:
    """Schedule ``count`` jobs an hour ahead, in batches."""
    at = datetime.now(timezone.utc) + timedelta(hours=1)  # Spinach 0.0.25 has no broker.now()
    for start in range(0, count, CHUNK):
        batch = Batch()
        for _ in range(start, min(start + CHUNK, count)):
            batch.schedule_at(task, at)
        e.schedule_batch(batch)


def one_by_one(e: Engine, task: str, count: int) -> None:
    for _ in range(count):
        e.schedule(task)


def ready_length(client: redis.Redis, broker: Any, queue_name: str) -> int:
    keys = getattr(broker, "_keys", None)
    key = keys.ready(queue_name) if keys is not None else broker._to_namespaced(queue_name)
    return int(client.llen(key))


def worker_argv(url: str, kind: str, workers: int) -> list[str]:
    """The command of a worker process (this file's ``worker`` mode)."""
    script = os.path.abspath(__file__)
    settings = ["--url", url, "--kind", kind, "--workers", str(workers)]
    return [sys.executable, script, "worker", *settings]


def used_memory(client: redis.Redis) -> int:
    """``used_memory`` less the clients' buffers (which come and go with connections)."""
    memory = client.info("memory")
    return int(memory["used_memory"]) - int(memory.get("mem_clients_normal", 0))


def left_in_redis(url: str, task: str, count: int) -> dict[str, Any]:
    """What ``count`` numbered jobs of ``task`` leave in Redis once they all ran.

    The namespace is flushed, the jobs queued, then run by a worker process (8
    threads) until no payload is left (every job ended and was recorded); the
    worker is stopped before ``used_memory`` is read again. ``bytes`` is the
    growth of ``used_memory`` (less the clients' buffers) over the whole run:
    kept results or failed records, and the little that jobs keeping nothing
    leave too (the worker's own keys, a call marker per batch until it
    expires), which a run of those shows alone. ``records`` is how many
    records there are, ``record_bytes`` the mean size of one (a sample of
    200), ``usage_bytes`` what ``MEMORY USAGE`` gives per record.
    """
    client = redis.Redis.from_url(url)
    broker = RedisBroker(redis.Redis.from_url(url))
    producer = engine(broker)
    keys = broker._keys
    broker.flush()
    time.sleep(1)  # Redis shrinks the tables a flush emptied in its next cron runs
    before = used_memory(client)
    batches(producer, task, count, numbered=True)
    with Worker(worker_argv(url, "threads", 8)):
        if not wait_until(lambda: not client.exists(keys.payloads), DEADLINE, poll=0.01):
            raise RuntimeError(f"{task}: jobs left after {DEADLINE} s")
    time.sleep(1.5)  # the server frees the stopped worker's connections, counts its clients'
    grown = used_memory(client) - before
    sizes = []
    records = int(client.hlen(keys.failed_jobs))
    if records:
        fields: list[bytes] = client.hrandfield(keys.failed_jobs, 200) or []  # type: ignore[assignment]
        sizes = [int(client.hstrlen(keys.failed_jobs, field)) for field in fields]
        usage = sum(
            int(client.memory_usage(key, samples=0) or 0)
            for key in (keys.failed_jobs, keys.failed_index)
        )
        usage_per_record = usage / records
    else:
        pattern = keys.result("") + "*"
        found = list(client.scan_iter(match=pattern, count=10_000))
        records = len(found)
        sizes = [int(client.strlen(key)) for key in found[:200]]
        usages = [int(client.memory_usage(key, samples=0) or 0) for key in found[:200]]
        usage_per_record = sum(usages) / len(usages) if usages else 0.0
    dropped = int(client.get(keys.failed_dropped) or 0)
    broker.flush()
    client.close()
    broker.redis.close()
    return {
        "jobs": count,
        "bytes": grown,
        "records": records,
        "dropped": dropped,
        "record_bytes": round(sum(sizes) / len(sizes), 1) if sizes else 0.0,
        # MEMORY USAGE: of a sample of result keys (their expiry not counted), or
        # of the failed store's hash and sorted set, per record.
        "usage_bytes": round(usage_per_record, 1),
    }


def memory_per_record(url: str, task: str, count: int, baseline: dict[str, Any]) -> dict[str, Any]:
    """Bytes of ``used_memory`` per job of ``task`` kept in Redis once ended, net of
    ``baseline`` (what a run of jobs keeping nothing left: ``left_in_redis("echo", ...)``)."""
    left = left_in_redis(url, task, count)
    left["bytes_per_job"] = round((left["bytes"] - baseline["bytes"]) / count, 1)
    return left


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

            def one() -> tuple[float, float]:
                called = time.time()
                e.schedule("stamp")
                returned = time.time()
                started = stamps.get(timeout=30)
                return started - called, started - returned

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
        numbered = task.startswith("echo")  # these take their number and return it
        return drain(
            count,
            lambda n: batches(producer, task, n, numbered),
            start(kind, workers, url),
            remaining,
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
    safely(
        results,
        "memory_per_future_job",
        lambda: memory_per_job(r, args.memory_jobs, lambda n: future_batches(producer, "noop", n)),
    )
    if KEEPS_RESULTS:
        # After every other Redis scenario, so that theirs run as they always did.
        safely(
            results,
            "drain_results_threads_8",
            lambda: run_drain("threads", 8, args.jobs, "echo_kept"),
        )
        baseline: dict[str, Any] = {}

        def memory_of(task: str, count: int) -> Any:
            if not baseline:
                baseline.update(left_in_redis(args.url, "echo", 1000))
            return memory_per_record(args.url, task, count, baseline)

        safely(results, "memory_per_result", lambda: memory_of("echo_kept", args.memory_jobs))
        # At most 10,000: the default bound of the failed store.
        failed_jobs = min(args.memory_jobs, 10_000)
        safely(results, "memory_per_failed_job", lambda: memory_of("fail", failed_jobs))
    fresh()
    memory_broker_scenarios(args, results)
    emit(results)
    os._exit(0)  # workers a deadline gave up on must not keep the process alive


if __name__ == "__main__":
    main()
