"""Redis memory held only for de-duplicating at-most-once scheduling calls.

Schedules N jobs one call each (``spin.schedule``), once for an at-least-once
task (no marker), then for an at-most-once one (``max_retries=0``, each call
leaves a marker), on a fresh namespace each. The difference of
``used_memory`` is what the markers cost. With ``--wait`` it then waits until
the markers of the first run have expired (the marker's own TTL plus a margin,
read from Redis) and measures again: memory that goes away by itself.

Usage::

    .venv/bin/python benchmarks/dedup_memory.py [--calls 100000] [--wait]
"""

from __future__ import annotations

import argparse
import time
import uuid

import redis
from _server import redis_url

from spinach import Engine, RedisBroker, Tasks


def _markers(client: redis.Redis, namespace: str) -> int:
    return sum(1 for _ in client.scan_iter(f"spinach:{{{namespace}}}:enqueued:*", count=10_000))


def _schedule(url: str, calls: int, max_retries: int) -> tuple[str, int]:
    """Schedule ``calls`` jobs one by one; the namespace and the memory growth."""
    client = redis.Redis.from_url(url)
    namespace = f"dedup-{uuid.uuid4().hex[:8]}"
    tasks = Tasks()
    tasks.add(lambda: None, "noop", max_retries=max_retries)
    engine = Engine(RedisBroker.from_url(url), namespace=namespace)
    engine.attach_tasks(tasks)
    before = int(client.info("memory")["used_memory"])
    for _ in range(calls):
        engine.schedule("noop")
    grown = int(client.info("memory")["used_memory"]) - before
    return namespace, grown


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=100_000)
    parser.add_argument("--wait", action="store_true", help="wait for the markers to expire")
    options = parser.parse_args()
    with redis_url() as url:
        client = redis.Redis.from_url(url)
        # The baseline first: markers expiring during it would make it look smaller.
        _, least = _schedule(url, options.calls, max_retries=1)
        started = time.monotonic()
        once_ns, once = _schedule(url, options.calls, max_retries=0)
        took = time.monotonic() - started
        # Right away, before any marker of this run expired.
        pattern = f"spinach:{{{once_ns}}}:enqueued:*"
        markers = _markers(client, once_ns)
        kept = max(int(client.ttl(key)) for key in client.scan_iter(pattern, count=10_000))
        marker_bytes = once - least
        per_marker = marker_bytes / max(1, markers)
        rate = options.calls / took
        print(f"{options.calls:,} schedule() calls in {took:.1f} s ({rate:,.0f} calls/s)")
        print(f"at-most-once:  +{once / 1e6:.1f} MB, {markers:,} markers alive")
        print(f"at-least-once: +{least / 1e6:.1f} MB")
        print(f"markers: {marker_bytes / 1e6:.1f} MB, {per_marker:.0f} B each, kept {kept} s")
        for calls_per_second in (rate, 3000):
            alive = calls_per_second * kept
            print(
                f"steady state at {calls_per_second:,.0f} calls/s: {alive:,.0f} markers alive, "
                f"{alive * per_marker / 1e6:.1f} MB"
            )
        if options.wait:
            deadline = time.monotonic() + kept + 30
            while _markers(client, once_ns) and time.monotonic() < deadline:
                time.sleep(1)  # a benchmark waiting for Redis to expire keys, not a test
            left = _markers(client, once_ns)
            after = int(client.info("memory")["used_memory"])
            print(
                f"{kept} s later: {left:,} markers of the first run alive, "
                f"used_memory {after / 1e6:.1f} MB"
            )


if __name__ == "__main__":
    main()
