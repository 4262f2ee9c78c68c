"""Worker CPU per job with and without the Prometheus metrics of spinach.contrib.prometheus.

Drains JOBS no-op jobs on a MemoryBroker with one worker thread, ROUNDS times
each way, and prints the process CPU time per job (medians).

    python benchmarks/metrics_cost.py [--jobs 30000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from prometheus_client import CollectorRegistry

from spinach import Batch, Engine, MemoryBroker
from spinach.contrib.prometheus import SpinachMetrics


def drain(jobs: int, with_metrics: bool) -> float:
    """Microseconds of this process's CPU per job of one drain."""
    engine = Engine(MemoryBroker(), "metrics-cost")
    engine.task(lambda i: None, name="noop")
    metrics = SpinachMetrics(CollectorRegistry()) if with_metrics else None
    batch = Batch()
    for i in range(jobs):
        batch.schedule("noop", i)
    engine.schedule_batch(batch)
    started = time.process_time()
    engine.start_workers(number=1, stop_when_queue_empty=True)
    cpu = time.process_time() - started
    if metrics is not None:
        metrics.close()
    return cpu / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    without, with_ = [], []
    for _ in range(args.rounds):
        without.append(drain(args.jobs, False))
        with_.append(drain(args.jobs, True))
    one, two = statistics.median(without), statistics.median(with_)
    print(f"{args.jobs:,} no-op jobs, 1 worker thread, MemoryBroker, medians of {args.rounds}")
    print(f"  without metrics: {one:.1f} us of CPU per job")
    print(f"  with metrics:    {two:.1f} us of CPU per job (+{two - one:.1f})")


if __name__ == "__main__":
    main()
