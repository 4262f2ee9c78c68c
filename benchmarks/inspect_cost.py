"""Redis time of ``inspect`` (what ``spinach inspect`` and the dashboard read).

Stores FUTURE future jobs, READY ready jobs in QUEUES queues and RUNNING
running jobs, then calls ``broker.inspect()`` ROUNDS times and prints the
Redis time per call of the script (INFO commandstats) and the median time a
caller waits for it.

    python benchmarks/inspect_cost.py [--future 100000] [--ready 10000] [--running 100]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone

import redis
from _server import redis_url

from spinach.brokers.redis import RedisBroker
from spinach.job import Job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--future", type=int, default=100_000)
    parser.add_argument("--ready", type=int, default=10_000)
    parser.add_argument("--queues", type=int, default=5)
    parser.add_argument("--running", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=20)
    options = parser.parse_args()

    with redis_url() as url:
        client = redis.Redis.from_url(url)
        broker = RedisBroker(client)
        broker.namespace = "bench-inspect"
        broker.flush()
        now = datetime.now(timezone.utc)
        later = now + timedelta(hours=1)
        for start in range(0, options.future, 1000):
            count = min(1000, options.future - start)
            broker.enqueue_jobs(
                [Job("task", f"q{i % options.queues}", later, 1, (i,)) for i in range(count)]
            )
        for start in range(0, options.ready + options.running, 1000):
            count = min(1000, options.ready + options.running - start)
            broker.enqueue_jobs(
                [Job("task", f"q{i % options.queues}", now, 1, (i,)) for i in range(count)]
            )
        broker.heartbeat()
        for q in range(options.queues):
            broker.get_jobs_from_queue(f"q{q}", options.running // options.queues)
        client.config_resetstat()
        waits = []
        for _ in range(options.rounds):
            started = time.perf_counter()
            inspection = broker.inspect()
            waits.append(time.perf_counter() - started)
        stats = client.info("commandstats")["cmdstat_evalsha"]
        print(
            f"future={options.future} ready={options.ready} running={options.running} "
            f"queues={len(inspection.queues)}"
        )
        print(f"Redis time per inspect: {int(stats['usec']) / int(stats['calls']) / 1000:.1f} ms")
        print(f"median wait per inspect: {statistics.median(waits) * 1000:.1f} ms")
        broker.flush()
        broker.close()


if __name__ == "__main__":
    main()
