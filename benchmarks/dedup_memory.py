"""Redis memory held only for de-duplicating at-most-once scheduling calls.

Schedules N jobs one call each (``spin.schedule``), once for an at-most-once
task (``max_retries=0``, each call leaves a marker) and once for an
at-least-once one (no marker), on a fresh namespace each. The difference of
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
        started = time.monotonic()
        once_ns, once = _schedule(url, options.calls, max_retries=0)
        took = time.monotonic() - started
        _, least = _schedule(url, options.calls, max_retries=1)
        markers = _markers(client, once_ns)
        ttl = max(0, int(client.ttl(next(client.scan_iter(f"spinach:{{{once_ns}}}:enqueued:*")))))
        print(f"{options.calls:,} schedule() calls in {took:.1f} s")
        print(f"at-most-once:  +{once / 1e6:.1f} MB, {markers:,} markers alive (TTL left {ttl} s)")
        print(f"at-least-once: +{least / 1e6:.1f} MB")
        marker_bytes = once - least
        print(
            f"markers: {marker_bytes / 1e6:.1f} MB, "
            f"{marker_bytes / max(1, markers):.0f} B per marker"
        )
        if options.wait:
            deadline = time.monotonic() + ttl + 30
            while _markers(client, once_ns) and time.monotonic() < deadline:
                time.sleep(1)  # a benchmark waiting for Redis to expire keys, not a test
            left = _markers(client, once_ns)
            after = int(client.info("memory")["used_memory"])
            print(f"after {ttl} s more: {left:,} markers alive, used_memory {after / 1e6:.1f} MB")


if __name__ == "__main__":
    main()
