"""Drain cost of the OpenTelemetry hooks of spinach.contrib.opentelemetry, no SDK configured.

Schedules and drains JOBS no-op jobs with one worker thread, ROUNDS times
with and without a ``SpinachInstrumentor`` connected (the API's global, no-op
tracer provider: what an application gets with the hooks installed but no
SDK), and prints the process CPU time per job of the scheduling and of the
drain, and the drain's jobs per second (medians). On a MemoryBroker by
default; ``--redis`` on a throwaway redis-server, as the drain benchmark
runs. The target: within 5% of without.

    python benchmarks/tracing_cost.py [--jobs 30000] [--rounds 5] [--redis]
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator

from spinach import Batch, Engine, MemoryBroker, RedisBroker
from spinach.brokers import Broker
from spinach.contrib.opentelemetry import SpinachInstrumentor


@contextlib.contextmanager
def brokers(redis: bool) -> Iterator[Callable[[], Broker]]:
    """Makes a new, empty broker for each run."""
    if not redis:
        yield MemoryBroker
        return
    from _server import redis_url

    with redis_url() as url:
        made: list[RedisBroker] = []

        def make() -> Broker:
            broker = RedisBroker.from_url(url)
            made.append(broker)
            return broker

        yield make
        for broker in made:
            broker.close()


def run(make: Callable[[], Broker], jobs: int, hooked: bool) -> tuple[float, float, float]:
    """Microseconds of this process's CPU per job to schedule and to drain, and
    the drain's jobs per second."""
    engine = Engine(make(), "tracing-cost")
    engine.task(lambda i: None, name="noop")
    instrumentor = SpinachInstrumentor() if hooked else None
    started = time.process_time()
    for start in range(0, jobs, 1000):
        batch = Batch()
        for i in range(start, min(jobs, start + 1000)):
            batch.schedule("noop", i)
        engine.schedule_batch(batch)
    scheduled, wall = time.process_time(), time.perf_counter()
    engine.start_workers(number=1, stop_when_queue_empty=True)
    drained, rate = time.process_time(), jobs / (time.perf_counter() - wall)
    if instrumentor is not None:
        instrumentor.close()
    engine.broker.flush()
    return (scheduled - started) / jobs * 1e6, (drained - scheduled) / jobs * 1e6, rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--redis", action="store_true", help="a RedisBroker")
    args = parser.parse_args()
    without: list[tuple[float, float, float]] = []
    hooked: list[tuple[float, float, float]] = []
    with brokers(args.redis) as make:
        for _ in range(args.rounds):
            without.append(run(make, args.jobs, False))
            hooked.append(run(make, args.jobs, True))
    where = "RedisBroker" if args.redis else "MemoryBroker"
    print(f"{args.jobs:,} no-op jobs, 1 worker thread, {where}, medians of {args.rounds}")
    one, two = (statistics.median(r[2] for r in runs) for runs in (without, hooked))
    print(f"  drain: {one:,.0f} jobs/s without, {two:,.0f} with the hooks: {two / one:.3f}")
    for i, what in enumerate(("schedule", "drain")):
        one = statistics.median(r[i] for r in without)
        two = statistics.median(r[i] for r in hooked)
        print(f"  {what}: {one:.1f} us of CPU per job without, {two:.1f} with the hooks", end="")
        print(f": {two / one:.3f}")


if __name__ == "__main__":
    main()
