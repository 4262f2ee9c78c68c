"""Enqueue-to-start latency on an idle worker, on the RedisBroker.

One engine with idle thread workers; a producer schedules one job at a time
and waits for it to start. Prints the median and p99 of the time from the
``schedule`` call to the ``job_started`` signal.
"""

from __future__ import annotations

import statistics
import threading
import time

from _server import percentile, redis_url

from spinach import Engine, signals
from spinach.brokers.redis import RedisBroker
from spinach.job import Job

SAMPLES = 300


def main() -> None:
    with redis_url() as url:
        consumer = Engine(RedisBroker.from_url(url), "bench-latency")
        consumer.task(lambda: None, name="noop")
        producer = Engine(RedisBroker.from_url(url), "bench-latency")
        producer.task(lambda: None, name="noop")
        started = threading.Event()
        started_at: list[float] = []

        def on_started(sender: str, job: Job) -> None:
            started_at.append(time.perf_counter())
            started.set()

        signals.job_started.connect(on_started, sender="bench-latency")
        consumer.start_workers(number=4, block=False)
        latencies = []
        try:
            for _ in range(SAMPLES + 20):
                started.clear()
                before = time.perf_counter()
                producer.schedule("noop")
                if not started.wait(10):
                    raise RuntimeError("a job did not start within 10 s")
                latencies.append((started_at[-1] - before) * 1000)
                time.sleep(0.002)  # let the worker go idle again: this measures an idle worker
        finally:
            consumer.stop_workers()
        latencies = latencies[20:]  # warm-up
        print(f"enqueue-to-start latency on an idle worker, {len(latencies)} samples:")
        print(
            f"  median {statistics.median(latencies):.2f} ms, "
            f"p99 {percentile(latencies, 0.99):.2f} ms, max {max(latencies):.2f} ms"
        )


if __name__ == "__main__":
    main()
