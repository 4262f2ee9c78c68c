"""Drain throughput of ``spinach worker --processes N``: one process against two.

Stores JOBS no-op jobs, runs ``spinach worker app:spin --processes N
--threads T --stop-when-empty`` (as a user runs it), and times the drain in
its steady state: from when 10% of the jobs were taken to when 90% were, by
the length of the queue, so that neither the start-up of the processes (each
imports the application) nor the tail counts. Prints jobs/s for each process
count, per round and as medians, and the ratio of two processes to one.

    python benchmarks/worker_processes.py [--jobs 100000] [--rounds 3] [--threads 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone

import redis
from _server import redis_url

from spinach.brokers.redis import RedisBroker
from spinach.brokers.redis.keys import Keys
from spinach.job import Job

APP = """
import os

from spinach import Engine, RedisBroker

spin = Engine(RedisBroker.from_url(os.environ["BENCH_REDIS_URL"]), "bench-processes")
spin.task(lambda i: None, name="noop", max_retries=1)
"""


def redis_cpu(client: redis.Redis) -> float:
    """CPU seconds the Redis server used so far."""
    info = client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


def drain(
    url: str, directory: str, processes: int, jobs: int, threads: int
) -> tuple[float, float, float]:
    """Jobs per second of one drain of ``jobs`` jobs by ``processes`` worker
    processes, Redis CPU microseconds per job and script calls per job, in the
    steady state."""
    client = redis.Redis.from_url(url)
    broker = RedisBroker(client)
    broker.namespace = "bench-processes"
    broker.flush()
    now = datetime.now(timezone.utc)
    for start in range(0, jobs, 1000):
        part = range(start, min(jobs, start + 1000))
        broker.enqueue_jobs([Job("noop", "spinach", now, 1, (i,)) for i in part])
    ready = Keys.of("bench-processes").ready("spinach")
    command = [sys.executable, "-m", "spinach", "worker", "app:spin", "--processes"]
    command += [str(processes), "--threads", str(threads), "--stop-when-empty"]
    command += ["--log-level", "warning"]
    env = dict(os.environ, BENCH_REDIS_URL=url)
    process = subprocess.Popen(command, cwd=directory, env=env)
    first_mark, last_mark = jobs * 9 // 10, jobs // 10
    started = ended = None
    while ended is None and process.poll() is None:
        left = client.llen(ready)
        if started is None and left <= first_mark:
            started = time.perf_counter(), left, redis_cpu(client), evalsha_calls(client)
        if started is not None and left <= last_mark:
            ended = time.perf_counter(), left, redis_cpu(client), evalsha_calls(client)
        time.sleep(0.002)
    if process.wait(timeout=600) != 0:
        raise RuntimeError(f"spinach worker exited with {process.returncode}")
    if started is None or ended is None:
        raise RuntimeError("the drain was too quick to sample: give more --jobs")
    assert broker.count_jobs().queued == {}, "jobs were left"
    broker.flush()
    broker.close()
    taken = started[1] - ended[1]
    cpu_per_job = (ended[2] - started[2]) / taken * 1e6
    return taken / (ended[0] - started[0]), cpu_per_job, (ended[3] - started[3]) / taken


def evalsha_calls(client: redis.Redis) -> int:
    stats = client.info("commandstats").get("cmdstat_evalsha")
    return int(stats["calls"]) if stats else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args()
    results: dict[int, list[float]] = {1: [], 2: []}
    cpu: dict[int, list[float]] = {1: [], 2: []}
    calls: dict[int, list[float]] = {1: [], 2: []}
    with redis_url() as url, tempfile.TemporaryDirectory() as directory:
        with open(os.path.join(directory, "app.py"), "w") as app:
            app.write(APP)
        for round_ in range(args.rounds):
            order = [1, 2] if round_ % 2 == 0 else [2, 1]
            for processes in order:
                rate, cpu_us, per_job = drain(url, directory, processes, args.jobs, args.threads)
                results[processes].append(rate)
                cpu[processes].append(cpu_us)
                calls[processes].append(per_job)
                print(
                    f"round {round_ + 1}, {processes} process(es): {rate:,.0f} jobs/s, "
                    f"Redis CPU {cpu_us:.1f} us/job, {per_job:.3f} script calls/job"
                )
    one, two = (statistics.median(results[n]) for n in (1, 2))
    print(f"{args.jobs:,} no-op jobs, {args.threads} threads per process, {os.cpu_count()} cores")
    print(f"  1 process:   {one:,.0f} jobs/s (median of {args.rounds})")
    print(f"  2 processes: {two:,.0f} jobs/s (median of {args.rounds})")
    print(f"  ratio: {two / one:.2f} (target: at least 1.6)")
    for n in (1, 2):
        print(
            f"  Redis with {n}: {statistics.median(cpu[n]):.1f} us of CPU per job, "
            f"{statistics.median(calls[n]):.3f} script calls per job (medians)"
        )


if __name__ == "__main__":
    main()
