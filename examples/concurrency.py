"""A concurrency limit: at most two jobs of a task run at once, whatever the workers.

Run it with ``python examples/concurrency.py`` (MemoryBroker), or with
``SPINACH_REDIS_URL=redis://localhost:6379/0`` to go through Redis.
"""

from __future__ import annotations

import os
import threading
import time

from spinach import Engine, MemoryBroker, RedisBroker, Tasks
from spinach.brokers.base import Broker

tasks = Tasks()
lock = threading.Lock()
running = 0
most_running = 0
renders_done = 0
pings_before_last_render = 0


# max_concurrency needs max_retries > 0: the job of a dead worker holds its
# slot until it is retried.
@tasks.task(name="render", max_retries=1, max_concurrency=2)
def render(doc_id: int) -> None:
    global running, most_running, renders_done
    with lock:
        running += 1
        most_running = max(most_running, running)
    time.sleep(0.1)  # the work
    with lock:
        running -= 1
        renders_done += 1


@tasks.task(name="ping")
def ping() -> None:
    global pings_before_last_render
    with lock:
        if renders_done < 6:
            pings_before_last_render += 1


def make_broker() -> Broker:
    """A RedisBroker when SPINACH_REDIS_URL is set, else a MemoryBroker."""
    url = os.environ.get("SPINACH_REDIS_URL")
    return RedisBroker.from_url(url) if url else MemoryBroker()


def main() -> None:
    spin = Engine(make_broker(), namespace="example-concurrency")
    spin.attach_tasks(tasks)
    for doc_id in range(6):
        spin.schedule(render, doc_id)
    for _ in range(3):
        spin.schedule(ping)  # queued behind the render jobs

    # Six workers, but render gets at most two of them; jobs waiting for a
    # slot stay queued, and do not hold back the ping jobs.
    spin.start_workers(number=6, stop_when_queue_empty=True)
    print(f"render: {renders_done} jobs, at most {most_running} running at once")
    print(f"ping: {pings_before_last_render} of 3 jobs ran before the last render job ended")


if __name__ == "__main__":
    main()
