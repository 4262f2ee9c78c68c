"""Redis time of a fetch that uses no option: no limit, no unique task, nothing cancelled.

Stores JOBS jobs, fetches them BATCH at a time with ``get_jobs_from_queue``,
and prints the Redis time per call of the fetch script (INFO commandstats).
With ``--base DIR`` it does the same with the Spinach of the checkout DIR,
in turns, and prints the ratio: the job-control options must not make a
fetch that uses none of them dearer.

    python benchmarks/fetch_cost.py [--base DIR] [--rounds 5] [--jobs 64000] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import statistics

from _server import measure_with, redis_url

HERE = os.path.dirname(os.path.abspath(__file__))


def measure(url: str, jobs: int, batch: int) -> float:
    """Microseconds of Redis time per fetch call, with the spinach on sys.path."""
    from datetime import datetime, timezone

    import redis

    from spinach.brokers.redis import RedisBroker
    from spinach.job import Job

    client = redis.Redis.from_url(url)
    broker = RedisBroker(client)
    broker.namespace = "bench-fetch"
    broker.flush()
    now = datetime.now(timezone.utc)
    for start in range(0, jobs, 1000):
        broker.enqueue_jobs([Job("task", "q", now, 1, (i,)) for i in range(start, start + 1000)])
    client.config_resetstat()
    calls = 0
    while broker.get_jobs_from_queue("q", batch):
        calls += 1
    stats = client.info("commandstats")["cmdstat_evalsha"]
    broker.flush()
    broker.close()
    return int(stats["usec"]) / int(stats["calls"])


def run(package: str, url: str, jobs: int, batch: int) -> float:
    return float(measure_with(package, "fetch_cost", url, jobs, batch))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", help="also measure the Spinach of this checkout")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--jobs", type=int, default=64_000)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    variants = {"this checkout": os.path.dirname(HERE)}
    if args.base:
        variants["base"] = os.path.abspath(args.base)
    results: dict[str, list[float]] = {name: [] for name in variants}
    with redis_url() as url:
        for round_ in range(args.rounds):
            names = list(variants) if round_ % 2 == 0 else list(reversed(variants))
            for name in names:
                results[name].append(run(variants[name], url, args.jobs, args.batch))
    print(f"fetch of {args.batch} jobs, {args.jobs} jobs, {args.rounds} rounds:")
    for name, values in results.items():
        print(
            f"  {name}: median {statistics.median(values):.1f} us of Redis time per call "
            f"({min(values):.1f} to {max(values):.1f})"
        )
    if args.base:
        ratio = statistics.median(results["this checkout"]) / statistics.median(results["base"])
        print(f"  this checkout / base: {ratio:.3f}")


if __name__ == "__main__":
    main()
