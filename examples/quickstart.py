"""Spinach quickstart: schedule a few jobs and run them, no Redis needed.

Run it with ``python examples/quickstart.py``. With ``SPINACH_REDIS_URL`` set
(``redis://localhost:6379/0``, say) it runs the same jobs through that Redis.
"""

from __future__ import annotations

import logging
import os
import threading
from datetime import datetime, timedelta, timezone

from spinach import Batch, Engine, MemoryBroker, RedisBroker, Tasks
from spinach.brokers.base import Broker

tasks = Tasks()
results: dict[str, object] = {}
lock = threading.Lock()


@tasks.task(name="add")
def add(a: int, b: int) -> None:
    with lock:
        results[f"add({a}, {b})"] = a + b


@tasks.task(name="greet", max_retries=2)
def greet(name: str) -> None:
    with lock:
        results[f"greet({name!r})"] = f"Hello, {name}!"


def make_broker() -> Broker:
    """A RedisBroker when SPINACH_REDIS_URL is set, else a MemoryBroker."""
    url = os.environ.get("SPINACH_REDIS_URL")
    return RedisBroker.from_url(url) if url else MemoryBroker()


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(threadName)s %(message)s")
    spin = Engine(make_broker(), namespace="quickstart")
    spin.attach_tasks(tasks)

    tasks.schedule(add, 2, 3)
    spin.schedule("greet", "world")
    batch = Batch()
    for i in range(3):
        batch.schedule("add", i, i)
    spin.schedule_batch(batch)
    # A job for a given time; one in the past runs at once.
    spin.schedule_at(greet, datetime.now(timezone.utc) - timedelta(seconds=1), "past")

    # Runs every job, then returns once the queue is empty and nothing runs.
    spin.start_workers(number=4, stop_when_queue_empty=True)

    for call, result in sorted(results.items()):
        print(f"{call} = {result!r}")


if __name__ == "__main__":
    main()
