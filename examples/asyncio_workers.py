"""Asyncio workers: ``async def`` tasks awaited concurrently on one event loop.

Run it with ``python examples/asyncio_workers.py`` (MemoryBroker), or with
``SPINACH_REDIS_URL=redis://localhost:6379/0`` to go through Redis.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time

from spinach import AsyncioWorkers, Engine, MemoryBroker, RedisBroker, Tasks, ThreadWorkers
from spinach.brokers.base import Broker
from spinach.exc import InvalidTaskTypeError

tasks = Tasks()
fetched: list[str] = []
loop_threads: set[str] = set()


# async def tasks go to a queue of their own, consumed by AsyncioWorkers.
@tasks.task(name="fetch", queue="io")
async def fetch(url: str) -> None:
    await asyncio.sleep(0.2)  # stands for a network call
    fetched.append(url)  # no lock needed: every job runs on the same event loop
    loop_threads.add(threading.current_thread().name)


def make_broker() -> Broker:
    """A RedisBroker when SPINACH_REDIS_URL is set, else a MemoryBroker."""
    url = os.environ.get("SPINACH_REDIS_URL")
    return RedisBroker.from_url(url) if url else MemoryBroker()


def main() -> None:
    spin = Engine(make_broker(), namespace="example-asyncio")
    spin.attach_tasks(tasks)
    for i in range(10):
        spin.schedule(fetch, f"https://example.com/{i}")

    # Thread workers cannot run async def tasks: refused before anything starts.
    try:
        spin.start_workers(queue="io", workers_class=ThreadWorkers)
    except InvalidTaskTypeError as e:
        print(f"refused: {e}")

    start = time.monotonic()
    spin.start_workers(
        number=10, queue="io", workers_class=AsyncioWorkers, stop_when_queue_empty=True
    )
    took = time.monotonic() - start
    print(f"fetched {len(fetched)} URLs of 0.2 s each in {took:.1f} s")
    print(f"event loop thread: {', '.join(sorted(loop_threads))}")


if __name__ == "__main__":
    main()
