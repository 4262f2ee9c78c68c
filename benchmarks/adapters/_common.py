"""Helpers shared by the adapters; runs in every benchmark virtualenv (needs only redis-py).

An adapter measures one queue and prints one JSON object on stdout. Workers run
in a subprocess of their own; the adapter measures from the producer side by
polling Redis, with a deadline on every wait.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from typing import Any, Callable

import redis

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
DEADLINE = 120.0  # seconds any single drain or wait may take


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    parser.add_argument("mode", choices=["bench", "worker"])
    parser.add_argument("--url", required=True)
    parser.add_argument("--proxy-url", default="")
    parser.add_argument("--jobs", type=int, default=2000)
    parser.add_argument("--proxy-jobs", type=int, default=500)
    parser.add_argument("--memory-jobs", type=int, default=10000)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument("--concurrency", type=str, default="1,8")
    # worker mode
    parser.add_argument("--kind", default="threads")
    parser.add_argument("--workers", type=int, default=8)
    return parser.parse_args()


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and its descendants (Linux /proc)."""
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(entry)] = int(fields[1])
        cpu[int(entry)] = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
    total, todo = 0.0, [pid]
    while todo:
        current = todo.pop()
        total += cpu.get(current, 0.0)
        todo.extend(p for p, parent in parents.items() if parent == current)
    return total


def wait_until(condition: Callable[[], bool], timeout: float, poll: float = 0.005) -> bool:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def rate(count: int, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


def time_enqueue(count: int, enqueue: Callable[[int], None]) -> float:
    """Jobs per second of ``enqueue(count)``."""
    started = time.perf_counter()
    enqueue(count)
    return round(rate(count, time.perf_counter() - started), 1)


class Worker:
    """A worker subprocess: ``argv`` until stopped with SIGTERM (then SIGKILL)."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.process = subprocess.Popen(
            argv,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()

    def __enter__(self) -> Worker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def drain(
    count: int,
    enqueue: Callable[[int], None],
    start_worker: Callable[[], Worker],
    remaining: Callable[[], int],
) -> dict[str, Any]:
    """Throughput of a worker subprocess draining ``count`` jobs queued beforehand.

    The clock starts when ``remaining()`` first drops (the worker's first fetch:
    imports and start-up are not counted) and stops when it reaches 0. CPU time
    is the worker process tree's over the same span.
    """
    enqueue(count)
    with start_worker() as worker:
        if not wait_until(lambda: remaining() < count, 60, poll=0.001):
            raise RuntimeError("the worker fetched nothing within 60 s")
        cpu_before = tree_cpu(worker.process.pid)
        started = time.perf_counter()
        done = wait_until(lambda: remaining() == 0, DEADLINE)
        elapsed = time.perf_counter() - started
        cpu = tree_cpu(worker.process.pid) - cpu_before
        left = remaining()
    finished = count - left
    return {
        "jobs": count,
        "finished": finished,
        "seconds": round(elapsed, 3),
        "jobs_per_s": round(rate(finished, elapsed), 1),
        "cpu_ms_per_job": round(1000 * cpu / max(finished, 1), 4),
        "timed_out": not done,
    }


def latency(samples: int, run_one: Callable[[], tuple[float, float]]) -> dict[str, Any]:
    """``run_one()`` returns one enqueue-to-start latency in seconds, counted from
    the enqueue call and from its return (see :func:`stamp_latency`); 10 warm-ups.
    ``median_ms`` and ``p99_ms`` count from the return, ``call_*`` from the call."""
    from_call, from_return = [], []
    for i in range(samples + 10):
        call, returned = run_one()
        if i >= 10:
            from_call.append(call * 1000)
            from_return.append(returned * 1000)
        time.sleep(0.002)  # the worker goes idle again

    def p99(values: list[float]) -> float:
        return round(sorted(values)[min(len(values) - 1, int(0.99 * len(values)))], 3)

    return {
        "samples": len(from_return),
        "median_ms": round(statistics.median(from_return), 3),
        "p99_ms": p99(from_return),
        "max_ms": round(max(from_return), 3),
        "call_median_ms": round(statistics.median(from_call), 3),
        "call_p99_ms": p99(from_call),
    }


def stamp_latency(
    client: redis.Redis, key: str, enqueue: Callable[[], None]
) -> tuple[float, float]:
    """Enqueue a job that RPUSHes ``time.time()`` to ``key`` as it starts; wait for
    it. Returns the seconds from the enqueue call to the job's first line, and
    from the call's return (which a job may beat: a worker blocked on the list
    gets it while the reply travels back)."""
    client.delete(key)
    called = time.time()
    enqueue()
    returned = time.time()
    popped = client.blpop([key], timeout=30)
    if popped is None:
        raise RuntimeError("a latency job did not start within 30 s")
    started = float(popped[1])
    return started - called, started - returned


def memory_per_job(client: redis.Redis, count: int, enqueue: Callable[[int], None]) -> float:
    """Bytes of ``used_memory`` per queued job (jobs left in Redis afterwards: flush)."""
    before = int(client.info("memory")["used_memory"])
    enqueue(count)
    after = int(client.info("memory")["used_memory"])
    return round((after - before) / count, 1)


def incr_job(client: redis.Redis) -> None:
    client.incr("bench:incr")


def emit(result: dict[str, Any]) -> None:
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    sys.stdout.flush()


def concurrencies(args: argparse.Namespace) -> list[int]:
    return [int(c) for c in args.concurrency.split(",") if c]


def safely(results: dict[str, Any], name: str, call: Callable[[], Any]) -> None:
    """Run one scenario; record its error instead of losing the others."""
    try:
        results[name] = call()
    except Exception as exc:  # a scenario failing must not hide the other figures
        results[name] = {"error": f"{type(exc).__name__}: {exc}"}
    print(f"  {name}: {results[name]}", file=sys.stderr, flush=True)
