"""Fetch cost with 100,000 jobs held back by a concurrency limit or a rate limit.

Prints the Redis time (from INFO commandstats) and the round-trip time of a
fetch that hands out one job of another task, and the Redis time per call
while the blocked jobs were being parked.

    python benchmarks/blocked_fetch.py [--limit concurrency|rate|both] [--blocked N]
"""

from __future__ import annotations

import argparse
import statistics
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import redis
from _server import percentile, redis_url

from spinach.brokers.redis import RedisBroker
from spinach.job import Job
from spinach.task import Task

BLOCKED = 100_000
SAMPLES = 300


def evalsha_usec(client: redis.Redis) -> tuple[int, int]:
    stats = client.info("commandstats").get("cmdstat_evalsha", {"calls": 0, "usec": 0})
    return int(stats["calls"]), int(stats["usec"])


def measure(
    url: str,
    blocked: int = BLOCKED,
    samples: int = SAMPLES,
    quiet: bool = False,
    limit: str = "concurrency",
) -> dict[str, Any]:
    """Park ``blocked`` jobs behind a limit (``"concurrency"``: one at a time;
    ``"rate"``: one start an hour), then time ``samples`` fetches of another task
    (itself under a concurrency limit, or a rate limit, it does not reach)."""
    out = print if not quiet else (lambda *a, **k: None)
    client = redis.Redis.from_url(url)
    broker = RedisBroker(client)
    broker.namespace = "bench-blocked"
    broker.flush()
    if limit == "rate":
        hour = timedelta(hours=1)
        tasks = [
            Task(print, "blocked", "q", 1, None, rate_limit=(1, hour)),
            Task(print, "other", "q", 1, None, rate_limit=(10 * samples, hour)),
        ]
        broker.set_rate_limits(tasks)
    else:
        tasks = [
            Task(print, "blocked", "q", 1, None, max_concurrency=1),
            Task(print, "other", "q", 1, None, max_concurrency=1000),
        ]
        broker.set_concurrency_limits(tasks)
    out(f"{blocked} jobs held back by a {limit} limit")
    now = datetime.now(timezone.utc)
    for start in range(0, blocked, 1000):
        broker.enqueue_jobs([Job("blocked", "q", now, 1, (i,)) for i in range(start, start + 1000)])
    assert len(broker.get_jobs_from_queue("q", 1)) == 1  # the limit is now reached

    # The next fetch parks the blocked jobs, a bounded number per script call.
    client.config_resetstat()
    assert broker.get_jobs_from_queue("q", 1) == []
    calls, usec = evalsha_usec(client)
    out(
        f"parking {blocked} blocked jobs: {calls} script calls, "
        f"{usec / 1000 / calls:.2f} ms of Redis time per call on average"
    )

    server_times, round_trips = [], []
    for i in range(samples):
        broker.enqueue_jobs([Job("other", "q", now, 1, (i,))])
        calls_before, usec_before = evalsha_usec(client)
        started = time.perf_counter()
        (job,) = broker.get_jobs_from_queue("q", 1)
        round_trips.append((time.perf_counter() - started) * 1000)
        calls_after, usec_after = evalsha_usec(client)
        assert calls_after - calls_before == 1
        server_times.append((usec_after - usec_before) / 1000)
        broker.remove_job_from_running(job)
    out(f"fetch of one job past {blocked} blocked jobs, {samples} samples:")
    out(
        f"  Redis time: median {statistics.median(server_times):.3f} ms, "
        f"p99 {percentile(server_times, 0.99):.3f} ms, max {max(server_times):.3f} ms"
    )
    out(
        f"  round trip: median {statistics.median(round_trips):.3f} ms, "
        f"p99 {percentile(round_trips, 0.99):.3f} ms"
    )
    counts = broker.count_jobs()
    out(f"  still queued: {counts.queued}, running: {counts.running}")
    broker.flush()
    broker.close()
    return {
        "blocked": blocked,
        "limit": limit,
        "samples": samples,
        "parking_calls": calls,
        "fetch_median_ms": round(statistics.median(server_times), 4),
        "fetch_p99_ms": round(percentile(server_times, 0.99), 4),
        "round_trip_median_ms": round(statistics.median(round_trips), 4),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", choices=["concurrency", "rate", "both"], default="both")
    parser.add_argument("--blocked", type=int, default=BLOCKED)
    args = parser.parse_args()
    limits = ["concurrency", "rate"] if args.limit == "both" else [args.limit]
    with redis_url() as url:
        for limit in limits:
            measure(url, args.blocked, limit=limit)


if __name__ == "__main__":
    main()
