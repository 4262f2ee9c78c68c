"""Time limits: a job running past its task's time_limit is interrupted, on threads and asyncio."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from spinach import AsyncioWorkers, Engine, MemoryBroker
from spinach._interrupts import Interrupts
from spinach.clock import ManualClock
from spinach.exc import InvalidTaskError, JobTimeLimitExceeded
from spinach.job import JobInfo
from spinach.testing import wait_for

from .conftest import Recorder, threads_switching_all_the_time

#: Most seconds past its limit that a job may run on a loaded machine.
GRACE = 1.0


@pytest.fixture
def broker() -> MemoryBroker:
    return MemoryBroker()


@pytest.fixture
def engine(broker: MemoryBroker, namespace: str) -> Iterator[Engine]:
    engine = Engine(broker, namespace)
    yield engine
    engine.stop_workers()


def spin(seconds: float) -> int:
    """Pure-Python work for ``seconds`` (the job's work: no sleep, no C call)."""
    end = time.monotonic() + seconds
    turns = 0
    while time.monotonic() < end:
        turns += 1
    return turns


def failed(engine: Engine, job_id: Any) -> JobInfo:
    info = engine.get_job(job_id)
    assert info is not None
    assert info.error is not None
    return info


class TestThreadWorkers:
    def test_cpu_bound_job_is_stopped_and_its_thread_runs_the_next_one(
        self, engine: Engine, recorder: Recorder
    ) -> None:
        """A pure-Python job running past its limit is interrupted within a second of
        it, fails with JobTimeLimitExceeded, and its thread then runs the next job."""
        threads: list[str] = []

        @engine.task(name="forever", time_limit=timedelta(seconds=0.3))
        def forever() -> None:
            threads.append(threading.current_thread().name)
            spin(60)

        @engine.task(name="next")
        def next_one() -> None:
            threads.append(threading.current_thread().name)

        stuck = engine.schedule(forever)
        engine.schedule(next_one)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        info = failed(engine, stuck.id)
        assert info.error is not None
        assert info.error.type == "spinach.exc.JobTimeLimitExceeded"
        assert "ran past its time limit of 0.3 s" in info.error.message
        assert "spin" in info.error.traceback  # where it was interrupted
        assert info.started_at is not None
        assert info.ended_at is not None
        took = (info.ended_at - info.started_at).total_seconds()
        assert 0.3 <= took < 0.3 + GRACE
        assert len(threads) == 2
        assert threads[0] == threads[1]
        assert [e.job_id for e in recorder.named("job_failed")] == [stuck.id]

    def test_except_exception_does_not_swallow_it(self, engine: Engine) -> None:
        """A task catching Exception around its work is still stopped: the limit's
        exception is a BaseException."""

        @engine.task(name="stubborn", time_limit=timedelta(seconds=0.2))
        def stubborn() -> None:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                with contextlib.suppress(Exception):
                    spin(60)

        job = engine.schedule(stubborn)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        info = failed(engine, job.id)
        assert info.error is not None
        assert info.error.type == "spinach.exc.JobTimeLimitExceeded"
        assert not issubclass(JobTimeLimitExceeded, Exception)

    def test_the_retry_policy_applies(
        self, namespace: str, clock: ManualClock, recorder: Recorder
    ) -> None:
        """A job stopped by its limit is retried while it has retries left, as for
        any failure, then fails."""
        broker = MemoryBroker(clock)
        engine = Engine(broker, namespace)
        runs: list[int] = []

        @engine.task(name="slow", time_limit=timedelta(seconds=0.1), max_retries=1)
        def slow() -> None:
            runs.append(1)
            spin(60)

        job = engine.schedule(slow)
        engine.start_workers(number=1, block=False)
        try:
            wait_for(lambda: recorder.named("job_schedule_retry"), timeout=30)
            clock.advance(3600)  # past the retry's backoff
            broker.wake_up()
            wait_for(lambda: failed_or_none(engine, job.id), timeout=30)
        finally:
            engine.stop_workers()
        assert len(runs) == 2
        (retry,) = recorder.named("job_schedule_retry")
        assert isinstance(retry.err, JobTimeLimitExceeded)

    def test_jobs_within_their_limit_are_left_alone(self, engine: Engine) -> None:
        """Jobs ending before their limit succeed, and the watcher's exception never
        lands later, in another job or in the worker."""
        done: list[int] = []
        engine.task(lambda i: done.append(i), name="quick", time_limit=timedelta(seconds=5))
        for i in range(200):
            engine.schedule("quick", i)
        engine.start_workers(number=2, stop_when_queue_empty=True)
        assert sorted(done) == list(range(200))
        assert engine.failed_jobs() == []


def failed_or_none(engine: Engine, job_id: Any) -> JobInfo | None:
    info = engine.get_job(job_id)
    return info if info is not None and info.error is not None else None


class TestAsyncioWorkers:
    def test_awaiting_job_is_cancelled_at_its_limit(
        self, engine: Engine, recorder: Recorder
    ) -> None:
        """An async job still awaiting at its limit is cancelled and fails with
        JobTimeLimitExceeded; the worker then runs the next job."""
        ran: list[str] = []

        @engine.task(name="sleepy", time_limit=timedelta(seconds=0.2))
        async def sleepy() -> None:
            ran.append("sleepy")
            await asyncio.sleep(60)

        @engine.task(name="after")
        async def after() -> None:
            ran.append("after")

        job = engine.schedule(sleepy)
        engine.schedule(after)
        engine.start_workers(number=1, stop_when_queue_empty=True, workers_class=AsyncioWorkers)
        info = failed(engine, job.id)
        assert info.error is not None
        assert info.error.type == "spinach.exc.JobTimeLimitExceeded"
        assert "ran past its time limit of 0.2 s" in info.error.message
        assert info.started_at is not None
        assert info.ended_at is not None
        assert (info.ended_at - info.started_at).total_seconds() < 0.2 + GRACE
        assert ran == ["sleepy", "after"]

    def test_its_own_timeout_error_is_its_own(self, engine: Engine) -> None:
        """A TimeoutError the task raises itself, within its limit, is not the limit's."""

        @engine.task(name="times_out", time_limit=timedelta(seconds=30))
        async def times_out() -> None:
            await asyncio.wait_for(asyncio.sleep(60), 0.01)

        job = engine.schedule(times_out)
        engine.start_workers(number=1, stop_when_queue_empty=True, workers_class=AsyncioWorkers)
        info = failed(engine, job.id)
        assert info.error is not None
        assert info.error.type in ("TimeoutError", "asyncio.exceptions.TimeoutError")

    def test_system_exit_of_a_limited_job_fails_it(self, engine: Engine) -> None:
        """A limited async job raising SystemExit fails its job, as an unlimited one
        does; it does not leave the event loop and stop the workers."""

        @engine.task(name="exits", time_limit=timedelta(seconds=30))
        async def exits() -> None:
            raise SystemExit(3)

        @engine.task(name="then")
        async def then() -> None:
            pass

        job = engine.schedule(exits)
        engine.schedule(then)
        engine.start_workers(number=1, stop_when_queue_empty=True, workers_class=AsyncioWorkers)
        info = failed(engine, job.id)
        assert info.error is not None
        assert info.error.type == "SystemExit"
        assert engine.broker.count_jobs().queued == {}

    def test_result_within_the_limit_is_kept(self, engine: Engine) -> None:
        """An async job ending within its limit returns its value as usual."""

        @engine.task(name="fast", time_limit=timedelta(seconds=30), keep_result=timedelta(hours=1))
        async def fast() -> int:
            await asyncio.sleep(0)
            return 7

        job = engine.schedule(fast)
        engine.start_workers(number=1, stop_when_queue_empty=True, workers_class=AsyncioWorkers)
        assert engine.get_result(job, timeout=0) == 7


class TestWatcher:
    def test_no_exception_escapes_with_threads_switching_all_the_time(self) -> None:
        """With threads switching every bytecode or so, jobs ending right at their
        limit never let the exception out of run(): it lands in the job or not at all."""
        limits = Interrupts("test-time-limits")
        escaped: list[BaseException] = []
        counts: list[int] = []

        def worker() -> None:
            ended = 0
            for _ in range(1_500):
                try:
                    limits.run(object(), 0.001, spin, (0.001,), {})
                    ended += 1
                except BaseException as e:
                    escaped.append(e)
            counts.append(ended)

        try:
            with threads_switching_all_the_time():
                threads = [threading.Thread(target=worker) for _ in range(4)]
                for thread in threads:
                    thread.start()
                for thread in threads:
                    thread.join(120)
        finally:
            limits.stop()
        assert escaped == []
        assert counts == [1_500] * 4

    def test_jobs_ended_early_leave_the_watcher(self) -> None:
        """Jobs ending long before their limit do not pile up in the watcher: it holds
        about the jobs running, not every job of the last limit's length."""
        limits = Interrupts("test-time-limits")
        try:
            for _ in range(10_000):
                limits.run(object(), 3600, lambda: None, (), {})
            assert len(limits._heap) < 200
        finally:
            limits.stop()

    def test_no_exception_escapes_after_the_task(self) -> None:
        """Jobs ending right at their limit get the limit's exception as their outcome
        or end normally; it never lands in the code that runs after them."""
        limits = Interrupts("test-time-limits")
        outcomes = {"ok": 0, "limit": 0}
        try:
            for _ in range(1_000):
                try:
                    _, err = limits.run(object(), 0.001, spin, (0.001,), {})
                    outcomes["limit" if isinstance(err, JobTimeLimitExceeded) else "ok"] += 1
                    spin(0.0001)  # the worker's own code, after the job
                except JobTimeLimitExceeded:
                    pytest.fail("the limit's exception landed after the job")
        finally:
            limits.stop()
        assert outcomes["ok"] + outcomes["limit"] == 1_000


@pytest.mark.parametrize("limit", [timedelta(0), timedelta(microseconds=10), 5, "1s", True])
def test_bad_time_limit_is_refused(limit: Any) -> None:
    """time_limit must be a timedelta of 1 ms or more."""
    engine = Engine(MemoryBroker())
    with pytest.raises(InvalidTaskError, match="time_limit"):
        engine.task(lambda: None, name="bad", time_limit=limit)
