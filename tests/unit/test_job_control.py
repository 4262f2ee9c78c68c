"""Cancelling jobs, unique jobs and rate limits, through the engine, on the MemoryBroker."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from spinach import AsyncioWorkers, Batch, Engine, MemoryBroker, Tasks, ThreadWorkers, signals
from spinach._interrupts import Interrupts
from spinach.exc import InvalidTaskError, JobCancelled, JobCancelledError
from spinach.job import Job, JobStatus
from spinach.testing import wait_for

from .conftest import Recorder, threads_switching_all_the_time


@pytest.fixture
def engine(namespace: str) -> Iterator[Engine]:
    engine = Engine(MemoryBroker(), namespace)
    yield engine
    engine.stop_workers()


@pytest.fixture
def cancelled_signals(namespace: str) -> Iterator[list[Job]]:
    sent: list[Job] = []

    def receive(sender: str, job: Job) -> None:
        sent.append(job)

    signals.job_cancelled.connect(receive, sender=namespace, weak=False)
    yield sent
    signals.job_cancelled.disconnect(receive, sender=namespace)


def status(engine: Engine, job: Job) -> JobStatus | None:
    info = engine.get_job(job.id)
    return None if info is None else info.status


class TestCancelRunning:
    def test_sleeping_thread_job_is_stopped_and_its_thread_goes_on(
        self, engine: Engine, recorder: Recorder, cancelled_signals: list[Job]
    ) -> None:
        """A running thread job gets JobCancelled, is recorded CANCELLED and not
        retried; its thread then runs the next job."""
        started = threading.Event()
        seen: list[BaseException] = []
        threads: list[str] = []

        @engine.task(name="sleepy", max_retries=3, keep_result=timedelta(minutes=1))
        def sleepy() -> None:
            threads.append(threading.current_thread().name)
            started.set()
            try:
                while True:
                    time.sleep(0.01)
            except BaseException as e:
                seen.append(e)
                raise

        @engine.task(name="next")
        def next_one() -> None:
            threads.append(threading.current_thread().name)

        job = engine.schedule(sleepy)
        engine.start_workers(number=1, block=False)
        assert started.wait(10)
        engine.schedule(next_one)
        assert engine.cancel(job.id)
        wait_for(lambda: len(threads) == 2, timeout=10)
        assert threads[0] == threads[1]
        assert [type(e) for e in seen] == [JobCancelled]
        assert status(engine, job) is JobStatus.CANCELLED
        with pytest.raises(JobCancelledError, match="was cancelled"):
            engine.get_result(job.id, timeout=0)
        assert [j.id for j in cancelled_signals] == [job.id]
        assert cancelled_signals[0].status is JobStatus.RUNNING
        assert recorder.of(job.id) == ["job_started", "job_finished"]
        assert engine.failed_jobs() == []
        assert not engine.cancel(job.id)

    def test_awaiting_asyncio_job_is_cancelled(
        self, engine: Engine, recorder: Recorder, cancelled_signals: list[Job]
    ) -> None:
        """A running asyncio job's task is cancelled; the job is recorded CANCELLED,
        not retried, and its worker takes the next job."""
        started = threading.Event()
        seen: list[BaseException] = []
        done: list[str] = []

        @engine.task(name="waits", max_retries=3)
        async def waits() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except BaseException as e:
                seen.append(e)
                raise

        @engine.task(name="next")
        async def next_one() -> None:
            done.append("next")

        job = engine.schedule(waits)
        engine.start_workers(number=1, block=False, workers_class=AsyncioWorkers)
        assert started.wait(10)
        engine.schedule(next_one)
        assert engine.cancel(job)
        wait_for(lambda: done == ["next"], timeout=10)
        assert [type(e) for e in seen] == [asyncio.CancelledError]
        assert status(engine, job) is JobStatus.CANCELLED
        assert [j.id for j in cancelled_signals] == [job.id]
        assert recorder.of(job.id) == ["job_started", "job_finished"]
        assert engine.failed_jobs() == []

    @pytest.mark.parametrize("kind", ["threads", "asyncio"])
    def test_job_swallowing_the_cancel_stays_cancelled(
        self, engine: Engine, recorder: Recorder, kind: str
    ) -> None:
        """A task that swallows the cancellation and returns is still CANCELLED, and
        its worker goes on."""
        started = threading.Event()
        swallowed = threading.Event()

        if kind == "threads":

            @engine.task(name="stubborn", max_retries=2)
            def stubborn() -> None:
                started.set()
                try:
                    while True:
                        time.sleep(0.01)
                except BaseException:
                    swallowed.set()

        else:

            @engine.task(name="stubborn", max_retries=2)
            async def stubborn() -> None:
                started.set()
                try:
                    await asyncio.sleep(3600)
                except BaseException:
                    swallowed.set()

        job = engine.schedule("stubborn")
        workers = ThreadWorkers if kind == "threads" else AsyncioWorkers
        engine.start_workers(number=1, block=False, workers_class=workers)
        assert started.wait(10)
        assert engine.cancel(job)
        assert swallowed.wait(10)
        wait_for(lambda: "job_finished" in recorder.of(job.id), timeout=10)
        engine.stop_workers()
        assert status(engine, job) is JobStatus.CANCELLED
        assert engine.failed_jobs() == []

    def test_cancelled_time_limited_asyncio_job_ends_before_the_next(self, engine: Engine) -> None:
        """A cancelled asyncio job under a time limit finishes its clean-up before
        its worker takes the next job."""
        started = threading.Event()
        events: list[str] = []

        @engine.task(name="cleans_up", time_limit=timedelta(minutes=1))
        async def cleans_up() -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            finally:
                await asyncio.sleep(0.1)
                events.append("cleaned up")

        @engine.task(name="next")
        async def next_one() -> None:
            events.append("next")

        job = engine.schedule(cleans_up)
        engine.start_workers(number=1, block=False, workers_class=AsyncioWorkers)
        assert started.wait(10)
        engine.schedule(next_one)
        assert engine.cancel(job)
        wait_for(lambda: len(events) == 2, timeout=10)
        assert events == ["cleaned up", "next"]

    def test_cancel_crossing_the_hand_out_is_not_started(self, namespace: str) -> None:
        """A job cancelled after the broker handed it out, before the engine gave it
        to its workers, never starts."""
        ran: list[str] = []

        class CancellingBroker(MemoryBroker):
            def get_jobs_from_queue(self, queue: str, max_jobs: int) -> list[Job]:
                jobs = super().get_jobs_from_queue(queue, max_jobs)
                for job in jobs:
                    if job.task_name == "victim":
                        assert engine.cancel(job)
                return jobs

        engine = Engine(CancellingBroker(), namespace)
        engine.task(lambda: ran.append("victim"), name="victim")
        engine.task(lambda: ran.append("other"), name="other")
        victim = engine.schedule("victim")
        engine.schedule("other")
        engine.start_workers(number=2, stop_when_queue_empty=True)
        assert ran == ["other"]
        assert status(engine, victim) is JobStatus.CANCELLED

    def test_lost_news_is_made_up_by_the_heartbeat(self, namespace: str) -> None:
        """When the news of a cancel does not reach the worker (a dropped
        subscription), its next heartbeat finds the job no longer its own and
        CANCELLED, and stops it."""
        started = threading.Event()
        stopped: list[BaseException] = []

        class DeafBroker(MemoryBroker):
            def _jobs_cancelled(self, job_ids: list[str]) -> None:
                pass  # the news is lost

        engine = Engine(DeafBroker(), namespace, heartbeat_interval=0.05, dead_worker_timeout=10)

        @engine.task(name="sleepy")
        def sleepy() -> None:
            started.set()
            try:
                while True:
                    time.sleep(0.01)
            except BaseException as e:
                stopped.append(e)
                raise

        job = engine.schedule(sleepy)
        engine.start_workers(number=1, block=False)
        try:
            assert started.wait(10)
            assert engine.cancel(job)
            wait_for(lambda: stopped, timeout=10)
        finally:
            engine.stop_workers()
        assert [type(e) for e in stopped] == [JobCancelled]


class TestCancelWaiting:
    def test_queued_and_future_jobs_never_run(
        self, engine: Engine, cancelled_signals: list[Job]
    ) -> None:
        """Queued and future jobs cancelled never run; the others do."""
        ran: list[int] = []
        engine.task(lambda i: ran.append(i), name="note")
        queued = [engine.schedule("note", i) for i in range(3)]
        later = engine.schedule_at("note", engine.broker.now() + timedelta(hours=1), 9)
        assert engine.cancel(queued[1].id)
        assert engine.cancel(str(later.id))
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert ran == [0, 2]
        assert [status(engine, job) for job in (queued[1], later)] == [JobStatus.CANCELLED] * 2
        assert [j.status for j in cancelled_signals] == [JobStatus.QUEUED, JobStatus.WAITING]

    def test_unknown_ended_or_bad_ids_give_false(self, engine: Engine) -> None:
        """False for an unknown job, a job that ended, and a text that is no job id."""
        engine.task(lambda: None, name="noop")
        job = engine.schedule("noop")
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert not engine.cancel(job)
        assert not engine.cancel(uuid.uuid4())
        assert not engine.cancel("not-a-job-id")
        with pytest.raises(TypeError):
            engine.cancel(42)  # type: ignore[arg-type]

    def test_job_handed_out_but_not_started_never_starts(self) -> None:
        """Workers told of a cancelled job they hold but did not start drop it."""
        release = threading.Event()
        ran: list[str] = []
        collected: list[Job] = []
        workers = ThreadWorkers(1, "ns")
        try:
            first = Job("first", "q", datetime.now(timezone.utc), 0)
            first.task_func = lambda: (release.wait(10), ran.append("first"))
            second = Job("second", "q", datetime.now(timezone.utc), 0)
            second.task_func = lambda: ran.append("second")
            workers.submit_jobs([first, second])
            workers.cancel([str(second.id)])
            release.set()

            def all_collected() -> bool:
                collected.extend(workers.collect_finished())
                return workers.idle

            wait_for(all_collected, timeout=10)
        finally:
            workers.stop(10)
        assert ran == ["first"]
        assert collected == [first]


class TestInterrupts:
    def test_interrupt_before_the_call_raises_at_once(self) -> None:
        """A key cancelled before its call is armed never calls the function."""
        interrupts = Interrupts("test")
        calls: list[int] = []
        key = object()
        result, err = interrupts.run(key, None, calls.append, (1,), {}, {key})
        assert (result, calls) == (None, [])
        assert isinstance(err, JobCancelled)

    def test_interrupt_lands_in_the_call_only(self) -> None:
        """interrupt() raises in the armed call; after it, it does nothing."""
        interrupts = Interrupts("test")
        key = object()
        running = threading.Event()
        outcome: list[Any] = []

        def work() -> None:
            running.set()
            while True:
                time.sleep(0.001)

        thread = threading.Thread(
            target=lambda: outcome.append(interrupts.run(key, None, work, (), {}))
        )
        thread.start()
        assert running.wait(10)
        interrupts.interrupt(key)
        thread.join(10)
        assert not thread.is_alive()
        ((result, err),) = outcome
        assert result is None
        assert isinstance(err, JobCancelled)
        interrupts.interrupt(key)  # no longer armed: nothing happens
        assert interrupts.run(key, None, lambda: 7, (), {}) == (7, None)

    def test_no_cancel_escapes_with_threads_switching_all_the_time(self) -> None:
        """Jobs without a time limit cancelled at random, around their arming and
        their end, with threads switching every bytecode or so: the exception
        lands in the job or not at all, and only cancelled jobs get it."""
        interrupts = Interrupts("test")
        cancelled: set[object] = set()
        current: list[object] = [None, None, None]
        escaped: list[BaseException] = []
        outcomes: list[tuple[object, BaseException | None]] = []
        done = threading.Event()

        def work() -> int:
            return sum(range(50))

        def worker(index: int) -> None:
            for i in range(10_000):
                key = (index, i)
                current[index] = key
                try:
                    _, err = interrupts.run(key, None, work, (), {}, cancelled)
                    outcomes.append((key, err))
                    sum(range(50))  # the worker's own code, after the job
                except BaseException as e:
                    escaped.append(e)

        def canceller() -> None:
            turn = 0
            while not done.is_set():
                key = current[turn % 3]
                turn += 1
                if key is not None and turn % 7 == 0:
                    cancelled.add(key)
                    interrupts.interrupt(key)

        with threads_switching_all_the_time():
            threads = [threading.Thread(target=worker, args=(i,)) for i in range(3)]
            stopper = threading.Thread(target=canceller)
            stopper.start()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(120)
            done.set()
            stopper.join(10)
        assert escaped == []
        assert len(outcomes) == 30_000
        stopped = [key for key, err in outcomes if isinstance(err, JobCancelled)]
        assert stopped, "no job was interrupted: the test did not test anything"
        assert all(key in cancelled for key in stopped)
        assert all(err is None or isinstance(err, JobCancelled) for _, err in outcomes)


class TestUnique:
    def test_equal_job_while_one_waits_stores_nothing(self, engine: Engine) -> None:
        """While a unique job waits, scheduling an equal one (keyword order aside)
        returns its id; other arguments make another job; once the job ran, a new
        one is stored."""
        ran: list[Any] = []

        @engine.task(name="sync", unique=True)
        def sync(account: int, full: bool = False) -> None:
            ran.append((account, full))

        first = engine.schedule(sync, account=1, full=True)
        assert engine.schedule(sync, full=True, account=1).id == first.id
        assert engine.schedule("sync", account=1, full=True).id == first.id
        # Positional and keyword arguments are not the same JSON: another job.
        assert engine.schedule(sync, 1, full=True).id != first.id
        assert engine.schedule(sync, account=2).id != first.id
        assert engine.broker.count_jobs().queued == {"spinach": 3}
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert sorted(ran) == [(1, True), (1, True), (2, False)]
        assert engine.schedule(sync, account=1, full=True).id != first.id

    def test_batch_stores_one_of_equal_jobs(self, engine: Engine) -> None:
        """In a batch, equal unique jobs store one: each gets its id."""
        engine.task(lambda n: None, name="once", unique=True)
        batch = Batch()
        for _ in range(3):
            batch.schedule("once", 5)
        jobs = engine.schedule_batch(batch)
        assert len({job.id for job in jobs}) == 1
        assert engine.broker.count_jobs().queued == {"spinach": 1}

    def test_future_job_holds_its_key(self, engine: Engine) -> None:
        """A unique job waiting for its time holds its key too."""
        engine.task(lambda n: None, name="later", unique=True)
        later = engine.schedule_at("later", engine.broker.now() + timedelta(hours=1), 1)
        assert engine.schedule("later", 1).id == later.id

    @pytest.mark.parametrize("bad", ["yes", 1, None])
    def test_unique_must_be_a_bool(self, bad: Any) -> None:
        with pytest.raises(InvalidTaskError, match="unique must be True or False"):
            Tasks().task(lambda: None, name="t", unique=bad)

    def test_periodic_task_cannot_be_unique(self) -> None:
        with pytest.raises(InvalidTaskError, match="periodic task cannot be unique"):
            Tasks().task(lambda: None, name="t", unique=True, periodicity=timedelta(seconds=5))


class TestRateLimit:
    def test_held_back_jobs_do_not_hold_back_others(self, engine: Engine) -> None:
        """Jobs past the limit wait; a later job of another task passes them."""
        ran: list[str] = []
        done = threading.Event()
        engine.task(lambda: ran.append("a"), name="a", rate_limit=(2, timedelta(hours=1)))
        engine.task(lambda: done.set(), name="b")
        for _ in range(4):
            engine.schedule("a")
        engine.schedule("b")
        engine.start_workers(number=2, block=False)
        # The jobs are handed out in order: once b ran, every a was handed out
        # or held back.
        assert done.wait(10)
        wait_for(lambda: not engine.broker.count_jobs().running, timeout=10)
        assert ran == ["a", "a"]
        assert engine.broker.count_jobs().queued == {"spinach": 2}

    def test_every_held_back_job_runs_once_its_period_allows(self, engine: Engine) -> None:
        """Held-back jobs start as the starts leave the period, and an engine told
        to stop when its queue is empty waits for them."""
        ran: list[int] = []
        engine.task(lambda i: ran.append(i), name="a", rate_limit=(2, timedelta(milliseconds=200)))
        for i in range(6):
            engine.schedule("a", i)
        engine.start_workers(number=2, stop_when_queue_empty=True)
        assert sorted(ran) == list(range(6))

    @pytest.mark.parametrize(
        "bad",
        [
            5,
            (0, timedelta(seconds=1)),
            (True, timedelta(seconds=1)),
            (5, 60),
            (5,),
            (5, timedelta(0)),
            "5/m",
        ],
    )
    def test_rate_limit_must_be_starts_and_a_period(self, bad: Any) -> None:
        with pytest.raises(InvalidTaskError, match=r"rate_limit must be \(starts, period\)"):
            Tasks().task(lambda: None, name="t", rate_limit=bad)

    def test_rate_limit_given_as_a_list_is_a_tuple(self) -> None:
        tasks = Tasks()
        tasks.task(lambda: None, name="t", rate_limit=[5, timedelta(seconds=1)])  # type: ignore[arg-type]
        assert tasks.get("t").rate_limit == (5, timedelta(seconds=1))
