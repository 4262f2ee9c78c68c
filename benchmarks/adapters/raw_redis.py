"""Raw redis-py: the floors every queue is measured against.

``enqueue_one`` is one RPUSH round trip per job (a 150-byte value),
``enqueue_one_evalsha`` one EVALSHA round trip per job (a script doing that
RPUSH: the floor of an atomic enqueue written as a script), ``enqueue_batch``
one RPUSH of 100 values per call, ``memory_per_job`` the bytes of a 150-byte
list entry, and ``latency`` the time from an RPUSH returning to a ``BLPOP``
in a worker process getting it (the worker stamps the time).
``drain_batched_loop`` is the bare loop a queue's worker cannot beat in
Python: one thread takes 100 JSON jobs per LPOP, decodes each and calls a
no-op function, and acknowledges the 100 with one INCRBY.
"""

from __future__ import annotations

import json
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
#: The script of enqueue_one_evalsha: what an atomic enqueue costs at the least.
PUSH_SCRIPT = "return redis.call('RPUSH', KEYS[1], ARGV[1])"


def noop() -> None:
    pass


def drain_batched_loop(r: redis.Redis, count: int) -> dict[str, Any]:
    """Jobs per second of the bare batched loop (see the module's docstring)."""
    job = json.dumps({"task": "noop", "args": [], "kwargs": {}, "id": "0" * 36}).encode()
    for start in range(0, count, 1000):
        r.rpush("bench:bare", *[job] * min(1000, count - start))
    functions = {"noop": noop}
    started, cpu = time.perf_counter(), time.process_time()
    done = 0
    while batch := r.lpop("bench:bare", BULK):
        for raw in batch:
            decoded = json.loads(raw)
            functions[decoded["task"]](*decoded["args"], **decoded["kwargs"])
        r.incrby("bench:bare-done", len(batch))
        done += len(batch)
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    return {
        "jobs": count,
        "finished": done,
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(done / elapsed, 1),
        "cpu_ms_per_job": round(1000 * cpu / max(done, 1), 4),
    }


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
    push = r.register_script(PUSH_SCRIPT)

    def scripted(count: int) -> None:
        for _ in range(count):
            push(keys=["bench:raw"], args=[VALUE])

    safely(results, "enqueue_one_evalsha", lambda: time_enqueue(args.jobs, scripted))
    r.flushdb()
    safely(results, "enqueue_batch", lambda: time_enqueue(args.jobs, bulk))
    r.flushdb()
    safely(results, "drain_batched_loop", lambda: drain_batched_loop(r, args.jobs))
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
