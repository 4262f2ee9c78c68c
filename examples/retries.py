"""Retries: a flaky task retried, a retry at a chosen time, and a job aborted.

Run it with ``python examples/retries.py`` (MemoryBroker), or with
``SPINACH_REDIS_URL=redis://localhost:6379/0`` to go through Redis.
"""

from __future__ import annotations

import logging
import os
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone

from spinach import (
    AbortException,
    Engine,
    MemoryBroker,
    RedisBroker,
    RetryException,
    Tasks,
    signals,
)
from spinach.brokers.base import Broker
from spinach.job import Job, JobStatus

NAMESPACE = "example-retries"
tasks = Tasks()
runs: Counter[str] = Counter()
lock = threading.Lock()
settled = threading.Semaphore(0)  # released once per job that ended for good


def say(line: str) -> None:
    with lock:
        print(line, flush=True)


@tasks.task(name="fetch_rate", max_retries=3)
def fetch_rate(currency: str) -> None:
    """Fails on its first two runs, like a service that is busy for a moment."""
    with lock:
        runs[currency] += 1
        run = runs[currency]
    if run < 3:
        # Retry in 200 ms rather than after the default backoff (3 s or more).
        soon = datetime.now(timezone.utc) + timedelta(milliseconds=200)
        raise RetryException(f"rate service busy (run {run})", at=soon)
    say(f"fetch_rate({currency!r}) succeeded on run {run}")


@tasks.task(name="charge", max_retries=5)
def charge(card: str) -> None:
    """Gives up at once: another run would not help."""
    raise AbortException(f"card {card} declined")


@tasks.task(name="parse")  # max_retries=0: at-most-once, never retried
def parse(text: str) -> None:
    int(text)


@signals.job_schedule_retry.connect_via(NAMESPACE)
def on_retry(namespace: str, job: Job, err: BaseException) -> None:
    say(f"{job.task_name}: retry {job.retries}/{job.max_retries} scheduled after: {err}")


@signals.job_failed.connect_via(NAMESPACE)
def on_failed(namespace: str, job: Job, err: BaseException) -> None:
    say(f"{job.task_name}: failed for good after {job.retries + 1} run(s): {err!r}")


@signals.job_finished.connect_via(NAMESPACE)
def on_finished(namespace: str, job: Job) -> None:
    if job.status in (JobStatus.SUCCEEDED, JobStatus.FAILED):
        settled.release()


def make_broker() -> Broker:
    """A RedisBroker when SPINACH_REDIS_URL is set, else a MemoryBroker."""
    url = os.environ.get("SPINACH_REDIS_URL")
    return RedisBroker.from_url(url) if url else MemoryBroker()


def main() -> None:
    # The workers log each retry and failure at WARNING or ERROR, with its
    # traceback; the receivers above print a shorter account instead.
    logging.getLogger("spinach.worker").setLevel(logging.CRITICAL)
    spin = Engine(make_broker(), namespace=NAMESPACE)
    spin.attach_tasks(tasks)
    jobs = [
        spin.schedule(fetch_rate, "EUR"),
        spin.schedule(charge, "4242"),
        spin.schedule(parse, "x"),
    ]

    # Not stop_when_queue_empty: a job waiting for its retry is not in the
    # queue, and the workers would stop without running it.
    spin.start_workers(number=3, block=False)
    try:
        for _ in jobs:
            if not settled.acquire(timeout=30):
                raise SystemExit("the jobs did not end within 30 s")
    finally:
        spin.stop_workers()
    say(f"{len(jobs)} jobs ended; fetch_rate ran {runs['EUR']} times")


if __name__ == "__main__":
    main()
