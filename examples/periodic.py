"""A periodic task: the workers schedule it themselves, once per period.

Run it with ``python examples/periodic.py`` (MemoryBroker), or with
``SPINACH_REDIS_URL=redis://localhost:6379/0`` to go through Redis. It takes
about two seconds: the first run comes one period after the workers start.
"""

from __future__ import annotations

import os
import threading
import time
from datetime import timedelta

from spinach import Engine, MemoryBroker, RedisBroker, Tasks
from spinach.brokers.base import Broker

tasks = Tasks()
runs: list[float] = []
lock = threading.Lock()
ran_twice = threading.Event()
started = time.monotonic()


@tasks.task(name="tick", periodicity=timedelta(seconds=1))
def tick() -> None:
    """Periodic jobs carry no arguments."""
    with lock:
        runs.append(time.monotonic() - started)
        print(f"tick run {len(runs)}, {runs[-1]:.1f} s after the start", flush=True)
        if len(runs) == 2:
            ran_twice.set()


def make_broker() -> Broker:
    """A RedisBroker when SPINACH_REDIS_URL is set, else a MemoryBroker."""
    url = os.environ.get("SPINACH_REDIS_URL")
    return RedisBroker.from_url(url) if url else MemoryBroker()


def main() -> None:
    spin = Engine(make_broker(), namespace="example-periodic")
    spin.attach_tasks(tasks)
    # Nothing is scheduled by hand: starting the workers registers the task.
    spin.start_workers(number=1, block=False)
    try:
        if not ran_twice.wait(timeout=30):
            raise SystemExit("tick did not run twice within 30 s")
    finally:
        spin.stop_workers()
    print(f"tick ran {len(runs)} times; workers stopped")


if __name__ == "__main__":
    main()
