"""Drain cost of the OpenTelemetry hooks of spinach.contrib.opentelemetry, no SDK configured.

Schedules and drains JOBS no-op jobs on a MemoryBroker with one worker
thread, ROUNDS times with and without a ``SpinachInstrumentor`` connected
(the API's global, no-op tracer provider: what an application gets with the
hooks installed but no SDK), and prints the process CPU time per job of the
drain and of the scheduling (medians). The target: within 5% of without.

    python benchmarks/tracing_cost.py [--jobs 30000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

from spinach import Engine, MemoryBroker
from spinach.contrib.opentelemetry import SpinachInstrumentor


def run(jobs: int, hooked: bool) -> tuple[float, float]:
    """Microseconds of this process's CPU per job: to schedule, to drain."""
    engine = Engine(MemoryBroker(), "tracing-cost")
    engine.task(lambda i: None, name="noop")
    instrumentor = SpinachInstrumentor() if hooked else None
    started = time.process_time()
    for i in range(jobs):
        engine.schedule("noop", i)
    scheduled = time.process_time()
    engine.start_workers(number=1, stop_when_queue_empty=True)
    drained = time.process_time()
    if instrumentor is not None:
        instrumentor.close()
    return (scheduled - started) / jobs * 1e6, (drained - scheduled) / jobs * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=30_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    without: list[tuple[float, float]] = []
    hooked: list[tuple[float, float]] = []
    for _ in range(args.rounds):
        without.append(run(args.jobs, False))
        hooked.append(run(args.jobs, True))
    print(f"{args.jobs:,} no-op jobs, 1 worker thread, MemoryBroker, medians of {args.rounds}")
    for i, what in enumerate(("schedule", "drain")):
        one = statistics.median(r[i] for r in without)
        two = statistics.median(r[i] for r in hooked)
        print(f"  {what}: {one:.1f} us of CPU per job without, {two:.1f} with the hooks", end="")
        print(f": {two / one:.3f}")


if __name__ == "__main__":
    main()
