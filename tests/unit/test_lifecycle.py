"""The job lifecycle API on the MemoryBroker: get_job, get_result, and the failed store."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Callable

import pytest

from spinach import (
    AbortException,
    AsyncioWorkers,
    Engine,
    MemoryBroker,
    RetryException,
    Tasks,
    ThreadWorkers,
    _lifecycle,
)
from spinach.brokers.memory import MemoryStore
from spinach.clock import ManualClock
from spinach.exc import (
    ConfigurationError,
    InvalidTaskError,
    JobFailedError,
    UnknownJobError,
)
from spinach.job import Job, JobInfo, JobStatus
from spinach.testing import wait_for
from spinach.worker import Workers

from .conftest import Recorder, advance, advance_beating, all_done

KINDS = ["threads", "asyncio"]
WORKERS: dict[str, type[Workers]] = {"threads": ThreadWorkers, "asyncio": AsyncioWorkers}
#: Most seconds a call that must not wait may take, on a loaded machine.
AT_ONCE = 5.0


class Gate:
    """Holds a task until released: ``started`` is set when it runs."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def hold(self) -> None:
        self.started.set()
        if not self.release.wait(10):
            raise TimeoutError("the test never released the task")


@pytest.fixture
def gate(engine: Engine) -> Iterator[Gate]:
    # Depends on the engine: torn down first, so that a test failing while a
    # task is held never leaves stop_workers() waiting for it.
    gate = Gate()
    yield gate
    gate.release.set()


def make_task(engine: Engine, kind: str, name: str, body: Callable[..., Any], **opts: Any) -> str:
    """Register ``body`` as task ``name``: a plain def for thread workers, an
    async def (running ``body`` in a thread) for asyncio workers."""
    if kind == "threads":
        engine.task(body, name=name, **opts)
    else:

        async def run(*args: Any, **kwargs: Any) -> Any:
            return await asyncio.to_thread(body, *args, **kwargs)

        engine.task(run, name=name, **opts)
    return name


def record_looks(monkeypatch: pytest.MonkeyPatch, broker: MemoryBroker) -> list[JobStatus]:
    """From now on, the status of each look of ``broker.get_job`` (NOT_SET for None)
    in a list: once get_result looked at a job still running, it waits, and only a
    notification wakes it before its next look."""
    looks: list[JobStatus] = []
    get_job = broker.get_job

    def looking(job_id: str) -> JobInfo | None:
        info = get_job(job_id)
        looks.append(JobStatus.NOT_SET if info is None else info.status)
        return info

    monkeypatch.setattr(broker, "get_job", looking)
    return looks


def failed_ids(engine: Engine, *args: int) -> list[uuid.UUID]:
    return [info.id for info in engine.failed_jobs(*args)]


def failed_for_good(
    engine: Engine, recorder: Recorder, job_id: uuid.UUID, error_type: str
) -> JobInfo:
    """Check that the job is in the failed store once, with its error, seen by
    get_job too, and that job_failed was sent once for it; return its entry."""
    entries = [info for info in engine.failed_jobs() if info.id == job_id]
    assert len(entries) == 1, entries
    (info,) = entries
    assert info.status is JobStatus.FAILED
    assert info.error is not None
    assert info.error.type == error_type
    # The traceback text ends with the exception's line, at least.
    assert f"{error_type}: {info.error.message}" in info.error.traceback
    assert info.ended_at is not None
    assert engine.get_job(job_id) == info
    assert engine.get_job(str(job_id)) == info
    sent = [e for e in recorder.named("job_failed") if e.job_id == job_id]
    assert len(sent) == 1, sent
    return info


class TestGetJob:
    @pytest.mark.parametrize("kind", KINDS)
    def test_status_through_the_life_of_a_job(
        self,
        engine: Engine,
        broker: MemoryBroker,
        clock: ManualClock,
        gate: Gate,
        recorder: Recorder,
        kind: str,
    ) -> None:
        """get_job says WAITING, QUEUED, RUNNING, then SUCCEEDED with the result kept,
        and None once a job of a task keeping no result ended."""

        def hold(n: int) -> dict[str, Any]:
            gate.hold()
            return {"answer": [n, "x", None, 2.5]}

        keep = make_task(engine, kind, "keep", hold, keep_result=timedelta(minutes=5))
        forget = make_task(engine, kind, "forget", lambda: "not kept")
        future = engine.schedule_at(keep, clock.now() + timedelta(hours=1), 0)
        job = engine.schedule(keep, 42)
        other = engine.schedule(forget)

        waiting = engine.get_job(future.id)
        assert waiting is not None
        assert waiting.status is JobStatus.WAITING
        queued = engine.get_job(job.id)
        assert queued is not None
        assert (queued.id, queued.status, queued.task_name, queued.task_args) == (
            job.id,
            JobStatus.QUEUED,
            "keep",
            (42,),
        )
        assert (queued.retries, queued.started_at, queued.ended_at, queued.result) == (
            0,
            None,
            None,
            None,
        )
        # A UUID, its text and the job itself name the same job.
        assert engine.get_job(str(job.id)) == queued == engine.get_job(job)
        other_queued = engine.get_job(other)
        assert other_queued is not None
        assert other_queued.status is JobStatus.QUEUED

        engine.start_workers(number=1, block=False, workers_class=WORKERS[kind])
        assert gate.started.wait(10)
        running = engine.get_job(job.id)
        assert running is not None
        assert running.status is JobStatus.RUNNING
        assert running.started_at is not None
        assert running.result is None

        gate.release.set()
        assert engine.get_result(job.id, timeout=10) == {"answer": [42, "x", None, 2.5]}
        done = engine.get_job(str(job.id))
        assert done is not None
        assert done.status is JobStatus.SUCCEEDED
        assert done.result == {"answer": [42, "x", None, 2.5]}
        assert done.error is None
        assert done.ended_at is not None
        assert done.started_at is not None

        wait_for(lambda: recorder.of(other.id)[-1:] == ["job_finished"])
        wait_for(lambda: broker.count_jobs().running == 0 and not broker.count_jobs().queued)
        assert engine.get_job(other.id) is None
        still_waiting = engine.get_job(future)
        assert still_waiting is not None
        assert still_waiting.status is JobStatus.WAITING

    @pytest.mark.parametrize("text", ["not-a-uuid", "", "1234", str(uuid.uuid4())[:-1]])
    def test_text_that_is_not_a_job_id_gives_none(self, engine: Engine, text: str) -> None:
        """get_job of a str that is not a UUID is None, not an error."""
        assert engine.get_job(text) is None

    def test_unknown_job_gives_none(self, engine: Engine) -> None:
        """get_job of a UUID the broker never saw is None."""
        assert engine.get_job(uuid.uuid4()) is None
        assert engine.get_job(str(uuid.uuid4())) is None

    @pytest.mark.parametrize("bad", [42, None, 1.5, b"bytes", [uuid.uuid4()]])
    def test_other_types_raise_type_error(self, engine: Engine, bad: Any) -> None:
        """get_job of something neither a UUID, a str nor a Job raises TypeError."""
        with pytest.raises(TypeError, match="job id"):
            engine.get_job(bad)


class TestGetResult:
    def test_result_of_a_job_already_done(self, engine: Engine, broker: MemoryBroker) -> None:
        """get_result of a job that succeeded returns its value at once, even with timeout=0."""

        @engine.task(name="compute", keep_result=timedelta(minutes=5))
        def compute(a: int, b: int) -> dict[str, Any]:
            return {"sum": a + b, "parts": [a, b], "ok": True}

        job = engine.schedule(compute, 2, 3)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        expected = {"sum": 5, "parts": [2, 3], "ok": True}
        assert engine.get_result(job.id, timeout=0) == expected
        assert engine.get_result(str(job.id), timeout=0) == expected
        assert engine.get_result(job) == expected

    @pytest.mark.parametrize("outcome", ["succeeds", "fails"])
    @pytest.mark.parametrize("kind", KINDS)
    def test_waiting_get_result_is_woken_when_the_job_ends(
        self,
        engine: Engine,
        broker: MemoryBroker,
        gate: Gate,
        monkeypatch: pytest.MonkeyPatch,
        kind: str,
        outcome: str,
    ) -> None:
        """get_result called while the job runs returns as soon as it ends,
        woken by the broker's notification, not by its fallback look."""
        # The fallback look comes after 60 s instead of 5: only a notification
        # can make get_result return within the test's deadlines.
        monkeypatch.setattr(_lifecycle, "_LOOK_AGAIN", 60.0)

        def hold() -> str:
            gate.hold()
            if outcome == "fails":
                raise ValueError("failed after release")
            return "released"

        task = make_task(engine, kind, "hold", hold, keep_result=timedelta(minutes=5))
        job = engine.schedule(task)
        engine.start_workers(number=1, block=False, workers_class=WORKERS[kind])
        assert gate.started.wait(10)

        looks = record_looks(monkeypatch, broker)
        got: dict[str, Any] = {}

        def get() -> None:
            try:
                got["value"] = engine.get_result(job.id, timeout=30)
            except Exception as e:
                got["error"] = e
            got["at"] = time.monotonic()

        getter = threading.Thread(target=get, daemon=True)
        getter.start()
        # Release the task only once get_result saw the job running: it then
        # waits, and nothing but a notification wakes it within 60 s.
        wait_for(lambda: looks)
        assert looks[0] is JobStatus.RUNNING
        released = time.monotonic()
        gate.release.set()
        getter.join(10)
        assert not getter.is_alive(), "get_result was not woken when the job ended"
        assert got["at"] - released < 3
        if outcome == "succeeds":
            assert got == {"value": "released", "at": got["at"]}
        else:
            assert isinstance(got.get("error"), JobFailedError), got
            assert got["error"].error.type == "ValueError"
            assert got["error"].error.message == "failed after release"

    def test_get_result_on_another_engine_is_woken(
        self,
        engine: Engine,
        broker: MemoryBroker,
        store: MemoryStore,
        clock: ManualClock,
        gate: Gate,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A client engine sharing the store, without workers, gets the result of a job
        run by the worker engine as soon as it ends, woken by notification."""
        monkeypatch.setattr(_lifecycle, "_LOOK_AGAIN", 60.0)

        def hold(n: int) -> int:
            gate.hold()
            return n + 1

        engine.task(hold, name="hold", keep_result=timedelta(minutes=5))
        client = Engine(MemoryBroker(clock, store=store), engine.namespace)
        client.task(hold, name="hold", keep_result=timedelta(minutes=5))
        job = client.schedule("hold", 41)
        queued = client.get_job(job.id)
        assert queued is not None
        assert queued.status is JobStatus.QUEUED
        engine.start_workers(number=1, block=False)
        assert gate.started.wait(10)
        running = client.get_job(job.id)
        assert running is not None
        assert running.status is JobStatus.RUNNING
        looks = record_looks(monkeypatch, client.broker)
        got: dict[str, Any] = {}

        def get() -> None:
            got["value"] = client.get_result(job.id, timeout=30)
            got["at"] = time.monotonic()

        getter = threading.Thread(target=get, daemon=True)
        getter.start()
        wait_for(lambda: looks)
        assert looks[0] is JobStatus.RUNNING
        released = time.monotonic()
        gate.release.set()
        getter.join(10)
        assert not getter.is_alive(), "get_result of the client engine was not woken"
        assert got["value"] == 42
        assert got["at"] - released < 3

    @pytest.mark.parametrize("kind", KINDS)
    def test_job_that_failed_for_good_raises_job_failed_error(
        self,
        engine: Engine,
        broker: MemoryBroker,
        clock: ManualClock,
        recorder: Recorder,
        kind: str,
    ) -> None:
        """Once retries are exhausted, get_result raises JobFailedError with the
        error's type, message and a traceback showing the raising line."""
        runs: list[int] = []

        def always_fails() -> None:
            runs.append(1)
            raise ValueError(f"run {len(runs)} failed")

        task = make_task(
            engine, kind, "fails", always_fails, max_retries=1, keep_result=timedelta(minutes=5)
        )
        job = engine.schedule(task)
        engine.start_workers(number=1, block=False, workers_class=WORKERS[kind])
        wait_for(lambda: broker.count_jobs().future == 1)
        info = engine.get_job(job.id)
        assert info is not None
        assert info.status is JobStatus.WAITING
        assert info.retries == 1
        with pytest.raises(TimeoutError):
            engine.get_result(job.id, timeout=0)
        advance(clock, broker, 10)
        with pytest.raises(JobFailedError) as raised:
            engine.get_result(job.id, timeout=10)
        error = raised.value.error
        assert error.type == "ValueError"
        assert error.message == "run 2 failed"
        assert 'raise ValueError(f"run {len(runs)} failed")' in error.traceback
        assert error.traceback.rstrip().endswith("ValueError: run 2 failed")
        assert raised.value.job.id == job.id
        assert raised.value.job.status is JobStatus.FAILED
        assert raised.value.job.retries == 1
        assert "run 2 failed" in str(raised.value)
        assert len(runs) == 2
        failed_for_good(engine, recorder, job.id, "ValueError")

    def test_job_not_ended_times_out(
        self, engine: Engine, broker: MemoryBroker, clock: ManualClock
    ) -> None:
        """get_result raises TimeoutError after its timeout for a job still queued or waiting."""

        @engine.task(name="kept", keep_result=timedelta(minutes=5))
        def kept() -> int:
            return 1

        queued = engine.schedule(kept)
        future = engine.schedule_at(kept, clock.now() + timedelta(hours=1))
        for job, status in ((queued, "QUEUED"), (future, "WAITING")):
            start = time.monotonic()
            with pytest.raises(TimeoutError, match=status):
                engine.get_result(job.id, timeout=0.2)
            took = time.monotonic() - start
            assert 0.2 <= took < AT_ONCE
        info = engine.get_job(queued.id)
        assert info is not None
        assert info.status is JobStatus.QUEUED

    def test_negative_timeout_is_refused(self, engine: Engine) -> None:
        """get_result(timeout=-1) is a ConfigurationError, not an instant timeout."""
        with pytest.raises(ConfigurationError, match="timeout"):
            engine.get_result(uuid.uuid4(), timeout=-1)

    @pytest.mark.parametrize("job_id", [uuid.uuid4(), str(uuid.uuid4()), "not-a-uuid"])
    def test_unknown_job_raises_at_once(self, engine: Engine, job_id: Any) -> None:
        """get_result of an unknown id raises UnknownJobError without waiting for the timeout."""
        start = time.monotonic()
        with pytest.raises(UnknownJobError):
            engine.get_result(job_id, timeout=30)
        assert time.monotonic() - start < AT_ONCE
        assert issubclass(UnknownJobError, LookupError)

    def test_job_of_task_keeping_no_result_raises_at_once(
        self, engine: Engine, broker: MemoryBroker
    ) -> None:
        """get_result of a job whose task keeps no result raises UnknownJobError at once,
        before it ran and after."""

        @engine.task(name="forget")
        def forget() -> int:
            return 1

        job = engine.schedule(forget)
        start = time.monotonic()
        with pytest.raises(UnknownJobError, match="keep_result"):
            engine.get_result(job.id, timeout=30)
        assert time.monotonic() - start < AT_ONCE
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert engine.get_job(job.id) is None
        start = time.monotonic()
        with pytest.raises(UnknownJobError):
            engine.get_result(job.id, timeout=30)
        assert time.monotonic() - start < AT_ONCE


class TestKeepResult:
    def test_kept_result_expires(
        self, engine: Engine, broker: MemoryBroker, clock: ManualClock
    ) -> None:
        """A result is kept for keep_result, then get_job is None and get_result unknown."""

        @engine.task(name="answer", keep_result=timedelta(minutes=10))
        def answer() -> int:
            return 42

        job = engine.schedule(answer)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert engine.get_result(job.id, timeout=0) == 42
        clock.advance(timedelta(minutes=9, seconds=59))
        info = engine.get_job(job.id)
        assert info is not None
        assert info.result == 42
        assert engine.get_result(job.id, timeout=0) == 42
        clock.advance(timedelta(seconds=2))
        assert engine.get_job(job.id) is None
        start = time.monotonic()
        with pytest.raises(UnknownJobError):
            engine.get_result(job.id, timeout=30)
        assert time.monotonic() - start < AT_ONCE

    @pytest.mark.parametrize(
        "keep",
        [timedelta(0), timedelta(seconds=-1), timedelta(microseconds=1), 60, 60.0, "1h", True],
    )
    def test_bad_keep_result_is_refused(self, keep: Any) -> None:
        """keep_result must be a timedelta of 1 ms or more, else InvalidTaskError on registering."""
        tasks = Tasks()
        with pytest.raises(InvalidTaskError, match="keep_result"):

            @tasks.task(name="bad", keep_result=keep)
            def bad() -> None:
                pass

        assert "bad" not in tasks.tasks

    def test_keep_result_is_on_the_task(self) -> None:
        """A task registered with keep_result carries it; without, None."""
        tasks = Tasks()
        tasks.add(lambda: None, "kept", keep_result=timedelta(minutes=1))
        tasks.add(lambda: None, "plain")
        assert tasks.tasks["kept"].keep_result == timedelta(minutes=1)
        assert tasks.tasks["plain"].keep_result is None

    @pytest.mark.parametrize("kind", KINDS)
    def test_non_json_result_fails_the_job_without_retry(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder, kind: str
    ) -> None:
        """A task keeping its result that returns a non-JSON value fails for good with
        InvalidJobResultError naming the task and the path, even with retries left."""
        runs: list[int] = []

        def unstorable() -> dict[str, Any]:
            runs.append(1)
            return {"key": [object()]}

        task = make_task(
            engine, kind, "unstorable", unstorable, max_retries=3, keep_result=timedelta(minutes=5)
        )
        job = engine.schedule(task)
        engine.start_workers(number=1, stop_when_queue_empty=True, workers_class=WORKERS[kind])
        assert runs == [1]
        assert recorder.named("job_schedule_retry") == []
        info = failed_for_good(engine, recorder, job.id, "spinach.exc.InvalidJobResultError")
        assert info.error is not None
        assert "'unstorable'" in info.error.message
        assert "['key'][0]" in info.error.message
        assert info.retries == 0
        with pytest.raises(JobFailedError) as raised:
            engine.get_result(job.id, timeout=0)
        assert raised.value.error == info.error
        assert all_done(broker)

    def test_result_over_max_job_size_fails_the_job(
        self, broker: MemoryBroker, namespace: str, recorder: Recorder
    ) -> None:
        """A kept result larger than max_job_size once encoded fails its job for good,
        saying its size and the limit; a result within it is kept."""
        engine = Engine(broker, namespace, max_job_size=1_000)
        engine.task(lambda n: "x" * n, name="text", max_retries=2, keep_result=timedelta(hours=1))
        small, big = engine.schedule("text", 10), engine.schedule("text", 2_000)
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert engine.get_result(small, timeout=0) == "x" * 10
        info = failed_for_good(engine, recorder, big.id, "spinach.exc.InvalidJobResultError")
        assert info.error is not None
        assert "2,002 bytes once encoded, over the limit of 1,000 bytes" in info.error.message
        assert info.retries == 0


class TestFailingForGood:
    """Every way a job fails for good puts it in the failed store, and sends job_failed once."""

    @pytest.mark.parametrize("kind", KINDS)
    def test_retries_exhausted(
        self,
        engine: Engine,
        broker: MemoryBroker,
        recorder: Recorder,
        kind: str,
    ) -> None:
        """A job failing on every run lands in the failed store after its last retry."""

        def retry_now() -> None:
            # Due at once by the broker's clock: no need to move the clock.
            raise RetryException("still not ready", at=broker.now())

        task = make_task(engine, kind, "again", retry_now, max_retries=2)
        job = engine.schedule(task)
        engine.start_workers(number=1, stop_when_queue_empty=True, workers_class=WORKERS[kind])
        info = failed_for_good(engine, recorder, job.id, "spinach.exc.RetryException")
        assert info.retries == 2
        assert info.error is not None
        assert info.error.message == "still not ready"
        assert 'raise RetryException("still not ready", at=broker.now())' in info.error.traceback
        assert len(recorder.named("job_schedule_retry")) == 2
        assert all_done(broker)

    @pytest.mark.parametrize("kind", KINDS)
    def test_abort_exception(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder, kind: str
    ) -> None:
        """A job raising AbortException lands in the failed store at once, retries left."""

        def abort() -> None:
            raise AbortException("give up now")

        task = make_task(engine, kind, "abort", abort, max_retries=5)
        job = engine.schedule(task)
        engine.start_workers(number=1, stop_when_queue_empty=True, workers_class=WORKERS[kind])
        info = failed_for_good(engine, recorder, job.id, "spinach.exc.AbortException")
        assert info.retries == 0
        assert info.error is not None
        assert info.error.message == "give up now"
        assert 'raise AbortException("give up now")' in info.error.traceback
        assert recorder.named("job_schedule_retry") == []
        assert all_done(broker)

    def test_unknown_task(self, engine: Engine, broker: MemoryBroker, recorder: Recorder) -> None:
        """A stored job naming a task nobody registered lands in the failed store."""
        ghost = Job("ghost", "spinach", broker.now(), 3, (1,), {"k": "v"})
        broker.enqueue_jobs([ghost])
        engine.start_workers(number=1, stop_when_queue_empty=True)
        info = failed_for_good(engine, recorder, ghost.id, "spinach.exc.UnknownTask")
        assert info.error is not None
        assert "'ghost'" in info.error.message
        assert (info.task_name, info.task_args, info.task_kwargs) == ("ghost", (1,), {"k": "v"})
        assert recorder.named("job_schedule_retry") == []
        assert all_done(broker)

    def test_arguments_that_no_longer_bind(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """A stored job whose arguments do not fit its task's signature lands in the
        failed store without running."""
        runs: list[int] = []

        @engine.task(name="one", max_retries=3)
        def one(a: int) -> None:
            runs.append(a)

        stale = Job("one", "spinach", broker.now(), 3, (1, 2))
        broker.enqueue_jobs([stale])
        engine.start_workers(number=1, stop_when_queue_empty=True)
        info = failed_for_good(engine, recorder, stale.id, "spinach.exc.InvalidJobSignatureError")
        assert info.error is not None
        assert "'one'" in info.error.message
        assert runs == []
        assert recorder.named("job_schedule_retry") == []
        assert all_done(broker)

    def test_at_most_once_job_of_a_dead_worker(
        self,
        engine: Engine,
        broker: MemoryBroker,
        store: MemoryStore,
        clock: ManualClock,
        recorder: Recorder,
    ) -> None:
        """An at-most-once job whose worker died is adopted and lands in the failed store."""
        runs: list[int] = []
        engine.task(lambda: runs.append(1), name="most")
        most = engine.schedule("most")
        dead = MemoryBroker(clock, store=store)
        dead.namespace = engine.namespace
        dead.heartbeat()
        (taken,) = dead.get_jobs_from_queue("spinach", 1)
        assert taken.id == most.id
        engine.start_workers(number=1, block=False)
        advance_beating(clock, broker, 11)
        wait_for(lambda: failed_ids(engine) == [most.id])
        failed_for_good(engine, recorder, most.id, "spinach.exc.WorkerDiedError")
        assert runs == []
        wait_for(lambda: all_done(broker))

    def test_at_most_once_job_given_up_at_stop(
        self, engine: Engine, broker: MemoryBroker, gate: Gate, recorder: Recorder
    ) -> None:
        """An at-most-once job still running past the grace period lands in the failed store."""
        engine.task(lambda: gate.hold(), name="most")
        most = engine.schedule("most")
        engine.start_workers(number=1, block=False, grace_period=0.05)
        assert gate.started.wait(10)
        engine.stop_workers()
        info = failed_for_good(engine, recorder, most.id, "spinach.exc.WorkerDiedError")
        assert info.error is not None
        assert "still running" in info.error.message
        assert broker.count_jobs().running == 0
        # The task ending after it was given up changes nothing.
        gate.release.set()
        wait_for(lambda: recorder.of(most.id)[-1:] == ["job_finished"])
        assert failed_ids(engine) == [most.id]


def fail_jobs(engine: Engine, count: int) -> list[Job]:
    """Schedule ``count`` jobs of an at-most-once task that fails, and run them
    one by one: their failures are in this order."""
    if "doomed" not in engine._tasks.tasks:

        @engine.task(name="doomed")
        def doomed(i: int) -> None:
            raise ValueError(f"doomed {i}")

    jobs = [engine.schedule("doomed", i) for i in range(count)]
    engine.start_workers(number=1, stop_when_queue_empty=True)
    return jobs


class TestFailedStore:
    def test_failed_jobs_newest_first_with_limit_and_offset(
        self, engine: Engine, broker: MemoryBroker
    ) -> None:
        """failed_jobs(limit, offset) lists the latest failures first, a page at a time."""
        jobs = fail_jobs(engine, 5)
        ids = [job.id for job in reversed(jobs)]
        assert failed_ids(engine) == ids
        assert failed_ids(engine, 2) == ids[:2]
        assert failed_ids(engine, 2, 1) == ids[1:3]
        assert failed_ids(engine, 10, 4) == ids[4:]
        assert failed_ids(engine, 3, 5) == []
        assert failed_ids(engine, 0) == []
        assert [info.task_args for info in engine.failed_jobs()] == [(4,), (3,), (2,), (1,), (0,)]
        assert broker.count_jobs().failed == 5

    @pytest.mark.parametrize(
        ("limit", "offset"), [(-1, 0), (0, -1), (1.5, 0), (1, 0.5), ("3", 0), (None, 0), (True, 0)]
    )
    def test_bad_limit_or_offset_is_refused(self, engine: Engine, limit: Any, offset: Any) -> None:
        """failed_jobs with a limit or offset that is not an int of 0 or more is an error."""
        with pytest.raises(ConfigurationError, match="limit"):
            engine.failed_jobs(limit, offset)

    @pytest.mark.parametrize("method", ["requeue_failed", "purge_failed"])
    def test_text_that_is_not_a_job_id_is_an_error(self, engine: Engine, method: str) -> None:
        """requeue_failed and purge_failed refuse a text that is not a job id, naming it."""
        (job,) = fail_jobs(engine, 1)
        with pytest.raises(UnknownJobError, match="'typo' is not a job id"):
            getattr(engine, method)([job.id, "typo"])
        assert failed_ids(engine) == [job.id]

    def test_requeue_all_failed_jobs(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """requeue_failed() runs every failed job again, same id, retries back to 0,
        and empties the failed store."""
        failing = threading.Event()
        failing.set()
        runs: list[int] = []

        @engine.task(name="flaky", max_retries=1, keep_result=timedelta(minutes=5))
        def flaky(i: int) -> int:
            runs.append(i)
            if failing.is_set():
                raise RetryException("not yet", at=broker.now())
            return i * 10

        jobs = [engine.schedule(flaky, i) for i in range(3)]
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert sorted(runs) == [0, 0, 1, 1, 2, 2]
        assert sorted(failed_ids(engine)) == sorted(job.id for job in jobs)
        assert all(info.retries == 1 for info in engine.failed_jobs())

        failing.clear()
        assert engine.requeue_failed() == 3
        assert engine.failed_jobs() == []
        assert broker.count_jobs().failed == 0
        for i, job in enumerate(jobs):
            info = engine.get_job(job.id)
            assert info is not None
            assert (info.status, info.retries, info.task_args) == (JobStatus.QUEUED, 0, (i,))
        assert engine.requeue_failed() == 0

        engine.start_workers(number=1, stop_when_queue_empty=True)
        for i, job in enumerate(jobs):
            assert engine.get_result(job.id, timeout=0) == i * 10
            started = [e.retries for e in recorder.named("job_started") if e.job_id == job.id]
            assert started == [0, 1, 0]
        assert len(runs) == 9
        assert engine.failed_jobs() == []

    def test_requeue_some_failed_jobs(
        self, engine: Engine, broker: MemoryBroker, recorder: Recorder
    ) -> None:
        """requeue_failed([ids]) requeues those only, named by UUID, text or Job."""
        a, b, c, d = fail_jobs(engine, 4)
        assert engine.requeue_failed([b.id]) == 1
        assert failed_ids(engine) == [d.id, c.id, a.id]
        assert engine.requeue_failed([str(c.id), d, uuid.uuid4()]) == 2
        assert failed_ids(engine) == [a.id]
        # b is queued now, no longer failed: naming it again requeues nothing.
        assert engine.requeue_failed([b.id]) == 0
        for job in (b, c, d):
            info = engine.get_job(job.id)
            assert info is not None
            assert (info.status, info.retries, info.error) == (JobStatus.QUEUED, 0, None)
        assert broker.count_jobs().queued == {"spinach": 3}
        failed_before = len(recorder.named("job_failed"))
        engine.start_workers(number=1, stop_when_queue_empty=True)
        # They ran again, and failed again (the task still fails).
        assert len(recorder.named("job_failed")) == failed_before + 3
        assert sorted(failed_ids(engine)) == sorted([a.id, b.id, c.id, d.id])
        assert all(info.retries == 0 for info in engine.failed_jobs())

    def test_purge_failed_jobs(self, engine: Engine, broker: MemoryBroker) -> None:
        """purge_failed([ids]) and purge_failed() forget failed jobs and return how many."""
        a, b, c = fail_jobs(engine, 3)
        # An empty list, or ids of no failed job, name no job: not every job.
        assert engine.purge_failed([]) == 0
        assert engine.purge_failed([uuid.uuid4()]) == 0
        assert engine.requeue_failed([]) == 0
        assert broker.count_jobs().failed == 3
        assert engine.purge_failed([a.id]) == 1
        assert engine.purge_failed([a.id]) == 0
        assert engine.get_job(a.id) is None
        assert failed_ids(engine) == [c.id, b.id]
        assert broker.count_jobs().failed == 2
        assert engine.purge_failed() == 2
        assert engine.failed_jobs() == []
        assert engine.get_job(b.id) is None
        assert engine.get_job(c.id) is None
        assert broker.count_jobs().failed == 0
        assert engine.purge_failed() == 0
        assert engine.requeue_failed([b.id]) == 0

    def test_requeue_all_steps_over_an_unreadable_job(
        self, engine: Engine, broker: MemoryBroker
    ) -> None:
        """requeue_failed() leaves a failed job whose payload cannot be read (no queue
        to go to) in the store, and requeues every other one."""

        @engine.task(name="doomed")
        def doomed(i: int) -> None:
            raise ValueError(f"doomed {i}")

        jobs = [engine.schedule(doomed, i) for i in range(5)]
        payloads = broker.store.namespace(engine.namespace).payloads
        deep = "[" * 150 + "]" * 150
        payloads[str(jobs[2].id)] = payloads[str(jobs[2].id)].replace("[2]", f"[{deep}]")
        engine.start_workers(number=1, stop_when_queue_empty=True)
        assert sorted(failed_ids(engine)) == sorted(job.id for job in jobs)
        unreadable = engine.get_job(jobs[2].id)
        assert unreadable is not None
        assert unreadable.error is not None
        assert unreadable.error.type == "spinach.exc.UnreadableJobError"
        assert engine.requeue_failed() == 4
        assert failed_ids(engine) == [jobs[2].id]
        assert broker.count_jobs().queued == {"spinach": 4}
        assert engine.requeue_failed([jobs[2].id]) == 0

    def test_requeue_of_a_job_whose_id_is_stored_again(
        self, engine: Engine, broker: MemoryBroker
    ) -> None:
        """A failed job stored again under its id meanwhile only leaves the failed
        store on requeue_failed(), uncounted; every other failed job is requeued."""
        jobs = fail_jobs(engine, 5)
        broker.enqueue_jobs([jobs[4]])
        assert engine.requeue_failed() == 4
        assert failed_ids(engine) == []
        assert broker.count_jobs().queued == {"spinach": 5}


class TestFailedStoreBounds:
    def test_max_failed_keeps_the_newest(self, namespace: str, clock: ManualClock) -> None:
        """With max_failed=2, four failures keep the two latest and count two dropped."""
        broker = MemoryBroker(clock)
        engine = Engine(broker, namespace, max_failed=2)
        jobs = fail_jobs(engine, 4)
        assert failed_ids(engine) == [jobs[3].id, jobs[2].id]
        counts = broker.count_jobs()
        assert (counts.failed, counts.failed_dropped) == (2, 2)
        assert engine.get_job(jobs[0].id) is None

    def test_failures_older_than_keep_failed_are_purged(
        self, namespace: str, clock: ManualClock
    ) -> None:
        """Running workers purge failed jobs older than keep_failed, and keep newer ones."""
        broker = MemoryBroker(clock)
        engine = Engine(
            broker,
            namespace,
            heartbeat_interval=0.05,
            dead_worker_timeout=10,
            keep_failed=timedelta(hours=1),
        )
        (old,) = fail_jobs(engine, 1)
        assert failed_ids(engine) == [old.id]
        clock.advance(timedelta(hours=2))
        new = engine.schedule("doomed", 1)
        engine.start_workers(number=1, block=False)
        try:
            wait_for(lambda: failed_ids(engine) == [new.id])
        finally:
            engine.stop_workers()

    @pytest.mark.parametrize("max_failed", [0, -1, True, False, 1.5, "10"])
    def test_bad_max_failed_is_refused(self, max_failed: Any) -> None:
        """Engine(max_failed=...) must be an int above 0, or None."""
        with pytest.raises(ConfigurationError, match="max_failed"):
            Engine(MemoryBroker(), "bad", max_failed=max_failed)

    @pytest.mark.parametrize(
        "keep_failed", [timedelta(0), timedelta(seconds=-1), 3600, 3600.0, True, "7d"]
    )
    def test_bad_keep_failed_is_refused(self, keep_failed: Any) -> None:
        """Engine(keep_failed=...) must be a timedelta above 0, or None."""
        with pytest.raises(ConfigurationError, match="keep_failed"):
            Engine(MemoryBroker(), "bad", keep_failed=keep_failed)

    def test_none_means_no_bound(self) -> None:
        """Engine(keep_failed=None, max_failed=None) is accepted, leaving the store unbounded."""
        broker = MemoryBroker()
        Engine(broker, "unbounded", keep_failed=None, max_failed=None)
        assert broker.max_failed is None
