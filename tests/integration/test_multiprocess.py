"""Several worker processes on one Redis: exactly-once, limits, periodic tasks, crash recovery."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from spinach import Batch, Engine, Tasks
from spinach import _lifecycle as lifecycle
from spinach.brokers.redis import RedisBroker
from spinach.exc import JobCancelledError, JobFailedError
from spinach.job import JobStatus
from spinach.testing import wait_for

WORKER = Path(__file__).with_name("worker_process.py")


class Workers:
    """Worker processes started by a test, stopped with SIGTERM at its end."""

    def __init__(self, url: str, namespace: str) -> None:
        self.url, self.namespace = url, namespace
        self.processes: list[subprocess.Popen[bytes]] = []
        self.r = redis.Redis.from_url(url, decode_responses=True)

    def key(self, name: str) -> str:
        return f"test:{self.namespace}:{name}"

    def list(self, name: str) -> list[str]:
        return self.r.lrange(self.key(name), 0, -1)

    def start(self, count: int, **options: Any) -> list[subprocess.Popen[bytes]]:
        started = []
        for _ in range(count):
            before = len(self.list("workers"))
            process = subprocess.Popen(
                [sys.executable, str(WORKER), self.url, self.namespace, json.dumps(options)]
            )
            self.processes.append(process)
            started.append(process)
            threads = options.get("threads", 4)
            wait_for(lambda b=before, t=threads: len(self.list("workers")) >= b + t, timeout=30)
        return started

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            assert process.wait(timeout=30) in (0, -signal.SIGKILL)
        self.r.close()


@pytest.fixture
def workers(redis_url: str, namespace: str) -> Iterator[Workers]:
    workers = Workers(redis_url, namespace)
    yield workers
    workers.stop()


def producer(redis_url: str, namespace: str) -> Engine:
    tasks = Tasks()
    for name, retries, limit in [
        ("record", 3, None),
        ("limited", 1, 2),
        ("hold_least", 2, None),
        ("hold_most", 0, None),
    ]:
        tasks.add(_noop, name, max_retries=retries, max_concurrency=limit)
    for name in ("square", "hold_kept"):
        tasks.add(_noop, name, keep_result=timedelta(hours=1))
    tasks.add(_noop, "spin_limited", time_limit=timedelta(seconds=1))
    tasks.add(_noop, "sleeper", max_retries=2)
    tasks.add(_noop, "aio_sleeper", queue="aio", max_retries=2)
    tasks.add(_noop, "aio_record", queue="aio")
    tasks.add(_noop, "unique_record", unique=True)
    tasks.add(_noop, "rated")
    engine = Engine(RedisBroker.from_url(redis_url), namespace)
    engine.attach_tasks(tasks)
    return engine


@pytest.fixture
def make_producer(redis_url: str, namespace: str) -> Iterator[Callable[[], Engine]]:
    engines: list[Engine] = []

    def make() -> Engine:
        engines.append(producer(redis_url, namespace))
        return engines[-1]

    yield make
    for engine in engines:
        assert isinstance(engine._broker, RedisBroker)
        engine._broker.close()


def _noop(*args: Any) -> None:
    """The producer never runs tasks."""


def schedule_many(engine: Engine, task: str, count: int) -> None:
    for start in range(0, count, 250):
        batch = Batch()
        for i in range(start, min(count, start + 250)):
            batch.schedule(task, i)
        engine.schedule_batch(batch)


def test_each_job_runs_exactly_once(make_producer: Callable[[], Engine], workers: Workers) -> None:
    """2,000 jobs drained by 3 worker processes each run exactly once."""
    workers.start(3)
    engine = make_producer()
    schedule_many(engine, "record", 1000)
    for i in range(1000, 2000):
        engine.schedule("record", i)
    wait_for(lambda: len(workers.list("runs")) >= 2000, timeout=120)
    runs = sorted(int(i) for i in workers.list("runs"))
    assert runs == list(range(2000))
    workers.stop()
    assert len(workers.list("exited")) == 3


def test_concurrency_limit_across_processes(
    make_producer: Callable[[], Engine], workers: Workers
) -> None:
    """A task limited to 2 never runs more than 2 jobs at once across processes."""
    workers.start(3)
    engine = make_producer()
    schedule_many(engine, "limited", 200)
    wait_for(lambda: len(workers.list("runs")) >= 200, timeout=120)
    samples = [int(s) for s in workers.list("samples")]
    assert len(samples) == 200
    assert max(samples) <= 2
    assert sorted(int(i) for i in workers.list("runs")) == list(range(200))


def test_periodic_task_not_duplicated_across_processes(
    make_producer: Callable[[], Engine], workers: Workers
) -> None:
    """Three processes registering one periodic task run it once per period."""
    workers.start(3, periodic=True)
    wait_for(lambda: len(workers.list("ticks")) >= 4, timeout=30)
    workers.stop()
    ticks = [line.split() for line in workers.list("ticks")]
    ids = [t[0] for t in ticks]
    assert len(ids) == len(set(ids))
    times = sorted(float(t[1]) for t in ticks)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(gap >= 0.9 for gap in gaps), gaps


def test_jobs_of_a_killed_worker_are_recovered(
    make_producer: Callable[[], Engine], workers: Workers
) -> None:
    """After a SIGKILL, the at-least-once job is re-run elsewhere, the at-most-once one fails."""
    (victim,) = workers.start(1, threads=2, dead_worker_timeout=2.0)
    engine = make_producer()
    engine.schedule("hold_least", 1)
    engine.schedule("hold_most", 2)
    wait_for(lambda: len(workers.list("started")) == 2, timeout=30)
    workers.start(1, threads=2, dead_worker_timeout=2.0)
    victim.kill()
    killed_at = time.monotonic()
    victim.wait()
    wait_for(lambda: len(workers.list("started")) == 3, timeout=30)
    recovered_after = time.monotonic() - killed_at
    wait_for(lambda: workers.list("failed"), timeout=30)
    assert workers.list("failed") == ["hold_most:2:WorkerDiedError"]
    kind, _, pid = workers.list("started")[2].split(":")
    assert kind == "least"
    assert int(pid) != victim.pid
    workers.r.rpush(workers.key("release:1"), "go")
    wait_for(lambda: workers.list("done"), timeout=30)
    wait_for(lambda: engine._broker.count_jobs().running == 0, timeout=30)
    print(f"recovered {recovered_after:.2f} s after SIGKILL (threshold 2 s)")


def test_results_and_failures_across_processes(
    make_producer: Callable[[], Engine], workers: Workers
) -> None:
    """A result returned in a worker process is read by the producer; a failure
    comes back as JobFailedError with the worker's traceback."""
    workers.start(1)
    engine = make_producer()
    ok, bad = engine.schedule("square", 7), engine.schedule("square", -1)
    assert engine.get_result(ok.id, timeout=30) == 49
    with pytest.raises(JobFailedError, match="no square of -1 here") as raised:
        engine.get_result(str(bad.id), timeout=30)
    assert raised.value.error.type == "ValueError"
    assert "worker_process.py" in raised.value.error.traceback
    (failed,) = engine.failed_jobs()
    assert (failed.id, failed.status, failed.task_args) == (bad.id, JobStatus.FAILED, (-1,))
    assert engine.requeue_failed() == 1
    with pytest.raises(JobFailedError):
        engine.get_result(bad.id, timeout=30)
    info = engine.get_job(ok.id)
    assert info is not None
    assert info.started_at is not None
    assert info.ended_at is not None
    assert info.started_at <= info.ended_at


def test_get_result_is_woken_by_the_end_in_another_process(
    make_producer: Callable[[], Engine], workers: Workers, monkeypatch: pytest.MonkeyPatch
) -> None:
    """get_result waiting for a job running in another process returns once it
    ends, woken by the notification: with the safety-net look pushed to a
    minute, only the notification can end the wait within the timeout."""
    monkeypatch.setattr(lifecycle, "_LOOK_AGAIN", 60.0)
    workers.start(1)
    engine = make_producer()
    job = engine.schedule("hold_kept", 1)
    wait_for(lambda: workers.list("started"))
    got: list[object] = []
    waiting = threading.Thread(target=lambda: got.append(engine.get_result(job.id, timeout=30)))
    waiting.start()
    # The wait has looked at the job (running) before it is released.
    wait_for(lambda: engine._broker._watchers)
    workers.r.rpush(workers.key("release:1"), 1)
    waiting.join(40)
    assert got, "get_result did not return"
    (result,) = got
    assert isinstance(result, dict)
    assert result["held"] == 1


def test_time_limit_stops_a_cpu_bound_job_in_another_process(
    make_producer: Callable[[], Engine], workers: Workers
) -> None:
    """A pure-Python job spinning for ever in a worker process is stopped by its
    1 s time limit within a second of it, and its thread then runs the next job."""
    workers.start(1, threads=1)
    engine = make_producer()
    stuck = engine.schedule("spin_limited", 1)
    engine.schedule("record", 2)
    wait_for(lambda: workers.list("runs") == ["2"], timeout=30)
    info = engine.get_job(stuck.id)
    assert info is not None
    assert info.error is not None
    assert info.error.type == "spinach.exc.JobTimeLimitExceeded"
    assert info.started_at is not None
    assert info.ended_at is not None
    assert 1.0 <= (info.ended_at - info.started_at).total_seconds() < 2.0
    assert workers.list("failed") == ["spin_limited:1:JobTimeLimitExceeded"]


@pytest.mark.parametrize("kind", ["threads", "asyncio"])
def test_cancel_stops_a_running_job_in_another_process(
    make_producer: Callable[[], Engine], workers: Workers, kind: str
) -> None:
    """Cancelling a job sleeping in a worker process stops it there: a thread job
    gets JobCancelled, an asyncio job's task is cancelled; it is recorded
    CANCELLED, never retried, and its worker runs the next job."""
    asyncio_workers = kind == "asyncio"
    workers.start(1, threads=1, asyncio=asyncio_workers)
    engine = make_producer()
    sleeper, record = ("aio_sleeper", "aio_record") if asyncio_workers else ("sleeper", "record")
    job = engine.schedule(sleeper, 1)
    wait_for(lambda: workers.list("started"), timeout=30)
    engine.schedule(record, 2)
    assert engine.cancel(job.id)
    wait_for(lambda: workers.list("runs") == ["2"], timeout=30)
    assert workers.list("cancelled") == [f"{sleeper}:1"]
    info = engine.get_job(job.id)
    assert info is not None
    assert info.status is JobStatus.CANCELLED
    with pytest.raises(JobCancelledError):
        engine.get_result(job.id, timeout=0)
    assert workers.list("failed") == []
    assert len(workers.list("started")) == 1  # not retried
    assert not engine.cancel(job.id)


UNIQUE_PRODUCER = """
import sys, threading
import redis
from spinach import Engine, Tasks
from spinach.brokers.redis import RedisBroker

url, namespace, calls = sys.argv[1], sys.argv[2], int(sys.argv[3])
tasks = Tasks()
tasks.add(lambda *args, **kwargs: None, "unique_record", unique=True)
engine = Engine(RedisBroker.from_url(url), namespace)
engine.attach_tasks(tasks)
r = redis.Redis.from_url(url)
r.rpush(f"test:{namespace}:ready", 1)
r.blpop([f"test:{namespace}:go"], timeout=60)
ids = []

def schedule(count):
    for _ in range(count):
        ids.append(str(engine.schedule("unique_record", 7, note="same").id))

threads = [threading.Thread(target=schedule, args=(calls // 10,)) for _ in range(10)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(" ".join(sorted(set(ids))), len(ids))
"""


def test_concurrent_unique_schedules_from_processes_store_one(
    make_producer: Callable[[], Engine], redis_url: str, namespace: str
) -> None:
    """1,000 schedule() calls of one unique job at once, from 4 processes (10
    threads each), store exactly one job, and every call returns its id."""
    r = redis.Redis.from_url(redis_url, decode_responses=True)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", UNIQUE_PRODUCER, redis_url, namespace, "250"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    try:
        wait_for(lambda: r.llen(f"test:{namespace}:ready") == 4, timeout=60)
        r.rpush(f"test:{namespace}:go", *[1] * 4)
        outputs = [process.communicate(timeout=120)[0].split() for process in processes]
    finally:
        for process in processes:
            process.kill()
        r.close()
    ids = {output[0] for output in outputs}
    assert [output[1:] for output in outputs] == [["250"]] * 4
    assert len(ids) == 1
    engine = make_producer()
    assert engine.broker.count_jobs().queued == {"spinach": 1}
    info = engine.get_job(ids.pop())
    assert info is not None
    assert (info.status, info.task_args, info.task_kwargs) == (
        JobStatus.QUEUED,
        (7,),
        {"note": "same"},
    )


def test_rate_limit_holds_across_processes(
    make_producer: Callable[[], Engine], workers: Workers
) -> None:
    """A task limited to 50 starts a second, drained by 4 worker processes (16
    threads) from a backlog, starts 500 jobs within 10% over 10 s."""
    workers.start(4)
    schedule_many(make_producer(), "rated", 650)
    # 550 starts: 11 s or more at the limit; the backlog lasts past the 10 s measured.
    wait_for(lambda: len(workers.list("rated")) >= 550, timeout=60)
    starts = sorted(float(t) for t in workers.list("rated"))
    within = [t for t in starts if t < starts[0] + 10]
    assert 450 <= len(within) <= 550, f"{len(within)} starts in 10 s"
