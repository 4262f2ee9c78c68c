"""Fault scenarios: every job a producer was told was accepted is accounted for.

Each scenario prints a line ``scenario=... accepted=N succeeded=S failed=F
stored=Q lost=0 duplicate_runs=D reported_failed=R failed_store=K``.
SPINACH_FAULTS_SCALE scales their size (0.1 by default, for CI; 1 is the full
size).
"""

from __future__ import annotations

import random
import threading
import time
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable

import pytest
import redis

from spinach import Batch, Engine, signals
from spinach.brokers.redis import RedisBroker
from spinach.exc import BrokerConnectionError
from spinach.job import Job, JobStatus
from spinach.testing import wait_for
from spinach.testing.redis_server import RedisServer

from .accounting import (
    CloseBooks,
    Fleet,
    MakeFleet,
    Records,
    scale,
    schedule_batches,
    settled,
    stored_ids,
)
from .proxy import ChaosProxy

pytestmark = [pytest.mark.faults, pytest.mark.timeout(600)]


def kill_as_jobs_start(
    fleet: Fleet, log_dir: Path, jobs: int, done: Callable[[], bool], **options: Any
) -> int:
    """SIGKILL a worker of ``fleet`` each time another tenth of ``jobs`` has started,
    starting a replacement (with ``options``), until ``done()``; return the kills.

    Kills paced by the work, not by the clock, land while jobs run however fast
    the machine is: paced by the clock, the jobs of a reduced run could all be
    done before the second kill (a loaded machine scheduling slowly while the
    workers kept up). A replacement is started without waiting for it: on a
    loaded machine a start takes longer than a reduced run's jobs, which would
    all be done before the next kill. Victims are picked among the workers that
    run.
    """
    step = max(1, jobs // 10)
    kills, pace = 0, threading.Event()
    while not done() and kills < 50:
        if len(Records.read(log_dir).started_in) >= (kills + 1) * step and fleet.ready:
            fleet.kill(random.choice(fleet.ready))
            kills += 1
            fleet.start(wait=False, **options)
        pace.wait(0.05)
    return kills


@pytest.mark.parametrize("task", ["least", "most"])
def test_worker_sigkill(
    task: str,
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_fleet: MakeFleet,
    make_producer: Callable[[str, str], Engine],
    close_books: CloseBooks,
) -> None:
    """Workers SIGKILLed under load lose no job; only jobs of killed workers run twice or fail."""
    server.start()
    fleet = make_fleet(server.url)
    for _ in range(3):
        fleet.start(threads=4)
    producer = make_producer(server.url, namespace)
    accepted = schedule_batches(producer, task, scale(3000))
    kills = kill_as_jobs_start(
        fleet, log_dir, len(accepted), lambda: settled(log_dir, accepted), threads=4
    )
    wait_for(lambda: settled(log_dir, accepted), timeout=120)
    # A worker stopped before it installed its signal handlers would not exit cleanly.
    wait_for(lambda: len(fleet.ready) == len(fleet.alive), timeout=60)
    fleet.stop()
    account = close_books(f"worker-sigkill-{task}", accepted)
    assert kills >= 2
    assert account.lost == set()
    if task == "least":
        assert account.succeeded == accepted
        for job_id in account.duplicated:
            assert account.records.started_in[job_id] & fleet.killed, job_id
    else:
        assert account.duplicate_runs == 0
        assert {account.records.failed[j] for j in account.failed} <= {"WorkerDiedError"}


class Canceller(threading.Thread):
    """Cancels random accepted jobs until told to stop, keeping those cancelled: the
    time after each cancel returned, and the status the job had."""

    def __init__(self, engine: Engine, accepted: set[str], share: float) -> None:
        super().__init__(name="canceller", daemon=True)
        self.engine, self.candidates = engine, sorted(accepted)
        self.most = int(len(accepted) * share)
        self.cancelled: dict[str, tuple[float, JobStatus]] = {}
        self.stop = threading.Event()
        statuses: dict[str, JobStatus] = {}
        self.statuses = statuses

        def note(sender: str, job: Job) -> None:
            statuses[str(job.id)] = job.status

        self.note = note
        signals.job_cancelled.connect(note, sender=engine.namespace, weak=False)

    def run(self) -> None:
        try:
            while not self.stop.wait(0.02) and len(self.cancelled) < self.most:
                job_id = random.choice(self.candidates)
                if job_id not in self.cancelled and self.engine.cancel(job_id):
                    self.cancelled[job_id] = (time.time(), self.statuses[job_id])
        finally:
            signals.job_cancelled.disconnect(self.note, sender=self.engine.namespace)


def test_cancel_and_time_limits_under_worker_kills(
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_fleet: MakeFleet,
    make_producer: Callable[[str, str], Engine],
    close_books: CloseBooks,
) -> None:
    """Jobs cancelled at random while time limits stop some of them and workers are
    SIGKILLed lose nothing: every job succeeded, failed (its time limit, twice, or
    its worker's death), was cancelled, or is still stored; a job cancelled before
    it started never starts after its cancel; every cancelled job reads CANCELLED."""
    server.start()
    fleet = make_fleet(server.url)
    options = {"threads": 4, "work_ms": [5, 300], "time_limit_ms": 200}
    for _ in range(3):
        fleet.start(**options)
    producer = make_producer(server.url, namespace)
    accepted = schedule_batches(producer, "limited", scale(1500))
    canceller = Canceller(producer, accepted, share=0.25)
    canceller.start()

    def ended() -> set[str]:
        records = Records.read(log_dir)
        return records.succeeded | set(records.failed) | set(canceller.cancelled)

    kills = kill_as_jobs_start(
        fleet, log_dir, len(accepted), lambda: accepted <= ended(), **options
    )
    wait_for(lambda: accepted <= ended(), timeout=180)
    canceller.stop.set()
    canceller.join(30)
    wait_for(lambda: len(fleet.ready) == len(fleet.alive), timeout=60)
    fleet.stop()
    cancelled = set(canceller.cancelled)
    account = close_books("cancel-time-limits-kills", accepted, cancelled)
    assert kills >= 2
    assert cancelled, "nothing was cancelled"
    assert account.lost == set()
    assert account.still_stored == set()
    assert set(account.records.failed.values()) <= {"JobTimeLimitExceeded", "WorkerDiedError"}
    assert "JobTimeLimitExceeded" in account.records.failed.values()
    for job_id, (after, status) in canceller.cancelled.items():
        if status is not JobStatus.RUNNING:
            late = [
                when for j, _, when in account.records.start_log if j == job_id and when > after
            ]
            assert late == [], f"{job_id} was cancelled {status.name} and started after"
        info = producer.get_job(job_id)
        assert info is not None, job_id
        assert info.status is JobStatus.CANCELLED, job_id


class Producer(threading.Thread):
    """Schedules jobs one by one until told to stop, keeping the ids it was told were accepted."""

    def __init__(self, engine: Engine, task: str, count: int, rate: float) -> None:
        super().__init__(name="producer", daemon=True)
        self.engine, self.task, self.count, self.rate = engine, task, count, rate
        self.accepted: set[str] = set()
        self.refused = 0
        self.done = threading.Event()

    def run(self) -> None:
        pace = threading.Event()
        for i in range(self.count):
            pace.wait(1 / self.rate)  # the load's rhythm, so that faults land while it runs
            try:
                self.accepted.add(str(self.engine.schedule(self.task, i).id))
            except BrokerConnectionError:
                self.refused += 1
        self.done.set()


@pytest.mark.parametrize("fsync", ["always", "everysec"])
def test_redis_restart_under_load(
    fsync: str,
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_fleet: MakeFleet,
    make_producer: Callable[[str, str], Engine],
    close_books: CloseBooks,
) -> None:
    """Redis SIGKILLed and restarted twice under load: with fsync always, nothing is lost."""
    options = ("--appendonly", "yes", "--appendfsync", fsync)
    server.start(*options)
    fleet = make_fleet(server.url)
    for _ in range(2):
        fleet.start(threads=4)
    producer = Producer(make_producer(server.url, namespace), "least", scale(2000), rate=50)
    producer.start()
    for restart in range(1, 3):
        # Each restart once the load has gone on for a while.
        wait_for(lambda r=restart: len(producer.accepted) > 40 * r, timeout=60)
        server.stop()
        server.start(*options)
    assert producer.done.wait(300)
    # With everysec, what the last second before a kill held may be gone (the
    # documented trade-off): wait until nothing is left to run.
    wait_for(
        lambda: settled(log_dir, producer.accepted) or not stored_ids(server.url, namespace),
        timeout=120,
    )
    fleet.stop()
    account = close_books(f"redis-restart-fsync-{fsync}", producer.accepted)
    if fsync == "always":
        assert account.lost == set()
        assert account.succeeded == producer.accepted


def test_dropped_and_slow_connections(
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_fleet: MakeFleet,
    make_producer: Callable[[str, str], Engine],
    close_books: CloseBooks,
) -> None:
    """Connections cut at random and slowed down lose no job, and workers keep consuming."""
    server.start()
    proxy = ChaosProxy(server.port, latency=0.002, cut_every=0.3)
    proxy.start()
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        fleet = make_fleet(url)
        for _ in range(2):
            fleet.start(threads=4)
        # At most 100 jobs a second, and over 4 s at least: a reduced run scheduling
        # its 100 jobs in 1 s saw as few as one cut (one every 0.3 s on average).
        count = scale(1000)
        producer = Producer(make_producer(url, namespace), "least", count, rate=min(100, count / 4))
        producer.start()
        assert producer.done.wait(300)
        wait_for(lambda: settled(log_dir, producer.accepted), timeout=180)
        fleet.stop()
    finally:
        proxy.stop()
    account = close_books("dropped-connections", producer.accepted)
    assert proxy.cuts >= 3
    assert account.lost == set()
    assert account.succeeded == producer.accepted


def test_graceful_shutdown(
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_fleet: MakeFleet,
    make_producer: Callable[[str, str], Engine],
    close_books: CloseBooks,
) -> None:
    """SIGTERM in the middle of long jobs: they finish, and nothing fetched is left behind."""
    server.start()
    fleet = make_fleet(server.url)
    fleet.start(threads=3, work_ms=[300, 600])
    accepted = schedule_batches(make_producer(server.url, namespace), "least", 12)
    wait_for(lambda: sum(Records.read(log_dir).starts.values()) >= 3, timeout=30)
    fleet.stop()
    account = close_books("graceful-shutdown", accepted)
    records = account.records
    assert set(records.starts) <= records.succeeded, "a started job did not finish"
    assert account.lost == set()
    assert account.still_stored == accepted - account.succeeded
    client = RedisBroker.from_url(server.url)
    client.namespace = namespace
    try:
        counts = client.count_jobs()
    finally:
        client.close()
    assert counts.running == 0
    assert counts.queued == {"spinach": len(account.still_stored)}


def test_shutdown_past_the_grace_period(
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_fleet: MakeFleet,
    make_producer: Callable[[str, str], Engine],
    close_books: CloseBooks,
) -> None:
    """Jobs still running past the grace period are queued again or failed; none is lost."""
    server.start()
    fleet = make_fleet(server.url)
    leaving = fleet.start(threads=2, work_ms=[1500, 1500], grace_period=0.3)
    producer = make_producer(server.url, namespace)
    accepted = {str(producer.schedule(task, i).id) for i, task in enumerate(["least", "most"] * 2)}
    wait_for(lambda: sum(Records.read(log_dir).starts.values()) == 2, timeout=30)
    fleet.stop()  # SIGTERM: exits 0 after the grace period
    fleet.start(threads=4, work_ms=[10, 10])
    wait_for(lambda: settled(log_dir, accepted), timeout=60)
    fleet.stop()
    account = close_books("grace-period", accepted)
    records = account.records
    assert account.lost == set()
    given_up = {j for j, pids in records.started_in.items() if leaving.pid in pids}
    assert len(given_up) == 2
    for job_id in given_up:
        assert job_id not in records.succeeded or records.starts[job_id] == 2
    assert set(records.failed.values()) <= {"WorkerDiedError"}
    assert account.duplicate_runs == len(given_up - set(records.failed))


def test_clock_skew(
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_fleet: MakeFleet,
    make_producer: Callable[[str, str], Engine],
    close_books: CloseBooks,
) -> None:
    """Workers 10 minutes ahead and behind run future jobs on time; nobody is declared dead."""
    server.start()
    fleet = make_fleet(server.url)
    fleet.start(threads=2, skew=600.0)
    fleet.start(threads=2, skew=-600.0)
    engine = make_producer(server.url, namespace)
    due: dict[str, float] = {}
    batch = Batch()
    for i in range(scale(200)):
        batch.schedule_at("least", engine._broker.now() + timedelta(seconds=2 + i % 3), i)
    for job in engine.schedule_batch(batch):
        due[str(job.id)] = job.at.timestamp()
    wait_for(lambda: settled(log_dir, set(due)), timeout=60)
    fleet.stop()
    account = close_books("clock-skew", set(due))
    records = account.records
    assert account.lost == set()
    assert account.succeeded == set(due)
    assert account.duplicate_runs == 0
    assert records.failed == {}
    for job_id, started in records.start_times.items():
        assert due[job_id] - 0.05 <= started <= due[job_id] + 1.0, job_id


def test_poison_input(
    server: RedisServer,
    namespace: str,
    log_dir: Path,
    make_fleet: MakeFleet,
    make_producer: Callable[[str, str], Engine],
    close_books: CloseBooks,
) -> None:
    """Garbage, unknown tasks and stale signatures end as failed records; good jobs still run."""
    server.start()
    fleet = make_fleet(server.url)
    fleet.start(threads=2)
    engine = make_producer(server.url, namespace)
    broker = engine._broker
    good = {str(engine.schedule("least", i).id) for i in range(10)}
    client = redis.Redis.from_url(server.url)
    queue = f"spinach:{{{namespace}}}:queue:spinach"
    client.rpush(queue, "garbage", '{"task_name": "least", "half": ', b"\xff\xfe")
    ghost = Job("ghost", "spinach", broker.now(), 3)
    stale = Job("least", "spinach", broker.now(), 3, (1, 2, 3))
    broker.enqueue_jobs([ghost, stale])
    good |= {str(engine.schedule("least", i).id) for i in range(10, 20)}
    accepted = good | {str(ghost.id), str(stale.id)}
    wait_for(lambda: settled(log_dir, accepted), timeout=60)
    fleet.stop()
    account = close_books("poison-input", accepted)
    records = account.records
    assert account.lost == set()
    assert account.succeeded == good
    assert records.failed[str(ghost.id)] == "UnknownTask"
    assert records.failed[str(stale.id)] == "InvalidJobSignatureError"
    assert account.failed_store == {
        str(ghost.id): "UnknownTask",
        str(stale.id): "InvalidJobSignatureError",
    }
    failed_entries = client.lrange(f"spinach:{{{namespace}}}:failed", 0, -1)
    client.close()
    assert failed_entries == [b"garbage", b'{"task_name": "least", "half": ', b"\xff\xfe"]
