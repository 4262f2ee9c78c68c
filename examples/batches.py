"""Batches: many jobs stored in one broker call, all of them or none.

Run it with ``python examples/batches.py`` (MemoryBroker), or with
``SPINACH_REDIS_URL=redis://localhost:6379/0`` to go through Redis.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timedelta, timezone

from spinach import Batch, Engine, MemoryBroker, RedisBroker, Tasks
from spinach.brokers.base import Broker
from spinach.exc import InvalidJobArgumentError

tasks = Tasks()
sent: list[str] = []
lock = threading.Lock()


@tasks.task(name="send_newsletter", max_retries=3)
def send_newsletter(user_id: int, edition: str) -> None:
    with lock:
        sent.append(f"{edition} to user {user_id}")


def make_broker() -> Broker:
    """A RedisBroker when SPINACH_REDIS_URL is set, else a MemoryBroker."""
    url = os.environ.get("SPINACH_REDIS_URL")
    return RedisBroker.from_url(url) if url else MemoryBroker()


def main() -> None:
    broker = make_broker()
    spin = Engine(broker, namespace="example-batches")
    spin.attach_tasks(tasks)

    # A batch checks every job before storing any: one bad argument (a
    # datetime is not JSON) refuses the whole batch.
    bad = Batch()
    bad.schedule(send_newsletter, 1, "spring")
    bad.schedule(send_newsletter, 2, datetime.now(timezone.utc))
    try:
        spin.schedule_batch(bad)
    except InvalidJobArgumentError as e:
        print(f"refused: {e}")
    print(f"jobs stored after the refused batch: {broker.count_jobs().queued}")

    batch = Batch()
    for user_id in range(1, 6):
        batch.schedule(send_newsletter, user_id, "summer")
    a_minute_ago = datetime.now(timezone.utc) - timedelta(minutes=1)
    batch.schedule_at(send_newsletter, a_minute_ago, 6, "summer")  # a past time means now
    jobs = spin.schedule_batch(batch)
    print(f"stored {len(jobs)} jobs in one call: {broker.count_jobs().queued}")

    spin.start_workers(number=3, stop_when_queue_empty=True)
    for line in sorted(sent):
        print(f"sent {line}")


if __name__ == "__main__":
    main()
