"""Reading what the fault workers recorded, and accounting for every accepted job.

Shared by the fault scenarios and the hostile tests: their conftest files
import the fixtures ``make_producer`` and ``close_books`` from here.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Protocol

import attrs
import pytest
import redis

from spinach import Batch, Engine, Tasks
from spinach.brokers.redis import RedisBroker
from spinach.testing import wait_for
from spinach.testing.redis_server import RedisServer

WORKER = Path(__file__).with_name("fault_worker.py")


@attrs.define
class Records:
    """What every worker process logged, by job id."""

    starts: collections.Counter[str] = attrs.Factory(collections.Counter)
    #: pids whose log has a start of the job
    started_in: dict[str, set[int]] = attrs.Factory(dict)
    #: time of the first start, by this host's clock
    start_times: dict[str, float] = attrs.Factory(dict)
    #: every start: job id, pid, time by this host's clock
    start_log: list[tuple[str, int, float]] = attrs.Factory(list)
    succeeded: set[str] = attrs.Factory(set)
    failed: dict[str, str] = attrs.Factory(dict)
    #: every failure reported, by job id: a job failing in a worker that is then
    #: killed before recording it is failed again by the worker adopting it
    failed_reasons: dict[str, set[str]] = attrs.Factory(dict)
    #: time of the failure, by this host's clock
    fail_times: dict[str, float] = attrs.Factory(dict)

    @classmethod
    def read(cls, log_dir: Path) -> Records:
        records = cls()
        for path in log_dir.glob("*.log"):
            pid = int(path.stem)
            # Only whole lines: a worker may be writing the last one as we read, and
            # a line read half written ("start <id> " without its time) is no record.
            *lines, _partial = path.read_text().split("\n")
            for line in lines:
                kind, _, rest = line.partition(" ")
                if kind == "start":
                    job_id, _, when = rest.partition(" ")
                    records.starts[job_id] += 1
                    records.started_in.setdefault(job_id, set()).add(pid)
                    records.start_times.setdefault(job_id, float(when))
                    records.start_log.append((job_id, pid, float(when)))
                elif kind == "ok":
                    records.succeeded.add(rest)
                elif kind == "fail":
                    job_id, reason, when = rest.split(" ")
                    records.failed[job_id] = reason
                    records.failed_reasons.setdefault(job_id, set()).add(reason)
                    records.fail_times[job_id] = float(when)
        return records


@attrs.define
class Account:
    """Where each accepted job ended: by the workers' logs, the jobs still stored,
    and the failed store read through ``Engine.failed_jobs()``."""

    scenario: str
    accepted: set[str]
    records: Records
    stored: set[str]
    #: the failed store: error type (the class name) by job id
    failed_store: dict[str, str] = attrs.Factory(dict)
    #: jobs that Engine.cancel() cancelled (it returned True)
    cancelled: set[str] = attrs.Factory(set)

    @property
    def succeeded(self) -> set[str]:
        return self.accepted & self.records.succeeded

    @property
    def failed(self) -> set[str]:
        logged_or_kept = set(self.records.failed) | set(self.failed_store)
        return (self.accepted & logged_or_kept) - self.succeeded

    @property
    def unkept_failures(self) -> set[str]:
        """Jobs reported failed, neither run to their end nor stored, that are not
        in the failed store: a failure recorded nowhere."""
        return self.failed - self.stored - set(self.failed_store) - self.cancelled

    @property
    def kept_unreported(self) -> set[str]:
        """Jobs of the failed store that no worker reported failed."""
        return set(self.failed_store) - set(self.records.failed)

    @property
    def still_stored(self) -> set[str]:
        return (self.accepted & self.stored) - self.succeeded - self.failed

    @property
    def lost(self) -> set[str]:
        return self.accepted - self.succeeded - self.failed - self.stored - self.cancelled

    @property
    def duplicated(self) -> set[str]:
        return {
            job_id for job_id, n in self.records.starts.items() if n > 1 and job_id in self.accepted
        }

    @property
    def duplicate_runs(self) -> int:
        return sum(self.records.starts[job_id] - 1 for job_id in self.duplicated)

    @property
    def reported_failed(self) -> set[str]:
        """Jobs reported failed, including those that then ran to their end anyway
        (an at-most-once job taken over from a worker that was only frozen)."""
        return self.accepted & set(self.records.failed)

    def summary(self) -> str:
        return (
            f"scenario={self.scenario} accepted={len(self.accepted)} "
            f"succeeded={len(self.succeeded)} failed={len(self.failed)} "
            f"stored={len(self.still_stored)} lost={len(self.lost)} "
            f"duplicate_runs={self.duplicate_runs} reported_failed={len(self.reported_failed)} "
            f"failed_store={len(self.failed_store)}"
            + (f" cancelled={len(self.cancelled)}" if self.cancelled else "")
        )


class Fleet:
    """Fault worker processes of one scenario."""

    def __init__(self, url: str, namespace: str, log_dir: Path) -> None:
        self.url, self.namespace, self.log_dir = url, namespace, log_dir
        self.processes: list[subprocess.Popen[bytes]] = []
        self.killed: set[int] = set()

    def start(self, wait: bool = True, **options: Any) -> subprocess.Popen[bytes]:
        """Start a worker process; with ``wait``, return once its workers run."""
        with open(self.log_dir / f"worker-{len(self.processes)}.err", "wb") as errors:
            process = subprocess.Popen(
                [sys.executable, str(WORKER), self.url, self.namespace, str(self.log_dir),
                 json.dumps(options)],
                stderr=errors,
            )  # fmt: skip
        self.processes.append(process)
        if wait:
            wait_for(lambda: self.is_ready(process), timeout=30)
        return process

    def is_ready(self, process: subprocess.Popen[bytes]) -> bool:
        """Whether the workers of ``process`` run (it logged "ready")."""
        log = self.log_dir / f"{process.pid}.log"
        return log.exists() and "ready" in log.read_text()

    @property
    def ready(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.alive if self.is_ready(p)]

    @property
    def alive(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def kill(self, process: subprocess.Popen[bytes]) -> None:
        process.send_signal(signal.SIGKILL)
        process.wait()
        self.killed.add(process.pid)

    def stop(self) -> None:
        """SIGTERM every live worker; each must exit 0 after a graceful stop."""
        for process in self.alive:
            process.send_signal(signal.SIGTERM)
        for process in self.processes:
            if process.pid not in self.killed:
                assert process.wait(timeout=60) == 0, f"worker {process.pid} failed"


MakeFleet = Callable[[str], Fleet]


@pytest.fixture
def make_fleet(namespace: str, log_dir: Path) -> Iterator[Callable[[str], Fleet]]:
    """Fleets of worker processes for a Redis URL; those still running when the
    test ends (it failed before stopping them) are killed."""
    fleets: list[Fleet] = []

    def make(url: str) -> Fleet:
        fleet = Fleet(url, namespace, log_dir)
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in fleets:
        for process in fleet.alive:
            process.kill()
            process.wait()


def stored_ids(url: str, namespace: str) -> set[str]:
    client = redis.Redis.from_url(url, decode_responses=True)
    try:
        return set(client.hkeys(f"spinach:{{{namespace}}}:payloads"))
    finally:
        client.close()


def failed_store(url: str, namespace: str) -> dict[str, str]:
    """The failed store of ``namespace``, through the public API: the error type
    (class name, as the workers log it) by job id."""
    broker = RedisBroker.from_url(url)
    try:
        engine = Engine(broker, namespace)
        kept: dict[str, str] = {}
        while True:
            page = engine.failed_jobs(limit=500, offset=len(kept))
            for info in page:
                assert info.error is not None, info
                kept[str(info.id)] = info.error.type.rpartition(".")[2]
            if len(page) < 500:
                return kept
    finally:
        broker.close()


def scale(size: int) -> int:
    """``size`` scaled by SPINACH_FAULTS_SCALE (a tenth by default, for CI)."""
    return max(10, int(size * float(os.environ.get("SPINACH_FAULTS_SCALE", "0.1"))))


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
        tasks.add(_noop, "limited", max_retries=1)
        tasks.add(_noop, "rated", max_retries=3)
        engine = Engine(broker, namespace)
        engine.attach_tasks(tasks)
        return engine

    yield make
    for broker in brokers:
        broker.close()


class CloseBooks(Protocol):
    def __call__(self, scenario: str, accepted: set[str], cancelled: set[str] = ...) -> Account: ...


@pytest.fixture
def close_books(
    server: RedisServer, namespace: str, log_dir: Path, capsys: pytest.CaptureFixture[str]
) -> CloseBooks:
    """Account for every accepted job of a scenario, and print its summary line."""

    def close(scenario: str, accepted: set[str], cancelled: set[str] = frozenset()) -> Account:
        account = Account(
            scenario,
            accepted,
            Records.read(log_dir),
            stored_ids(server.url, namespace),
            failed_store(server.url, namespace),
            set(cancelled),
        )
        with capsys.disabled():
            print(f"\n{account.summary()}")
        # Every failure for good is in the failed store, with the error the
        # worker reported, and nothing else is.
        assert account.unkept_failures == set(), account.unkept_failures
        assert account.kept_unreported == set(), account.kept_unreported
        for job_id, error_type in account.failed_store.items():
            assert error_type in account.records.failed_reasons[job_id], job_id
        return account

    return close


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
