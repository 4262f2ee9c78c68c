"""Engine and workers end to end on the MemoryBroker: runs, retries, signals, stops."""

from __future__ import annotations

import logging
import os
import re
import signal
import sys
import threading
from collections.abc import Collection
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from spinach import AbortException, Engine, MemoryBroker, RetryException, ThreadWorkers, signals
from spinach.brokers.base import Heartbeat, RunningJobState
from spinach.brokers.memory import MemoryStore
from spinach.clock import ManualClock
from spinach.exc import (
    ConfigurationError,
    JobTooLargeError,
    UnknownTask,
    WorkerDiedError,
    WorkersError,
)
from spinach.job import Job, JobStatus
from spinach.testing import wait_for

from .conftest import Recorder, advance, advance_beating, all_done


class Runs:
    """Counts the runs of tasks, thread-safely."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, tuple[Any, ...]]] = []
        self.lock = threading.Lock()

    def add(self, name: str, *args: Any) -> None:
        with self.lock:
            self.calls.append((name, args))

    def count(self, name: str) -> int:
        with self.lock:
            return sum(1 for n, _ in self.calls if n == name)


@pytest.fixture
def runs() -> Runs:
    return Runs()


class TestRunning:
    def test_scheduled_jobs_run_once_each(
        self, engine: Engine, broker: MemoryBroker, runs: Runs
    ) -> None:
        """Every scheduled job runs exactly once, with its arguments."""

        @engine.task(name="record")
        def record(i: int, *, tag: str) -> None:
            runs.add("record", i, tag)

        for i in range(20):
            engine.schedule(record, i, tag="x")
        engine.start_workers(number=3, block=False)
        wait_for(lambda: all_done(broker))
        assert sorted(args for _, args in runs.calls) == [(i, "x") for i in range(20)]

    def test_stop_when_queue_empty_keeps_future_jobs_and_retries(
        self, engine: Engine, broker: MemoryBroker, clock: ManualClock, runs: Runs
    ) -> None:
        """Workers stop once the queue is empty; pending retries and future jobs stay stored."""

        @engine.task(name="flaky", max_retries=1)
        def flaky() -> None:
            runs.add("flaky")
            raise ValueError("boom")

        engine.schedule(flaky)
        engine.schedule_at(flaky, clock.now() + timedelta(hours=1))
        engine.start_workers(number=2, stop_when_queue_empty=True)
        assert runs.count("flaky") == 1
        counts = broker.count_jobs()
        assert (counts.queued, counts.future, counts.running) == ({}, 2, 0)

    def test_workers_threads_are_named(
        self, engine: Engine, broker: MemoryBroker, namespace: str
    ) -> None:
        """Thread workers are named {namespace}-worker-{i}, i from 1."""
        names: list[str] = []

        @engine.task(name="who")
        def who() -> None:
            names.append(threading.current_thread().name)

        received: list[str] = []

        def on_start(sender: str, worker_name: str) -> None:
            received.append(worker_name)

        signals.worker_started.connect(on_start, sender=namespace, weak=False)
        try:
            engine.schedule(who)
            engine.start_workers(number=2, stop_when_queue_empty=True)
        finally:
            signals.worker_started.disconnect(on_start, sender=namespace)
        assert sorted(received) == [f"{namespace}-worker-1", f"{namespace}-worker-2"]
        assert names[0] in received

    def test_task_calling_sys_exit_does_not_kill_its_worker(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder, runs: Runs
    ) -> None:
        """A task raising SystemExit fails its job; the worker goes on with the next one."""

        @engine.task(name="quit")
        def quit_() -> None:
            sys.exit(3)

        @engine.task(name="after")
        def after() -> None:
            runs.add("after")

        engine.schedule(quit_)
        engine.schedule(after)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert runs.count("after") == 1
        (failed,) = recorder.named("job_failed")
        assert isinstance(failed.err, SystemExit)


class TestRetries:
    def test_retry_whose_arguments_became_non_json_fails_alone(
        self, engine: Engine, broker: MemoryBroker, runs: Runs, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A task that puts a non-JSON value in its own arguments and fails cannot be
        stored again: that job fails, and the engine goes on with the others."""

        @engine.task(name="spoil", max_retries=3)
        def spoil(items: list[Any]) -> None:
            items.append(object())
            raise ValueError("failing after spoiling my arguments")

        engine.task(lambda: runs.add("good"), name="good")
        engine.schedule(spoil, [])
        for _ in range(5):
            engine.schedule("good")
        with caplog.at_level(logging.ERROR, logger="spinach.worker"):
            engine.start_workers(number=1, block=True, stop_when_queue_empty=True)
        assert runs.count("good") == 5
        assert all_done(broker)
        assert "Could not settle the outcome" in caplog.text

    def test_retried_until_max_retries_then_failed(
        self, engine: Engine, broker: MemoryBroker, clock: ManualClock, recorder: Recorder
    ) -> None:
        """A failing at-least-once job runs max_retries + 1 times with backoff, then fails."""
        retry_delays: list[float] = []

        @engine.task(name="fail", max_retries=2)
        def fail() -> None:
            raise ValueError("always")

        def on_retry(sender: str, job: Job, err: BaseException) -> None:
            retry_delays.append((job.at - clock.now()).total_seconds())

        signals.job_schedule_retry.connect(on_retry, sender=engine.namespace, weak=False)
        try:
            job = engine.schedule(fail)
            engine.start_workers(number=2, block=False)
            wait_for(lambda: len(recorder.named("job_schedule_retry")) == 1)
            advance(clock, broker, 6)
            wait_for(lambda: len(recorder.named("job_schedule_retry")) == 2)
            advance(clock, broker, 12)
            # job_finished comes after job_failed, from the worker thread: wait for it.
            wait_for(lambda: len(recorder.named("job_finished")) == 3)
        finally:
            signals.job_schedule_retry.disconnect(on_retry, sender=engine.namespace)
        assert recorder.of(job.id) == [
            "job_started",
            "job_schedule_retry",
            "job_finished",
            "job_started",
            "job_schedule_retry",
            "job_finished",
            "job_started",
            "job_failed",
            "job_finished",
        ]
        assert 3 <= retry_delays[0] <= 6
        assert 6 <= retry_delays[1] <= 12
        (failed,) = recorder.named("job_failed")
        assert failed.retries == 2
        assert isinstance(failed.err, ValueError)
        wait_for(lambda: all_done(broker))

    @pytest.mark.parametrize("aware", [False, True])
    def test_retry_exception_at(
        self,
        engine: Engine,
        broker: MemoryBroker,
        clock: ManualClock,
        recorder: Recorder,
        aware: bool,
    ) -> None:
        """RetryException(at=...) retries at that time; a naive `at` is UTC."""
        at = clock.now() + timedelta(seconds=30)
        at = at.astimezone(timezone(timedelta(hours=-5))) if aware else at.replace(tzinfo=None)
        seen: list[Any] = []

        @engine.task(name="later", max_retries=1)
        def later() -> None:
            if not seen:
                seen.append(1)
                raise RetryException("not yet", at=at)

        def on_retry(sender: str, job: Job, err: BaseException) -> None:
            seen.append(job.at)

        signals.job_schedule_retry.connect(on_retry, sender=engine.namespace, weak=False)
        try:
            job = engine.schedule(later)
            engine.start_workers(number=1, block=False)
            wait_for(lambda: broker.count_jobs().future == 1)
            assert seen[1] == at.replace(tzinfo=timezone.utc) if not aware else at
            assert seen[1].tzinfo is timezone.utc
            advance(clock, broker, 29)
            advance(clock, broker, 1)
            wait_for(lambda: recorder.of(job.id)[-1:] == ["job_finished"] and all_done(broker))
        finally:
            signals.job_schedule_retry.disconnect(on_retry, sender=engine.namespace)
        assert recorder.of(job.id).count("job_started") == 2
        assert recorder.named("job_failed") == []

    def test_retry_exception_counts_against_max_retries(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """A task always asking for a retry stops after max_retries retries."""

        @engine.task(name="again", max_retries=2)
        def again() -> None:
            raise RetryException("again", at=broker.now())

        engine.schedule(again)
        engine.start_workers(number=1, block=False)
        wait_for(lambda: recorder.named("job_failed"))
        assert len(recorder.named("job_started")) == 3

    def test_abort_exception_fails_at_once(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """AbortException fails the job with retries left."""

        @engine.task(name="abort", max_retries=5)
        def abort() -> None:
            raise AbortException("give up")

        engine.schedule(abort)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert [e.signal for e in recorder.events] == ["job_started", "job_failed", "job_finished"]
        assert all_done(broker)

    def test_at_most_once_job_never_runs_twice(
        self, engine: Engine, broker: MemoryBroker, clock: ManualClock, recorder: Recorder
    ) -> None:
        """With max_retries=0 a failing job runs once and is failed."""

        @engine.task(name="once")
        def once() -> None:
            raise ValueError("once")

        engine.schedule(once)
        engine.start_workers(number=2, stop_when_queue_empty=True)
        advance(clock, broker, 3600)
        assert broker.move_future_jobs() is None
        assert [e.signal for e in recorder.events] == ["job_started", "job_failed", "job_finished"]
        assert all_done(broker)

    def test_outcomes_are_logged(
        self, engine: Engine, broker: MemoryBroker, caplog: pytest.LogCaptureFixture
    ) -> None:
        """INFO for start and finish, WARNING with traceback for a retry, ERROR for a failure."""

        @engine.task(name="ok")
        def ok() -> None:
            pass

        @engine.task(name="bad", max_retries=1)
        def bad() -> None:
            raise KeyError("missing")

        engine.schedule(ok)
        engine.schedule(bad)
        engine.schedule(bad)
        with caplog.at_level(logging.INFO, logger="spinach"):
            engine.start_workers(number=1, stop_when_queue_empty=True)
            for job in broker.get_jobs_from_queue("spinach", 0):
                raise AssertionError(job)
        infos = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO]
        assert any(m.startswith("Starting execution of Job <ok") for m in infos)
        assert any(m.startswith("Finished execution of Job <ok") for m in infos)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2
        assert all(r.exc_info for r in warnings)
        assert "retry in" in warnings[0].getMessage()


class TestSignals:
    def test_sender_is_the_namespace(
        self, engine: Engine, broker: MemoryBroker, namespace: str
    ) -> None:
        """connect() receives every namespace's signals, connect_via(ns) only that one's."""
        everywhere: list[str] = []
        elsewhere: list[str] = []

        def on_any(sender: str, job: Job) -> None:
            everywhere.append(sender)

        def on_other(sender: str, job: Job) -> None:
            elsewhere.append(sender)

        signals.job_finished.connect(on_any, weak=False)
        signals.job_finished.connect(on_other, sender="another-namespace", weak=False)
        try:
            engine.task(lambda: None, name="noop")
            engine.schedule("noop")
            engine.start_workers(number=1, stop_when_queue_empty=True)
        finally:
            signals.job_finished.disconnect(on_any)
            signals.job_finished.disconnect(on_other, sender="another-namespace")
        assert everywhere == [namespace]
        assert elsewhere == []

    def test_raising_receiver_does_not_break_the_job(
        self,
        engine: Engine,
        broker: MemoryBroker,
        recorder: Recorder,
        caplog: pytest.LogCaptureFixture,
    ) -> None:
        """A receiver that raises is logged; the job runs and succeeds."""
        done: list[int] = []

        def broken(sender: str, job: Job) -> None:
            raise RuntimeError("broken receiver")

        signals.job_started.connect(broken, sender=engine.namespace, weak=False)
        try:
            engine.task(lambda: done.append(1), name="work")
            engine.schedule("work")
            engine.start_workers(number=1, stop_when_queue_empty=True)
        finally:
            signals.job_started.disconnect(broken, sender=engine.namespace)
        assert done == [1]
        assert recorder.named("job_failed") == []
        assert any(
            r.name == "spinach.signals" and "broken receiver" in str(r.exc_info)
            for r in caplog.records
        )


class TestStartAndStop:
    def test_stop_lets_running_jobs_finish(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """stop_workers() stops fetching, waits for the running job and records it."""
        started, release = threading.Event(), threading.Event()
        order: list[str] = []

        @engine.task(name="slow")
        def slow() -> None:
            started.set()
            release.wait(10)
            order.append("job done")

        first = engine.schedule(slow)
        engine.schedule(slow)
        engine.start_workers(number=1, block=False)
        assert started.wait(10)
        stopper = threading.Thread(target=lambda: (engine.stop_workers(), order.append("stopped")))
        stopper.start()
        wait_for(engine._must_stop.is_set)
        release.set()
        stopper.join(10)
        assert order == ["job done", "stopped"]
        assert recorder.of(first.id) == ["job_started", "job_finished"]
        counts = broker.count_jobs()
        assert (counts.queued, counts.running) == ({"spinach": 1}, 0)

    def test_stop_from_inside_a_job(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """A job calling stop_workers() does not deadlock: the workers stop after it."""

        @engine.task(name="stopper")
        def stopper() -> None:
            engine.stop_workers()

        job = engine.schedule(stopper)
        engine.start_workers(number=1, block=True)
        assert recorder.of(job.id) == ["job_started", "job_finished"]
        assert all_done(broker)

    def test_outcomes_are_recorded_while_stopping(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """During a graceful stop, jobs that end are recorded at once, not after the last one."""
        started, release = threading.Event(), threading.Event()

        @engine.task(name="slow")
        def slow() -> None:
            started.set()
            release.wait(10)

        @engine.task(name="fast", max_retries=1, max_concurrency=1)
        def fast() -> None:
            started.wait(10)

        engine.schedule(slow)
        engine.schedule(fast)
        engine.start_workers(number=2, block=False)
        assert started.wait(10)
        stopper = threading.Thread(target=engine.stop_workers)
        stopper.start()
        try:
            wait_for(lambda: broker.count_jobs().running == 1)
            assert stopper.is_alive()
        finally:
            release.set()
            stopper.join(10)
        assert broker.count_jobs().running == 0

    def test_stop_from_a_receiver_in_the_engine_thread(
        self, engine: Engine, broker: MemoryBroker, namespace: str
    ) -> None:
        """A job_failed receiver calling stop_workers() in the engine's own thread does not hang."""

        def stop(sender: str, job: Job, err: BaseException) -> None:
            engine.stop_workers()

        signals.job_failed.connect(stop, sender=namespace, weak=False)
        try:
            broker.enqueue_jobs([Job("ghost", "spinach", broker.now(), 0)])
            engine.start_workers(number=1, block=True)
        finally:
            signals.job_failed.disconnect(stop, sender=namespace)
        assert all_done(broker)

    def test_second_sigint_interrupts_at_once(self, engine: Engine, broker: MemoryBroker) -> None:
        """A second SIGINT during a graceful stop raises KeyboardInterrupt, as Python does."""
        started, release = threading.Event(), threading.Event()

        @engine.task(name="stuck")
        def stuck() -> None:
            started.set()
            release.wait(10)

        engine.schedule(stuck)

        def interrupt_twice() -> None:
            started.wait(10)
            os.kill(os.getpid(), signal.SIGINT)
            wait_for(engine._must_stop.is_set)
            os.kill(os.getpid(), signal.SIGINT)

        killer = threading.Thread(target=interrupt_twice)
        killer.start()
        try:
            with pytest.raises(KeyboardInterrupt):
                engine.start_workers(number=1, block=True)
        finally:
            killer.join(10)
            release.set()
            engine.stop_workers()
        assert signal.getsignal(signal.SIGINT) is signal.default_int_handler

    def test_engine_restarts(self, engine: Engine, broker: MemoryBroker, runs: Runs) -> None:
        """Workers can be started again after a stop."""
        engine.task(lambda: runs.add("x"), name="x")
        engine.schedule("x")
        engine.start_workers(number=1, stop_when_queue_empty=True)
        engine.schedule("x")
        engine.start_workers(number=1, block=False)
        wait_for(lambda: runs.count("x") == 2)
        engine.stop_workers()
        engine.stop_workers()  # stopping stopped workers is harmless

    def test_start_twice_is_an_error(self, engine: Engine) -> None:
        """Starting running workers again says to stop them first."""
        engine.start_workers(number=1, block=False)
        with pytest.raises(WorkersError, match="stop_workers"):
            engine.start_workers(number=1, block=False)
        assert isinstance(WorkersError("x"), RuntimeError)

    @pytest.mark.parametrize("number", [0, -1])
    def test_number_must_be_positive(self, engine: Engine, number: int) -> None:
        """start_workers(number=0) is a ValueError naming the argument."""
        with pytest.raises(ConfigurationError, match="number"):
            engine.start_workers(number=number, block=False)

    def test_sigterm_stops_gracefully(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """With block=True, SIGTERM makes start_workers return after the running job ended."""
        started, release = threading.Event(), threading.Event()

        @engine.task(name="slow")
        def slow() -> None:
            started.set()
            release.wait(10)

        first = engine.schedule(slow)
        engine.schedule(slow)

        def terminate() -> None:
            started.wait(10)
            os.kill(os.getpid(), signal.SIGTERM)
            wait_for(engine._must_stop.is_set)
            release.set()

        previous = signal.getsignal(signal.SIGTERM)
        killer = threading.Thread(target=terminate)
        killer.start()
        engine.start_workers(number=1, block=True)
        killer.join()
        assert signal.getsignal(signal.SIGTERM) == previous
        assert recorder.of(first.id) == ["job_started", "job_finished"]
        assert broker.count_jobs().queued == {"spinach": 1}


class TestTaskKinds:
    def test_asyncio_workers_run_coroutines_concurrently(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """Three async jobs on three coroutine workers are all running at the same time."""
        import asyncio

        from spinach import AsyncioWorkers

        state: dict[str, Any] = {"running": 0}

        @engine.task(name="together")
        async def together() -> None:
            if "all_in" not in state:
                state["all_in"] = asyncio.Event()
            state["running"] += 1
            if state["running"] == 3:
                state["all_in"].set()
            await asyncio.wait_for(state["all_in"].wait(), 10)

        for _ in range(3):
            engine.schedule(together)
        engine.start_workers(number=3, workers_class=AsyncioWorkers, stop_when_queue_empty=True)
        assert len(recorder.named("job_finished")) == 3
        assert recorder.named("job_failed") == []

    def test_async_task_raising_cancelled_error_does_not_kill_workers(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder, runs: Runs
    ) -> None:
        """An async task raising CancelledError fails its job; the next job still runs."""
        import asyncio

        from spinach import AsyncioWorkers

        @engine.task(name="cancelled")
        async def cancelled() -> None:
            raise asyncio.CancelledError()

        @engine.task(name="after")
        async def after() -> None:
            runs.add("after")

        engine.schedule(cancelled)
        engine.schedule(after)
        engine.start_workers(number=1, workers_class=AsyncioWorkers, stop_when_queue_empty=True)
        assert runs.count("after") == 1
        (failed,) = recorder.named("job_failed")
        assert isinstance(failed.err, asyncio.CancelledError)

    def test_plain_function_refused_by_asyncio_workers(self, engine: Engine) -> None:
        """Starting asyncio workers on a queue with a plain def task is a clear error."""
        from spinach import AsyncioWorkers
        from spinach.exc import InvalidTaskTypeError

        engine.task(lambda: None, name="plain")
        with pytest.raises(InvalidTaskTypeError, match=r"'plain'.*ThreadWorkers"):
            engine.start_workers(workers_class=AsyncioWorkers, block=False)

    def test_coroutine_refused_by_thread_workers(self, engine: Engine) -> None:
        """Starting thread workers on a queue with an async def task is a clear error."""
        from spinach.exc import InvalidTaskTypeError

        async def coro() -> None:
            pass

        engine.task(coro, name="coro")
        with pytest.raises(InvalidTaskTypeError, match=r"'coro'.*AsyncioWorkers"):
            engine.start_workers(block=False)

    def test_plain_job_reaching_asyncio_workers_fails_without_running(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder, runs: Runs
    ) -> None:
        """A job of a plain def task found in an asyncio queue fails once, not run, not retried."""
        from spinach import AsyncioWorkers
        from spinach.exc import InvalidTaskTypeError

        engine.task(lambda: runs.add("plain"), name="plain", queue="threads", max_retries=3)
        broker.enqueue_jobs([Job("plain", "spinach", broker.now(), 3)])
        engine.start_workers(workers_class=AsyncioWorkers, stop_when_queue_empty=True)
        (failed,) = recorder.named("job_failed")
        assert isinstance(failed.err, InvalidTaskTypeError)
        assert runs.count("plain") == 0
        assert all_done(broker)

    def test_job_not_matching_the_signature_fails_at_once(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder, runs: Runs
    ) -> None:
        """A stored job whose arguments no longer fit its task fails without running or retrying."""
        from spinach.exc import InvalidJobSignatureError

        engine.task(lambda a: runs.add("one", a), name="one", max_retries=3)
        broker.enqueue_jobs([Job("one", "spinach", broker.now(), 3, (1, 2))])
        engine.start_workers(number=1, stop_when_queue_empty=True)
        (failed,) = recorder.named("job_failed")
        assert isinstance(failed.err, InvalidJobSignatureError)
        assert runs.count("one") == 0
        assert all_done(broker)

    def test_task_code_raising_spinach_errors_is_retried(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """UnknownTask raised by a task's own code is an ordinary failure: the job is retried."""
        from spinach.exc import UnknownTask as Unknown

        @engine.task(name="schedules_missing", max_retries=1)
        def schedules_missing() -> None:
            raise Unknown("not deployed yet")

        engine.schedule(schedules_missing)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert len(recorder.named("job_schedule_retry")) == 1
        assert recorder.named("job_failed") == []

    def test_job_of_unknown_task_fails(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """A job naming a task this worker does not know fails with an error naming it."""
        broker.enqueue_jobs([Job("ghost", "spinach", broker.now(), 3)])
        engine.start_workers(number=1, stop_when_queue_empty=True)
        (failed,) = recorder.named("job_failed")
        assert isinstance(failed.err, UnknownTask)
        assert "'ghost'" in str(failed.err)
        assert all_done(broker)

    def test_unreadable_job_fails_and_is_set_aside(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder, runs: Runs
    ) -> None:
        """A stored job that cannot be read fails with job_failed, set aside; the rest run."""
        from spinach.exc import UnreadableJobError

        engine.task(lambda i: runs.add("ok", i), name="ok", max_retries=3)
        poison = engine.schedule("ok", 0)
        for i in range(1, 6):
            engine.schedule("ok", i)
        payloads = broker.store.namespace(engine.namespace).payloads
        deep = "[" * 150 + "]" * 150
        damaged = payloads[str(poison.id)].replace("[0]", f"[{deep}]")
        payloads[str(poison.id)] = damaged
        engine.start_workers(number=2, stop_when_queue_empty=True)
        assert sorted(args for _, args in runs.calls) == [(i,) for i in range(1, 6)]
        assert recorder.of(poison.id) == ["job_failed"]
        (failed,) = recorder.named("job_failed")
        assert isinstance(failed.err, UnreadableJobError)
        assert "more than 100 deep" in str(failed.err)
        (kept,) = engine.failed_jobs()
        assert (kept.id, kept.status, kept.task_name) == (poison.id, JobStatus.FAILED, "")
        assert kept.error is not None
        assert kept.error.type == "spinach.exc.UnreadableJobError"
        assert (
            broker.store.namespace(engine.namespace)
            .failed[str(poison.id)][1]
            .endswith("\n" + damaged)
        )
        assert all_done(broker)


class TestSharedStore:
    def test_namespaces_do_not_see_each_other(
        self, store: MemoryStore, clock: ManualClock, runs: Runs
    ) -> None:
        """Two engines with different namespaces in one interpreter run only their own jobs."""
        one = Engine(MemoryBroker(clock, store=store), "one")
        two = Engine(MemoryBroker(clock, store=store), "two")
        for engine in (one, two):
            engine.task(lambda ns=engine.namespace: runs.add(ns), name="job")
        one.schedule("job")
        one.schedule("job")
        two.schedule("job")
        two.start_workers(number=2, stop_when_queue_empty=True)
        assert runs.calls == [("two", ())]
        one.start_workers(number=2, stop_when_queue_empty=True)
        assert runs.count("one") == 2

    def test_jobs_of_a_dead_worker_are_recovered(
        self,
        engine: Engine,
        broker: MemoryBroker,
        store: MemoryStore,
        clock: ManualClock,
        recorder: Recorder,
        runs: Runs,
    ) -> None:
        """A dead worker's at-least-once job is re-run, its at-most-once job reported failed."""
        engine.task(lambda: runs.add("least"), name="least", max_retries=2)
        engine.task(lambda: runs.add("most"), name="most")
        least, most = engine.schedule("least"), engine.schedule("most")
        dead = MemoryBroker(clock, store=store)
        dead.namespace = engine.namespace
        dead.heartbeat()
        taken = dead.get_jobs_from_queue("spinach", 2)
        engine.start_workers(number=2, block=False)
        advance_beating(clock, broker, 11)
        wait_for(lambda: runs.count("least") == 1 and recorder.named("job_failed"))
        wait_for(lambda: all_done(broker))
        assert runs.count("most") == 0
        (failed,) = recorder.named("job_failed")
        assert failed.job_id == most.id
        assert isinstance(failed.err, WorkerDiedError)
        assert [e.retries for e in recorder.named("job_started")] == [1]
        assert recorder.of(least.id) == [
            "job_schedule_retry",
            "job_started",
            "job_finished",
        ]
        # The dead worker comes back and tries to record its outcomes: refused.
        for job in taken:
            job.status = JobStatus.SUCCEEDED
            assert dead.remove_job_from_running(job) is RunningJobState.NOT_OURS


class TestPeriodicAndConcurrency:
    def test_periodic_task_runs_once_per_period(
        self, engine: Engine, broker: MemoryBroker, clock: ManualClock, runs: Runs
    ) -> None:
        """Workers schedule a periodic task themselves, once per period."""
        engine.task(lambda: runs.add("tick"), name="tick", periodicity=timedelta(minutes=1))
        engine.start_workers(number=2, block=False)
        advance(clock, broker, 60)
        wait_for(lambda: runs.count("tick") == 1)
        advance(clock, broker, 600)
        wait_for(lambda: runs.count("tick") == 2)
        wait_for(lambda: broker.count_jobs().running == 0)
        assert runs.count("tick") == 2

    def test_concurrency_limit_holds_across_workers(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """A task limited to 2 never has more than 2 jobs running, even with 4 workers free."""
        state = {"running": 0, "max": 0}
        cond = threading.Condition()

        @engine.task(name="limited", max_retries=1, max_concurrency=2)
        def limited() -> None:
            with cond:
                state["running"] += 1
                state["max"] = max(state["max"], state["running"])
                cond.notify_all()
                # Hold until another job runs too, to give a broken limit a chance to show.
                cond.wait_for(lambda: state["running"] >= 3, timeout=0.2)
                state["running"] -= 1

        for _ in range(8):
            engine.schedule(limited)
        engine.start_workers(number=4, stop_when_queue_empty=True)
        assert len(recorder.named("job_finished")) == 8
        assert recorder.named("job_failed") == []
        assert state["max"] == 2


class FlakyBroker(MemoryBroker):
    """A MemoryBroker whose heartbeats fail while ``down`` is set, as during an outage."""

    def __init__(self, clock: ManualClock, store: MemoryStore) -> None:
        super().__init__(clock, store=store)
        self.down = threading.Event()
        self.heartbeats = 0
        self.failures = 0
        self.registrations = 0

    def heartbeat(self, held: Collection[Job] = ()) -> Heartbeat:
        if self.down.is_set():
            self.failures += 1
            raise ConnectionError("broker out of reach")
        beat = super().heartbeat(held)
        self.heartbeats += 1
        return beat

    def set_concurrency_limits(self, tasks: Any) -> None:
        self.registrations += 1
        super().set_concurrency_limits(tasks)


class TestOutages:
    def test_no_takeover_right_after_an_outage(
        self, store: MemoryStore, clock: ManualClock, namespace: str, recorder: Recorder
    ) -> None:
        """After an outage, tasks are registered again and silent workers get a full timeout."""
        broker = FlakyBroker(clock, store)
        engine = Engine(broker, namespace, heartbeat_interval=0.01, dead_worker_timeout=10)
        engine.task(lambda: None, name="least", max_retries=2)
        job = engine.schedule("least")
        other = MemoryBroker(clock, store=store)
        other.namespace = namespace
        other.heartbeat()
        other.get_jobs_from_queue("spinach", 1)
        engine.start_workers(number=1, block=False)
        try:
            broker.down.set()
            clock.advance(11)
            wait_for(lambda: broker.failures >= 1)
            broker.down.clear()
            seen = broker.heartbeats
            wait_for(lambda: broker.heartbeats >= seen + 3)
            assert broker.registrations == 2
            assert recorder.of(job.id) == []
            advance_beating(clock, broker, 10)
            wait_for(lambda: recorder.of(job.id)[-1:] == ["job_finished"])
            assert recorder.of(job.id)[0] == "job_schedule_retry"
        finally:
            engine.stop_workers()


class BrokenMoveBroker(MemoryBroker):
    """A MemoryBroker whose moves of future jobs always fail, as on a damaged key."""

    def __init__(self) -> None:
        super().__init__()
        self.moves = 0

    def move_future_jobs(self) -> float | None:
        self.moves += 1
        raise RuntimeError("a damaged key")


class TestFutureJobsFailing:
    def test_ready_jobs_flow_while_moving_future_jobs_fails(
        self, namespace: str, runs: Runs, caplog: pytest.LogCaptureFixture
    ) -> None:
        """A move of future jobs that keeps failing is logged and backed off; the
        fetch of ready jobs goes on."""
        broker = BrokenMoveBroker()
        engine = Engine(broker, namespace)
        engine.task(lambda i: runs.add("job", i), name="job")
        for i in range(20):
            engine.schedule("job", i)
        with caplog.at_level(logging.ERROR, "spinach"):
            engine.start_workers(number=2, stop_when_queue_empty=True)
        assert runs.count("job") == 20
        assert broker.moves >= 1
        assert "Could not move future jobs" in caplog.text


class TestDeathNeedsEvidence:
    @pytest.mark.parametrize("other_comes_back", [True, False])
    def test_a_stall_gives_everyone_a_fresh_timeout(
        self,
        engine: Engine,
        broker: MemoryBroker,
        store: MemoryStore,
        clock: ManualClock,
        recorder: Recorder,
        other_comes_back: bool,
    ) -> None:
        """After a gap in its own heartbeats, an engine waits a whole timeout of
        heartbeats on schedule before declaring anyone dead."""
        engine.task(lambda: None, name="least", max_retries=2)
        job = engine.schedule("least")
        other = MemoryBroker(clock, store=store)
        other.namespace = engine.namespace
        other.heartbeat()
        (taken,) = other.get_jobs_from_queue("spinach", 1)
        engine.start_workers(number=1, block=False)
        advance_beating(clock, broker, 4)
        # A stall: 7 s pass between two heartbeats of the engine (Redis frozen,
        # or this process). The other worker's last heartbeat is now 11 s old.
        advance(clock, broker, 7)
        beats = store.namespace(engine.namespace).workers
        wait_for(lambda: beats[broker.worker_id] >= clock.time() - 1e-3)
        if other_comes_back:
            other.heartbeat()
        for _ in range(4):
            advance_beating(clock, broker, 2)
            if other_comes_back:
                other.heartbeat([taken])
        assert recorder.of(job.id) == []
        if other_comes_back:
            assert other.heartbeat([taken]).lost == ()
            assert other.remove_job_from_running(taken) is RunningJobState.RECORDED
        else:
            # 10 s of heartbeats on schedule since the stall: now it is evidence.
            advance_beating(clock, broker, 3)
            wait_for(lambda: recorder.of(job.id)[-1:] == ["job_finished"])
            assert recorder.of(job.id)[0] == "job_schedule_retry"

    def test_heartbeat_interval_must_leave_room(self) -> None:
        """A heartbeat interval over a quarter of the timeout is refused, saying why."""
        with pytest.raises(ConfigurationError, match="at most a quarter of dead_worker_timeout"):
            Engine(MemoryBroker(), "x", heartbeat_interval=3, dead_worker_timeout=10)
        Engine(MemoryBroker(), "y", heartbeat_interval=2.5, dead_worker_timeout=10)


class TestGracePeriod:
    def test_jobs_running_past_the_grace_period_are_given_up(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """Past the grace period, at-least-once jobs are queued again, at-most-once ones fail."""
        started, release = threading.Barrier(3), threading.Event()

        def hold() -> None:
            started.wait(10)
            release.wait(10)

        engine.task(hold, name="least", max_retries=2)
        engine.task(hold, name="most")
        least, most = engine.schedule("least"), engine.schedule("most")
        engine.start_workers(number=2, block=False, grace_period=0.05)
        started.wait(10)
        try:
            engine.stop_workers()
        finally:
            release.set()
        assert recorder.of(least.id) == ["job_started", "job_schedule_retry"]
        assert recorder.of(most.id) == ["job_started", "job_failed"]
        assert isinstance(recorder.named("job_failed")[0].err, WorkerDiedError)
        (requeued,) = broker.get_jobs_from_queue("spinach", 10)
        assert (requeued.id, requeued.retries) == (least.id, 1)
        assert broker.count_jobs().running == 1  # only the job just fetched here

    def test_workers_never_start_an_abandoned_job(self, namespace: str) -> None:
        """A job waiting in the workers when they are given up is returned, and never runs."""
        from spinach import ThreadWorkers

        release, ran = threading.Event(), []
        workers = ThreadWorkers(1, namespace)
        clock_now = MemoryBroker().now()
        first = Job("a", "q", clock_now, 0)
        first.task_func = lambda: release.wait(10)
        second = Job("b", "q", clock_now, 0)
        second.task_func = lambda: ran.append(1)
        workers.submit_job(first)
        workers.submit_job(second)
        assert workers.stop(timeout=0.01) is False
        started, waiting = workers.abandon()
        release.set()
        assert [job.id for job in started] == [first.id]
        assert [job.id for job in waiting] == [second.id]
        assert workers.stop() is True
        assert ran == []
        assert workers.collect_finished() == []

    def test_negative_grace_period(self, engine: Engine) -> None:
        """A negative grace period is refused, naming the argument."""
        with pytest.raises(ConfigurationError, match="grace_period"):
            engine.start_workers(block=False, grace_period=-1)


class TestQueuedAhead:
    """Workers ask for more jobs than they have free workers only while jobs are short."""

    @staticmethod
    def run_jobs(workers: ThreadWorkers, func: Any, count: int) -> None:
        for _ in range(count):
            job = Job("t", "q", MemoryBroker().now(), 0)
            job.task_func = func
            workers.submit_job(job)
        finished = 0

        def all_back() -> bool:
            nonlocal finished
            finished += len(workers.collect_finished())
            return finished == count

        wait_for(all_back)

    def test_no_job_queued_ahead_before_any_ran(self) -> None:
        workers = ThreadWorkers(2, "ahead")
        try:
            assert workers.jobs_wanted == 2
        finally:
            workers.stop()

    def test_short_jobs_are_queued_ahead(self) -> None:
        """After quick jobs, up to 64 more jobs than 2 free workers are asked for."""
        workers = ThreadWorkers(2, "ahead")
        try:
            self.run_jobs(workers, lambda: None, 20)
            assert 2 < workers.jobs_wanted <= 2 + 64
        finally:
            workers.stop()

    def test_long_jobs_are_not_queued_ahead(self) -> None:
        """Jobs of 50 ms or more: one job per free worker, none waiting behind a busy one."""
        workers = ThreadWorkers(2, "ahead")
        never = threading.Event()
        try:
            self.run_jobs(workers, lambda: never.wait(0.05), 2)  # each runs for 50 ms
            assert workers.jobs_wanted == 2
        finally:
            workers.stop()


class TestStoppedWorkers:
    @pytest.mark.parametrize("kind", ["threads", "asyncio"])
    def test_jobs_submitted_after_stop_are_refused(self, kind: str) -> None:
        """Stopped workers raise WorkersError for a new job, as 0.0.25's did, not drop it."""
        from datetime import datetime

        from spinach import AsyncioWorkers

        workers = ThreadWorkers(1, "stopped") if kind == "threads" else AsyncioWorkers(1, "stopped")
        assert workers.stop(10)
        job = Job("t", "q", datetime.now(timezone.utc), 0)
        with pytest.raises(WorkersError, match="are stopping and take no new job"):
            workers.submit_jobs([job])
        assert workers.idle


def test_signals_read_as_in_0_0_25() -> None:
    """A signal's repr names it, as 0.0.25's did."""
    assert repr(signals.job_started) == 'SafeNamedSignal "job_started"'


class TestJobMeta:
    def test_scheduling_receivers_set_meta_that_workers_see(
        self, engine: Engine, broker: MemoryBroker
    ) -> None:
        """job_scheduling receivers set meta before the job is stored; the worker
        running it, get_job and the failed store see it; the task's kwargs do not."""
        seen: list[tuple[dict[str, str], dict[str, Any]]] = []
        engine.task(lambda **kwargs: seen.append(({}, kwargs)), name="work")

        def tag(namespace: str, job: Job) -> None:
            job.meta["request_id"] = f"req-{job.task_kwargs['n']}"

        def on_start(namespace: str, job: Job) -> None:
            seen.append((dict(job.meta), {}))

        signals.job_scheduling.connect(tag, sender=engine.namespace, weak=False)
        signals.job_started.connect(on_start, sender=engine.namespace, weak=False)
        try:
            job = engine.schedule("work", n=1)
            assert job.meta == {"request_id": "req-1"}
            info = engine.get_job(job)
            assert info is not None
            assert info.meta == {"request_id": "req-1"}
            engine.start_workers(number=1, stop_when_queue_empty=True)
        finally:
            signals.job_scheduling.disconnect(tag, sender=engine.namespace)
            signals.job_started.disconnect(on_start, sender=engine.namespace)
        assert seen == [({"request_id": "req-1"}, {}), ({}, {"n": 1})]

    @pytest.mark.parametrize(
        ("meta", "error", "message"),
        [
            ({"n": 1}, TypeError, "must map str to str, got 'n': 1"),
            ({f"k{i}": "v" for i in range(65)}, ValueError, "65 entries, over the bound of 64"),
            ({"k": "v" * 5000}, ValueError, "over the bound of 4096"),
            (None, TypeError, "must be a dict of str to str, got None"),
        ],
    )
    def test_bad_meta_from_a_receiver_is_a_clear_error(
        self, engine: Engine, meta: dict[str, Any], error: type[Exception], message: str
    ) -> None:
        """Meta that is not a small dict of str to str fails the scheduling call."""
        engine.task(lambda: None, name="work")

        def bad(namespace: str, job: Job) -> None:
            if meta is None:
                job.meta = None  # type: ignore[assignment]
            else:
                job.meta.update(meta)

        signals.job_scheduling.connect(bad, sender=engine.namespace, weak=False)
        try:
            with pytest.raises(error, match=re.escape(message)) as raised:
                engine.schedule("work")
        finally:
            signals.job_scheduling.disconnect(bad, sender=engine.namespace)
        assert "Task 'work': the meta set by job_scheduling" in str(raised.value)
        assert engine.broker.count_jobs().queued == {}

    def test_meta_counts_in_the_job_size_limit(self, broker: MemoryBroker) -> None:
        """A job whose meta takes it over max_job_size is refused like any other."""
        engine = Engine(broker, "small", max_job_size=1000)
        engine.task(lambda: None, name="work")

        def big(namespace: str, job: Job) -> None:
            job.meta["k"] = "v" * 3000

        signals.job_scheduling.connect(big, sender="small", weak=False)
        try:
            with pytest.raises(JobTooLargeError, match="over the limit of 1,000 bytes"):
                engine.schedule("work")
        finally:
            signals.job_scheduling.disconnect(big, sender="small")

    def test_meta_is_left_out_of_serialized_jobs_without_it(self) -> None:
        """Spinach 0.0.25 reads a job without meta, as it reads its own."""
        job = Job("t", "q", datetime.now(timezone.utc), 0)
        assert "meta" not in job.serialize()
        job.meta["k"] = "v"
        assert Job.deserialize(job.serialize()).meta == {"k": "v"}
        with pytest.raises(ValueError, match="the stored meta must map str to str"):
            Job.deserialize(job.serialize().replace('"v"', "1"))


def test_signals_call_who_is_connected_now() -> None:
    """A signal's remembered receivers follow connects and disconnects, and a
    weakly connected receiver still goes with its object."""
    import gc

    signal = signals.SafeNamedSignal("test-signal")
    calls: list[str] = []

    def first(sender: str) -> None:
        calls.append("first")

    def second(sender: str) -> None:
        calls.append("second")

    def called(sender: str) -> set[str]:
        calls.clear()
        signal.send(sender)
        return set(calls)

    signal.connect(first, weak=False)
    assert called("ns") == {"first"}
    signal.connect(second, sender="ns", weak=False)
    assert called("ns") == {"first", "second"}
    assert called("other") == {"first"}
    signal.disconnect(first)
    assert called("ns") == {"second"}

    class Listener:
        def on(self, sender: str) -> None:
            calls.append("listener")

    listener = Listener()
    signal.connect(listener.on)  # weakly
    assert called("ns") == {"second", "listener"}
    del listener
    gc.collect()
    assert called("ns") == {"second"}
