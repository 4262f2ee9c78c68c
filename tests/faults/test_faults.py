"""Fault scenarios: every job a producer was told was accepted is accounted for.

Each scenario prints a line ``scenario=... accepted=N succeeded=S failed=F
stored=Q lost=0 duplicate_runs=D``. SPINACH_FAULTS_SCALE scales their size
(0.1 by default, for CI; 1 is the full size).
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable

import pytest

from spinach import Batch, Engine, Tasks
from spinach.brokers.redis import RedisBroker
from spinach.testing import wait_for
from spinach.testing.redis_server import RedisServer

from .accounting import Account, Fleet, Records, scale, stored_ids

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def _noop(*args: Any) -> None:
    """The producer never runs tasks."""


@pytest.fixture
def make_producer() -> Iterator[Callable[[str, str], Engine]]:
    brokers: list[RedisBroker] = []

    def make(url: str, namespace: str) -> Engine:
        broker = RedisBroker.from_url(url, socket_timeout=2)
        brokers.append(broker)
        tasks = Tasks()
        tasks.add(_noop, "least", max_retries=3)
        tasks.add(_noop, "most", max_retries=0)
        engine = Engine(broker, namespace)
        engine.attach_tasks(tasks)
        return engine

    yield make
    for broker in brokers:
        broker.close()


def report(account: Account, capsys: pytest.CaptureFixture[str]) -> None:
    with capsys.disabled():
        print(f"\n{account.summary()}")


def schedule_batches(engine: Engine, task: str, count: int) -> set[str]:
    accepted: set[str] = set()
    for start in range(0, count, 100):
        batch = Batch()
        for i in range(start, min(count, start + 100)):
            batch.schedule(task, i)
        accepted.update(str(job.id) for job in engine.schedule_batch(batch))
    return accepted


def settled(log_dir: Path, accepted: set[str]) -> bool:
    records = Records.read(log_dir)
    return accepted <= records.succeeded | set(records.failed)


@pytest.mark.parametrize("task", ["least", "most"])
def test_worker_sigkill(
    task: str,
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_producer: Callable[[str, str], Engine],
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Workers SIGKILLed under load lose no job; only jobs of killed workers run twice or fail."""
    server.start()
    fleet = Fleet(server.url, namespace, log_dir)
    for _ in range(3):
        fleet.start(threads=4)
    producer = make_producer(server.url, namespace)
    accepted = schedule_batches(producer, task, scale(3000))
    # The scenario's rhythm: a kill about every second at full size, faster when
    # reduced, so that kills still land while jobs run.
    interval = 1.0 if scale(3000) >= 3000 else 0.2
    kills, pace = 0, threading.Event()
    while not settled(log_dir, accepted) and kills < 50:
        fleet.kill(random.choice(fleet.alive))
        kills += 1
        fleet.start(threads=4)
        pace.wait(interval)
    wait_for(lambda: settled(log_dir, accepted), timeout=120)
    fleet.stop()
    records = Records.read(log_dir)
    account = Account(
        f"worker-sigkill-{task}", accepted, records, stored_ids(server.url, namespace)
    )
    report(account, capsys)
    assert kills >= 2
    assert account.lost == set()
    if task == "least":
        assert account.succeeded == accepted
        for job_id in account.duplicated:
            assert account.records.started_in[job_id] & fleet.killed, job_id
    else:
        assert account.duplicate_runs == 0
        assert {account.records.failed[j] for j in account.failed} <= {"WorkerDiedError"}
