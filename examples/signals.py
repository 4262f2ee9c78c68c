"""Signals: receivers for every engine, and for the engine of one namespace.

Run it with ``python examples/signals.py`` (MemoryBroker), or with
``SPINACH_REDIS_URL=redis://localhost:6379/0`` to go through Redis.
"""

from __future__ import annotations

import logging
import os
import threading

from spinach import Engine, MemoryBroker, RedisBroker, signals
from spinach.brokers.base import Broker
from spinach.job import Job

lock = threading.Lock()


def divide(a: int, b: int) -> float:
    return a / b  # ZeroDivisionError when b is 0


def say(line: str) -> None:
    with lock:
        print(line, flush=True)


# connect: the signals of every engine, whatever its namespace.
@signals.job_finished.connect
def on_any_finished(namespace: str, job: Job) -> None:
    say(f"[every engine] {namespace}: {job.task_name}{job.task_args} {job.status.name}")


# connect_via: only the signals of the engine of namespace "billing".
@signals.job_failed.connect_via("billing")
def on_billing_failed(namespace: str, job: Job, err: BaseException) -> None:
    say(f"[billing only] {job.task_name}{job.task_args} failed: {err!r}")


@signals.worker_started.connect_via("billing")
def on_billing_worker(namespace: str, worker_name: str) -> None:
    say(f"[billing only] worker {worker_name} started")


def make_broker() -> Broker:
    """A RedisBroker when SPINACH_REDIS_URL is set, else a MemoryBroker."""
    url = os.environ.get("SPINACH_REDIS_URL")
    return RedisBroker.from_url(url) if url else MemoryBroker()


def main() -> None:
    # The workers log the failures with their traceback; the receivers say enough here.
    logging.getLogger("spinach.worker").setLevel(logging.CRITICAL)
    # The receivers print from the worker threads; one worker keeps the order simple.
    for namespace in ("billing", "shipping"):
        spin = Engine(make_broker(), namespace=namespace)
        spin.task(divide, name="divide")
        spin.schedule(divide, 1, 0)
        spin.schedule(divide, 4, 2)
        spin.start_workers(number=1, stop_when_queue_empty=True)
    say("the shipping failure reached only the receiver connected to every engine")


if __name__ == "__main__":
    main()
