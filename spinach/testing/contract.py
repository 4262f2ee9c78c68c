"""The broker contract suite: what every :class:`~spinach.brokers.base.Broker` must do.

One class per broker operation, named after it; :class:`BrokerContract`
combines them. Bind it to a broker by subclassing it in a test module and
providing a ``make_broker`` fixture::

    class TestMyBroker(BrokerContract):
        @pytest.fixture
        def make_broker(self, clock):
            server = start_a_fresh_server()

            def make(namespace: str) -> Broker:
                broker = MyBroker(server, clock=clock)
                broker.namespace = namespace
                return broker

            return make

``make_broker(namespace)`` returns a new broker object, using the
``clock`` fixture, on storage that is shared by every broker the fixture
makes during one test and is empty when the test starts. Time is driven by
advancing ``clock``.
"""

from __future__ import annotations

import asyncio
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from datetime import timedelta
from typing import Any, TypeVar

import pytest

from ..brokers.base import Broker, QueueState, RunningJobState
from ..clock import ManualClock
from ..job import Job, JobError, JobInfo, JobStatus
from ..task import Task

__all__ = [
    "AdoptJobsOfDeadWorkersContract",
    "AsyncVariantsContract",
    "BrokerContract",
    "CancelJobContract",
    "CountJobsContract",
    "EnqueueJobsContract",
    "FailedJobsContract",
    "FlushContract",
    "GetJobContract",
    "GetJobsFromQueueContract",
    "HeartbeatContract",
    "InspectContract",
    "JobActivityContract",
    "MakeBroker",
    "MoveFutureJobsContract",
    "NamespaceContract",
    "PurgeFailedContract",
    "RecordOutcomesContract",
    "RegisterPeriodicTasksContract",
    "RemoveJobFromRunningContract",
    "RequeueFailedContract",
    "RetryJobContract",
    "SetConcurrencyLimitsContract",
    "SetRateLimitsContract",
    "WaitForEventContract",
    "WatchJobContract",
]

MakeBroker = Callable[[str], Broker]
_T = TypeVar("_T")

#: The start of the contract clock: any fixed, recent time works.
EPOCH = 1_790_000_000.0

#: Argument values that must come back exactly as they were given.
ROUND_TRIP_VALUES: list[Any] = [
    [],
    {},
    [[1, [2, [3, []]]], {"a": [{}]}],
    2**60,
    -(2**63),
    1 / 3,
    1e-300,
    "héllo wörld ✓ 日本語 \U0001f600",
    "x" * 100_000,
    None,
    True,
    "",
]


def _noop() -> None:
    """Stands for a task function."""


class _Base:
    """Fixtures and helpers shared by the contract classes."""

    @pytest.fixture
    def clock(self) -> ManualClock:
        return ManualClock(EPOCH)

    @pytest.fixture
    def make_broker(self, clock: ManualClock) -> MakeBroker:
        raise NotImplementedError(
            "Bind the contract to a broker: override the make_broker fixture "
            "(see the docstring of spinach.testing.contract)"
        )

    @pytest.fixture
    def namespace(self) -> str:
        return f"contract-{uuid.uuid4().hex[:8]}"

    @pytest.fixture
    def broker(self, make_broker: MakeBroker, namespace: str) -> Iterator[Broker]:
        broker = make_broker(namespace)
        yield broker
        broker.flush()

    @staticmethod
    def job(
        clock: ManualClock,
        task_name: str = "task",
        queue: str = "q",
        delay: float = 0,
        max_retries: int = 0,
        args: tuple[Any, ...] = (),
        kwargs: dict[str, Any] | None = None,
    ) -> Job:
        at = clock.now() + timedelta(seconds=delay)
        return Job(task_name, queue, at, max_retries, args, kwargs)

    @staticmethod
    def task(name: str, **settings: Any) -> Task:
        settings.setdefault("queue", "q")
        settings.setdefault("max_retries", 1)
        settings.setdefault("periodicity", None)
        return Task(_noop, name, **settings)

    @staticmethod
    def ids(jobs: list[Job]) -> list[uuid.UUID]:
        return [job.id for job in jobs]

    @staticmethod
    def info_ids(infos: list[JobInfo]) -> list[uuid.UUID]:
        return [info.id for info in infos]

    @staticmethod
    def error(message: str = "boom") -> JobError:
        """The error the engine keeps of ``ValueError(message)``."""
        trace = f"Traceback (most recent call last):\n  ...\nValueError: {message}\n"
        return JobError("builtins.ValueError", message, trace)

    @classmethod
    def fail(cls, job: Job, clock: ManualClock, message: str = "boom") -> Job:
        """Set on a handed-out job what the engine sets when it fails for good."""
        job.status = JobStatus.FAILED
        job.error = cls.error(message)
        job.started_at = job.ended_at = clock.now()
        return job

    @staticmethod
    def succeed(
        job: Job,
        clock: ManualClock,
        result_json: str | None = '{"a":[1,2]}',
        keep_result: float | None = 60.0,
    ) -> Job:
        """Set on a handed-out job what the engine sets when it succeeds; by
        default its task keeps the result for a minute."""
        job.status = JobStatus.SUCCEEDED
        job.keep_result = keep_result
        job.result_json = result_json
        job.started_at = job.ended_at = clock.now()
        return job

    def hand_out(
        self, broker: Broker, clock: ManualClock, queue: str = "q", **settings: Any
    ) -> Job:
        """Enqueue a new job in ``queue``, which holds no other ready job, and
        hand it out: the running job, as its worker holds it."""
        job = self.job(clock, queue=queue, **settings)
        broker.enqueue_jobs([job])
        (got,) = broker.get_jobs_from_queue(queue, 1)
        assert got.id == job.id
        return got

    def failed_job(
        self, broker: Broker, clock: ManualClock, message: str = "boom", **settings: Any
    ) -> Job:
        """A new job handed out (see :meth:`hand_out`) then recorded as failed for
        good, now: it is in the failed store."""
        job = self.fail(self.hand_out(broker, clock, **settings), clock, message)
        assert broker.record_outcomes([job]) == [RunningJobState.RECORDED]
        return job

    def succeeded_job(
        self, broker: Broker, clock: ManualClock, keep_result: float = 60.0, **settings: Any
    ) -> Job:
        """A new job handed out (see :meth:`hand_out`) then recorded as succeeded,
        now, keeping its result ``{"a": [1, 2]}`` for ``keep_result`` seconds."""
        job = self.succeed(self.hand_out(broker, clock, **settings), clock, keep_result=keep_result)
        assert broker.record_outcomes([job]) == [RunningJobState.RECORDED]
        return job

    @staticmethod
    def wait_until_forgotten(broker: Broker, clock: ManualClock, job: Job, why: str) -> None:
        """Advance the contract clock a second, then wait (real time, 10 s at most)
        until the broker holds nothing of ``job``: a Redis broker expires records
        on the server's own clock rather than on the broker's."""
        clock.advance(1)
        deadline = time.monotonic() + 10
        pause = threading.Event()
        while broker.get_job(str(job.id)) is not None:
            assert time.monotonic() < deadline, why
            pause.wait(0.02)


class EnqueueJobsContract(_Base):
    """:meth:`Broker.enqueue_jobs`."""

    def test_ready_jobs_are_handed_out_in_fifo_order(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Ready jobs come out in the order they were enqueued, across calls."""
        jobs = [self.job(clock, args=(i,)) for i in range(5)]
        broker.enqueue_jobs(jobs[:2])
        broker.enqueue_jobs(jobs[2:])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == self.ids(jobs)

    def test_future_job_is_kept_aside(self, broker: Broker, clock: ManualClock) -> None:
        """A job whose time has not come is stored but not handed out."""
        broker.enqueue_jobs([self.job(clock, delay=60)])
        assert broker.get_jobs_from_queue("q", 10) == []
        counts = broker.count_jobs()
        assert (counts.queued, counts.future, counts.running) == ({}, 1, 0)

    def test_enqueue_is_idempotent(self, broker: Broker, clock: ManualClock) -> None:
        """Enqueuing a job again (a retried call) does not store it twice."""
        ready, future = self.job(clock), self.job(clock, delay=60)
        broker.enqueue_jobs([ready, future])
        broker.enqueue_jobs([ready, future])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [ready.id]
        broker.enqueue_jobs([ready])
        assert broker.get_jobs_from_queue("q", 10) == []
        assert broker.count_jobs().future == 1

    def test_jobs_go_to_their_own_queue(self, broker: Broker, clock: ManualClock) -> None:
        """Each job is handed out only from its own queue."""
        a, b = self.job(clock, queue="a"), self.job(clock, queue="b")
        broker.enqueue_jobs([a, b])
        assert self.ids(broker.get_jobs_from_queue("b", 10)) == [b.id]
        assert self.ids(broker.get_jobs_from_queue("a", 10)) == [a.id]

    def test_empty_batch_is_accepted(self, broker: Broker) -> None:
        """Enqueuing no job stores nothing and does not fail."""
        broker.enqueue_jobs([])
        assert broker.count_jobs().queued == {}

    @classmethod
    def unique_job(cls, clock: ManualClock, key: str = "k" * 32, delay: float = 0) -> Job:
        job = cls.job(clock, delay=delay, max_retries=1)
        job.unique_key = key
        return job

    def test_unique_job_waiting_blocks_an_equal_one(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """A job whose unique key a queued or future job holds is not stored: it
        takes that job's id."""
        for delay in (0, 60):
            first, second = self.unique_job(clock, delay=delay), self.unique_job(clock)
            broker.enqueue_jobs([first])
            first_id = first.id
            broker.enqueue_jobs([second])
            assert (first.id, second.id) == (first_id, first_id)
            counts = broker.count_jobs()
            assert sum(counts.queued.values()) + counts.future == 1
            broker.flush()

    def test_unique_key_is_held_within_one_call(self, broker: Broker, clock: ManualClock) -> None:
        """In one call, the first job with a key holds it for the next; other keys
        and jobs without a key are stored."""
        jobs = [self.unique_job(clock), self.unique_job(clock), self.unique_job(clock, "b" * 32)]
        jobs.append(self.job(clock))
        broker.enqueue_jobs(jobs)
        assert jobs[1].id == jobs[0].id
        handed = broker.get_jobs_from_queue("q", 10)
        assert self.ids(handed) == [jobs[0].id, jobs[2].id, jobs[3].id]

    def test_started_job_no_longer_holds_its_key(self, broker: Broker, clock: ManualClock) -> None:
        """Once handed out (and when it is retried), a job holds its key no more."""
        first = self.unique_job(clock)
        broker.enqueue_jobs([first])
        (running,) = broker.get_jobs_from_queue("q", 1)
        second = self.unique_job(clock)
        second_id = second.id
        broker.enqueue_jobs([second])
        assert second.id == second_id != first.id
        running.status, running.retries = JobStatus.QUEUED, 1
        broker.retry_job(running)
        third = self.unique_job(clock)
        third_id = third.id
        broker.enqueue_jobs([third])
        assert third.id == second_id != third_id
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [second_id, first.id]

    def test_unique_key_resent_call_gives_the_same_id(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Enqueuing a unique job again (a retried call) keeps its id and stores
        nothing new, at-most-once or not."""
        for max_retries in (0, 1):
            job = self.unique_job(clock)
            job.max_retries = max_retries
            job_id = job.id
            broker.enqueue_jobs([job])
            broker.enqueue_jobs([job])
            assert job.id == job_id
            assert broker.count_jobs().queued == {"q": 1}
            broker.flush()

    def test_many_unique_jobs_blocked_in_one_call(self, broker: Broker, clock: ManualClock) -> None:
        """A call with thousands of unique jobs whose keys are held takes every
        holder's id, and stores the others."""
        first = [self.unique_job(clock, f"{i:032x}") for i in range(5000)]
        broker.enqueue_jobs(first)
        again = [self.unique_job(clock, f"{i:032x}") for i in range(5000)]
        free = self.job(clock)
        broker.enqueue_jobs([*again, free])
        assert [job.id for job in again] == [job.id for job in first]
        assert broker.count_jobs().queued == {"q": 5001}

    def test_racing_unique_jobs_store_one(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Equal unique jobs enqueued at once by several brokers store exactly one,
        and every caller gets its id."""
        brokers = [make_broker(broker.namespace) for _ in range(4)]
        jobs = [[self.unique_job(clock) for _ in range(25)] for _ in brokers]
        start = threading.Barrier(len(brokers))

        def enqueue(index: int) -> None:
            start.wait()
            for job in jobs[index]:
                brokers[index].enqueue_jobs([job])

        threads = [threading.Thread(target=enqueue, args=(i,)) for i in range(len(brokers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert broker.count_jobs().queued == {"q": 1}
        (stored,) = broker.get_jobs_from_queue("q", 10)
        assert {job.id for row in jobs for job in row} == {stored.id}

    def test_meta_is_stored_with_the_job(self, broker: Broker, clock: ManualClock) -> None:
        """A job's meta comes back with it, handed out, retried, failed and requeued;
        a job stored without meta has an empty one."""
        job, plain = self.job(clock, max_retries=1), self.job(clock)
        job.meta = {"traceparent": "00-4bf92f-00f067-01", "tenant": "café ✓"}
        broker.enqueue_jobs([job, plain])
        info = broker.get_job(str(job.id))
        assert info is not None
        assert info.meta == job.meta
        got, got_plain = broker.get_jobs_from_queue("q", 2)
        assert (got.meta, got_plain.meta) == (job.meta, {})
        got.retries += 1
        assert broker.retry_job(got) is RunningJobState.RECORDED
        (again,) = broker.get_jobs_from_queue("q", 1)
        assert again.meta == job.meta
        assert broker.record_outcomes([self.fail(again, clock)]) == [RunningJobState.RECORDED]
        (failed,) = broker.failed_jobs(1)
        assert failed.meta == job.meta
        assert broker.requeue_failed([str(job.id)]) == 1
        (requeued,) = broker.get_jobs_from_queue("q", 1)
        assert requeued.meta == job.meta


class GetJobsFromQueueContract(_Base):
    """:meth:`Broker.get_jobs_from_queue`."""

    def test_empty_queue_gives_empty_list(self, broker: Broker) -> None:
        """Nothing to hand out is an empty list."""
        assert broker.get_jobs_from_queue("q", 10) == []

    def test_max_jobs_is_respected(self, broker: Broker, clock: ManualClock) -> None:
        """At most max_jobs jobs are handed out; the others stay queued."""
        broker.enqueue_jobs([self.job(clock) for _ in range(5)])
        assert len(broker.get_jobs_from_queue("q", 3)) == 3
        assert broker.count_jobs().queued == {"q": 2}
        assert len(broker.get_jobs_from_queue("q", 3)) == 2

    def test_handed_out_jobs_are_running(self, broker: Broker, clock: ManualClock) -> None:
        """A handed-out job has status RUNNING, a token, and counts as running."""
        job = self.job(clock, max_retries=3)
        broker.enqueue_jobs([job])
        (got,) = broker.get_jobs_from_queue("q", 1)
        assert got.status is JobStatus.RUNNING
        assert got.handout_token
        assert (got.id, got.task_name, got.max_retries, got.at) == (
            job.id,
            job.task_name,
            3,
            job.at,
        )
        assert broker.count_jobs().running == 1

    @pytest.mark.parametrize("value", ROUND_TRIP_VALUES, ids=lambda v: type(v).__name__)
    def test_arguments_round_trip_exactly(
        self, broker: Broker, clock: ManualClock, value: Any
    ) -> None:
        """Arguments come back equal and of the same types, whatever their content."""
        job = self.job(clock, args=(value, [value]), kwargs={"k": value, "ü": {"n": value}})
        broker.enqueue_jobs([job])
        (got,) = broker.get_jobs_from_queue("q", 1)
        assert got.task_args == (value, [value])
        assert got.task_kwargs == {"k": value, "ü": {"n": value}}
        assert repr(got.task_args) == repr((value, [value]))

    def test_each_job_is_handed_out_once_to_racing_consumers(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Consumers fetching at once, from separate broker objects, never share a job."""
        jobs = [self.job(clock, args=(i,)) for i in range(400)]
        broker.enqueue_jobs(jobs)
        consumers = [make_broker(broker.namespace) for _ in range(4)]
        got: list[list[Job]] = [[] for _ in consumers]
        start = threading.Barrier(len(consumers))

        def consume(index: int) -> None:
            start.wait()
            while batch := consumers[index].get_jobs_from_queue("q", 3):
                got[index].extend(batch)

        threads = [threading.Thread(target=consume, args=(i,)) for i in range(len(consumers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        handed = [job.id for batch in got for job in batch]
        assert sorted(handed) == sorted(job.id for job in jobs)


class RemoveJobFromRunningContract(_Base):
    """:meth:`Broker.remove_job_from_running`."""

    def test_finished_job_is_forgotten(self, broker: Broker, clock: ManualClock) -> None:
        """A finished job leaves the running jobs and is stored nowhere."""
        broker.enqueue_jobs([self.job(clock)])
        (job,) = broker.get_jobs_from_queue("q", 1)
        job.status = JobStatus.SUCCEEDED
        assert broker.remove_job_from_running(job) is RunningJobState.RECORDED
        counts = broker.count_jobs()
        assert (counts.queued, counts.future, counts.running) == ({}, 0, 0)

    def test_second_call_changes_nothing(self, broker: Broker, clock: ManualClock) -> None:
        """Recording the same end twice (a retried call) reports NOT_OURS the second time."""
        broker.enqueue_jobs([self.job(clock)])
        (job,) = broker.get_jobs_from_queue("q", 1)
        assert broker.remove_job_from_running(job) is RunningJobState.RECORDED
        assert broker.remove_job_from_running(job) is RunningJobState.NOT_OURS

    def test_wrong_token_changes_nothing(self, broker: Broker, clock: ManualClock) -> None:
        """A job carrying a token that is not the current one stays running."""
        broker.enqueue_jobs([self.job(clock)])
        (job,) = broker.get_jobs_from_queue("q", 1)
        job.handout_token = "not-the-token"
        assert broker.remove_job_from_running(job) is RunningJobState.NOT_OURS
        assert broker.count_jobs().running == 1

    def test_failed_job_enters_the_failed_store(self, broker: Broker, clock: ManualClock) -> None:
        """A job ended as failed through remove_job_from_running keeps its record too."""
        job = self.fail(self.hand_out(broker, clock), clock)
        assert broker.remove_job_from_running(job) is RunningJobState.RECORDED
        assert self.info_ids(broker.failed_jobs(10)) == [job.id]
        counts = broker.count_jobs()
        assert (counts.running, counts.failed) == (0, 1)

    def test_succeeded_job_keeps_its_result(self, broker: Broker, clock: ManualClock) -> None:
        """A job ended as succeeded with a result through remove_job_from_running keeps it."""
        job = self.succeed(self.hand_out(broker, clock), clock)
        assert broker.remove_job_from_running(job) is RunningJobState.RECORDED
        info = broker.get_job(str(job.id))
        assert info is not None
        assert (info.status, info.result) == (JobStatus.SUCCEEDED, {"a": [1, 2]})


class RetryJobContract(_Base):
    """:meth:`Broker.retry_job`."""

    def test_retry_now_goes_to_the_tail_of_the_queue(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """A job retried now is queued again after the jobs already waiting, same id."""
        first, second = self.job(clock, max_retries=2), self.job(clock)
        broker.enqueue_jobs([first, second])
        (job,) = broker.get_jobs_from_queue("q", 1)
        job.retries += 1
        assert broker.retry_job(job) is RunningJobState.RECORDED
        got = broker.get_jobs_from_queue("q", 10)
        assert self.ids(got) == [second.id, first.id]
        assert got[1].retries == 1

    def test_retry_later_waits_for_its_time(self, broker: Broker, clock: ManualClock) -> None:
        """A job retried at a later time is handed out only once that time has come."""
        broker.enqueue_jobs([self.job(clock, max_retries=2)])
        (job,) = broker.get_jobs_from_queue("q", 1)
        job.retries += 1
        job.at = clock.now() + timedelta(seconds=30)
        broker.retry_job(job)
        assert broker.count_jobs().future == 1
        broker.move_future_jobs()
        assert broker.get_jobs_from_queue("q", 1) == []
        clock.advance(30)
        broker.move_future_jobs()
        assert self.ids(broker.get_jobs_from_queue("q", 1)) == [job.id]

    def test_retry_with_a_stale_token_changes_nothing(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """A retry recorded with a token that is no longer the job's is refused."""
        broker.enqueue_jobs([self.job(clock, max_retries=2)])
        (job,) = broker.get_jobs_from_queue("q", 1)
        job.handout_token = "stale"
        assert broker.retry_job(job) is RunningJobState.NOT_OURS
        assert broker.is_queue_empty("q")
        assert broker.count_jobs().running == 1


class RecordOutcomesContract(_Base):
    """:meth:`Broker.record_outcomes`."""

    def test_many_ended_jobs_in_one_call(self, broker: Broker, clock: ManualClock) -> None:
        """Over a thousand ended jobs in one call, one given twice: each is recorded
        once, in order; the second time it is not ours any more."""
        broker.enqueue_jobs([self.job(clock) for _ in range(1500)])
        jobs = broker.get_jobs_from_queue("q", 1500)
        assert len(jobs) == 1500
        for job in jobs:
            job.status = JobStatus.SUCCEEDED
        states = broker.record_outcomes([*jobs[:1200], jobs[5], *jobs[1200:]])
        assert (
            states
            == [RunningJobState.RECORDED] * 1200
            + [RunningJobState.NOT_OURS]
            + [RunningJobState.RECORDED] * 300
        )
        counts = broker.count_jobs()
        assert (counts.running, counts.queued) == (0, {})
        assert broker.get_job(str(jobs[0].id)) is None

    def test_mixed_outcomes_are_recorded_in_one_call(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Finished jobs are forgotten, others queued again; one state per job, in order."""
        broker.enqueue_jobs([self.job(clock, max_retries=1) for _ in range(4)])
        jobs = broker.get_jobs_from_queue("q", 4)
        statuses = [JobStatus.SUCCEEDED, JobStatus.QUEUED, JobStatus.FAILED, JobStatus.QUEUED]
        for job, status in zip(jobs, statuses):
            job.status = status
        jobs[1].retries = jobs[3].retries = 1
        jobs[2].handout_token = "stale"
        states = broker.record_outcomes(jobs)
        recorded, not_ours = RunningJobState.RECORDED, RunningJobState.NOT_OURS
        assert states == [recorded, recorded, not_ours, recorded]
        again = broker.get_jobs_from_queue("q", 10)
        assert self.ids(again) == [jobs[1].id, jobs[3].id]
        assert [job.retries for job in again] == [1, 1]
        assert broker.count_jobs().running == 3  # the two again, and the stale one

    def test_recording_again_changes_nothing(self, broker: Broker, clock: ManualClock) -> None:
        """A call sent twice (after a lost reply) reports NOT_OURS for every job the second time."""
        broker.enqueue_jobs([self.job(clock, max_retries=1) for _ in range(2)])
        jobs = broker.get_jobs_from_queue("q", 2)
        jobs[0].status = JobStatus.SUCCEEDED
        jobs[1].status = JobStatus.QUEUED
        assert broker.record_outcomes(jobs) == [RunningJobState.RECORDED] * 2
        assert broker.record_outcomes(jobs) == [RunningJobState.NOT_OURS] * 2
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [jobs[1].id]

    def test_retries_go_to_their_own_queues_and_times(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Jobs of several queues retried in one call go back to their queue, now or later."""
        broker.enqueue_jobs([self.job(clock, queue="a"), self.job(clock, queue="b")])
        (a,) = broker.get_jobs_from_queue("a", 1)
        (b,) = broker.get_jobs_from_queue("b", 1)
        a.status = b.status = JobStatus.QUEUED
        b.at = clock.now() + timedelta(seconds=5)
        assert broker.record_outcomes([a, b]) == [RunningJobState.RECORDED] * 2
        assert self.ids(broker.get_jobs_from_queue("a", 1)) == [a.id]
        assert broker.get_jobs_from_queue("b", 1) == []
        clock.advance(5)
        broker.move_future_jobs()
        assert self.ids(broker.get_jobs_from_queue("b", 1)) == [b.id]

    def test_nothing_to_record(self, broker: Broker) -> None:
        """An empty list is accepted and records nothing."""
        assert broker.record_outcomes([]) == []

    def test_record_then_fetch_in_one_call(self, broker: Broker, clock: ManualClock) -> None:
        """record_outcomes_and_get_jobs records first: a job put back comes out in the same call."""
        broker.enqueue_jobs([self.job(clock, max_retries=1), self.job(clock)])
        first, second = broker.get_jobs_from_queue("q", 2)
        first.status, first.retries = JobStatus.QUEUED, 1
        second.status = JobStatus.SUCCEEDED
        states, jobs = broker.record_outcomes_and_get_jobs([first, second], "q", 5)
        assert states == [RunningJobState.RECORDED] * 2
        assert self.ids(jobs) == [first.id]
        assert jobs[0].retries == 1
        assert broker.count_jobs().running == 1
        states, jobs = broker.record_outcomes_and_get_jobs([], "q", 5)
        assert (states, jobs) == ([], [])

    def test_ends_for_good_keep_their_records(self, broker: Broker, clock: ManualClock) -> None:
        """In one call, a failure enters the failed store and a kept result is kept; a
        success without a result and a retry keep no record."""
        broker.enqueue_jobs([self.job(clock, max_retries=1) for _ in range(4)])
        failed, kept, forgotten, retried = broker.get_jobs_from_queue("q", 4)
        self.fail(failed, clock)
        self.succeed(kept, clock)
        self.succeed(forgotten, clock, result_json=None)
        retried.status, retried.retries = JobStatus.QUEUED, 1
        retried.at = clock.now() + timedelta(seconds=60)
        states = broker.record_outcomes([failed, kept, forgotten, retried])
        assert states == [RunningJobState.RECORDED] * 4
        assert self.info_ids(broker.failed_jobs(10)) == [failed.id]
        statuses = [broker.get_job(str(job.id)) for job in (failed, kept, forgotten, retried)]
        assert [info.status if info else None for info in statuses] == [
            JobStatus.FAILED,
            JobStatus.SUCCEEDED,
            None,
            JobStatus.WAITING,
        ]
        counts = broker.count_jobs()
        assert (counts.running, counts.future, counts.failed) == (0, 1, 1)

    def test_failed_store_keeps_the_latest_max_failed(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Beyond max_failed, each failure drops the oldest one of the store, counted."""
        broker.max_failed = 3
        jobs = []
        for i in range(5):
            jobs.append(self.failed_job(broker, clock, f"boom {i}"))
            clock.advance(1)
        assert self.info_ids(broker.failed_jobs(10)) == self.ids(jobs[:1:-1])
        counts = broker.count_jobs()
        assert (counts.failed, counts.failed_dropped) == (3, 2)
        assert broker.get_job(str(jobs[0].id)) is None
        assert broker.get_job(str(jobs[2].id)) is not None

    def test_failed_store_without_bound_keeps_every_failure(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """With max_failed None no failure is dropped."""
        broker.max_failed = None
        for i in range(5):
            self.failed_job(broker, clock, f"boom {i}")
            clock.advance(1)
        assert len(broker.failed_jobs(10)) == 5
        counts = broker.count_jobs()
        assert (counts.failed, counts.failed_dropped) == (5, 0)


class MoveFutureJobsContract(_Base):
    """:meth:`Broker.move_future_jobs`."""

    def test_nothing_to_move_returns_none(self, broker: Broker) -> None:
        """With no future job and no periodic task there is no next time."""
        assert broker.move_future_jobs() is None

    def test_due_jobs_are_moved_in_time_order(self, broker: Broker, clock: ManualClock) -> None:
        """Future jobs become ready once due, earliest first, and not before."""
        late, early = self.job(clock, delay=20), self.job(clock, delay=10)
        broker.enqueue_jobs([late, early])
        assert broker.move_future_jobs() == pytest.approx(10)
        assert broker.get_jobs_from_queue("q", 10) == []
        clock.advance(9.9)
        assert broker.move_future_jobs() == pytest.approx(0.1)
        assert broker.get_jobs_from_queue("q", 10) == []
        clock.advance(20)
        assert broker.move_future_jobs() is None
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [early.id, late.id]

    def test_moved_jobs_join_the_tail(self, broker: Broker, clock: ManualClock) -> None:
        """A future job that became due queues after the jobs already ready."""
        future = self.job(clock, delay=5)
        broker.enqueue_jobs([future])
        clock.advance(10)
        ready = self.job(clock)
        broker.enqueue_jobs([ready])
        broker.move_future_jobs()
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [ready.id, future.id]


class RegisterPeriodicTasksContract(_Base):
    """:meth:`Broker.register_periodic_tasks`, and the jobs it leads to."""

    def periodic(self, name: str = "tick", seconds: float = 60, **settings: Any) -> Task:
        return self.task(name, periodicity=timedelta(seconds=seconds), **settings)

    def test_runs_once_per_period(self, broker: Broker, clock: ManualClock) -> None:
        """A periodic task gets one job per period, the first one period after registration."""
        broker.register_periodic_tasks([self.periodic(max_retries=2)])
        assert broker.move_future_jobs() == pytest.approx(60)
        assert broker.get_jobs_from_queue("q", 10) == []
        clock.advance(60)
        broker.move_future_jobs()
        broker.move_future_jobs()
        (job,) = broker.get_jobs_from_queue("q", 10)
        assert (job.task_name, job.queue, job.max_retries) == ("tick", "q", 2)
        clock.advance(59)
        broker.move_future_jobs()
        assert broker.get_jobs_from_queue("q", 10) == []
        clock.advance(1)
        broker.move_future_jobs()
        assert len(broker.get_jobs_from_queue("q", 10)) == 1

    def test_lost_time_is_not_made_up(self, broker: Broker, clock: ManualClock) -> None:
        """After ten periods without anyone looking, one job runs, not ten."""
        broker.register_periodic_tasks([self.periodic()])
        clock.advance(600)
        broker.move_future_jobs()
        assert len(broker.get_jobs_from_queue("q", 100)) == 1
        assert broker.move_future_jobs() == pytest.approx(60)

    def test_registering_again_keeps_the_schedule(self, broker: Broker, clock: ManualClock) -> None:
        """A worker restarting with the same task does not push its next run back."""
        broker.register_periodic_tasks([self.periodic()])
        clock.advance(50)
        broker.register_periodic_tasks([self.periodic()])
        assert broker.move_future_jobs() == pytest.approx(10)

    def test_changed_periodicity_reschedules(self, broker: Broker, clock: ManualClock) -> None:
        """A new periodicity starts a new schedule, one new period from now."""
        broker.register_periodic_tasks([self.periodic(seconds=3600)])
        clock.advance(10)
        broker.register_periodic_tasks([self.periodic(seconds=5)])
        assert broker.move_future_jobs() == pytest.approx(5)

    def test_unregistered_task_stops_running(self, broker: Broker, clock: ManualClock) -> None:
        """A periodic task left out of a registration gets no more jobs."""
        broker.register_periodic_tasks([self.periodic("a"), self.periodic("b")])
        broker.register_periodic_tasks([self.periodic("b"), self.task("a")])
        clock.advance(60)
        broker.move_future_jobs()
        assert [job.task_name for job in broker.get_jobs_from_queue("q", 10)] == ["b"]

    def test_tasks_not_given_keep_their_schedule(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """An engine registering other tasks leaves the periodic tasks it does not know."""
        broker.register_periodic_tasks([self.periodic("a")])
        other = make_broker(broker.namespace)
        other.register_periodic_tasks([self.periodic("b", seconds=120), self.task("c")])
        clock.advance(60)
        broker.move_future_jobs()
        assert [job.task_name for job in broker.get_jobs_from_queue("q", 10)] == ["a"]

    def test_never_duplicated_by_racing_workers(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Many workers moving future jobs at once create one job per period."""
        brokers = [make_broker(broker.namespace) for _ in range(4)]
        for other in brokers:
            other.register_periodic_tasks([self.periodic()])
        clock.advance(60)
        start = threading.Barrier(len(brokers))

        def move(other: Broker) -> None:
            start.wait()
            for _ in range(20):
                other.move_future_jobs()

        threads = [threading.Thread(target=move, args=(b,)) for b in brokers]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert len(broker.get_jobs_from_queue("q", 100)) == 1


class SetConcurrencyLimitsContract(_Base):
    """:meth:`Broker.set_concurrency_limits`."""

    def test_limit_holds(self, broker: Broker, clock: ManualClock) -> None:
        """No more jobs of a task run at once than its limit."""
        broker.set_concurrency_limits([self.task("task", max_concurrency=2)])
        broker.enqueue_jobs([self.job(clock) for _ in range(5)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 2
        assert broker.get_jobs_from_queue("q", 10) == []
        assert broker.count_jobs().queued == {"q": 3}
        assert not broker.is_queue_empty("q")

    def test_limit_holds_across_brokers(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """The limit counts the jobs running in every worker of the namespace."""
        broker.set_concurrency_limits([self.task("task", max_concurrency=2)])
        broker.enqueue_jobs([self.job(clock) for _ in range(5)])
        other = make_broker(broker.namespace)
        assert len(broker.get_jobs_from_queue("q", 1)) == 1
        assert len(other.get_jobs_from_queue("q", 10)) == 1
        assert broker.get_jobs_from_queue("q", 10) == []

    @pytest.mark.parametrize("outcome", ["succeeded", "failed", "retried"])
    def test_ended_job_frees_its_slot(
        self, broker: Broker, clock: ManualClock, outcome: str
    ) -> None:
        """A job that succeeded, failed or went back for a retry frees its slot."""
        broker.set_concurrency_limits([self.task("task", max_concurrency=1)])
        first, second = self.job(clock, max_retries=1), self.job(clock, max_retries=1)
        broker.enqueue_jobs([first, second])
        (job,) = broker.get_jobs_from_queue("q", 10)
        if outcome == "retried":
            job.retries += 1
            job.at = clock.now() + timedelta(seconds=60)
            broker.retry_job(job)
        else:
            job.status = JobStatus.SUCCEEDED if outcome == "succeeded" else JobStatus.FAILED
            broker.remove_job_from_running(job)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [second.id]

    def test_blocked_jobs_keep_order_and_do_not_block_others(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Jobs behind a limit keep their order; other tasks' jobs pass them."""
        broker.set_concurrency_limits([self.task("a", max_concurrency=1)])
        a1, a2, b1, a3, b2 = (self.job(clock, name) for name in ["a", "a", "b", "a", "b"])
        broker.enqueue_jobs([a1, a2, b1, a3, b2])
        got = broker.get_jobs_from_queue("q", 10)
        assert self.ids(got) == [a1.id, b1.id, b2.id]
        for job in got:
            broker.remove_job_from_running(job)
        c1 = self.job(clock, "a")
        broker.enqueue_jobs([c1])
        (job,) = broker.get_jobs_from_queue("q", 10)
        assert job.id == a2.id
        broker.remove_job_from_running(job)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [a3.id]

    def test_unblocked_job_keeps_its_place_among_others(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Once its slot frees, a blocked job is handed out before later jobs of other tasks."""
        broker.set_concurrency_limits([self.task("a", max_concurrency=1)])
        a1, a2 = self.job(clock, "a"), self.job(clock, "a")
        broker.enqueue_jobs([a1, a2])
        (running,) = broker.get_jobs_from_queue("q", 10)
        b1 = self.job(clock, "b")
        broker.enqueue_jobs([b1])
        broker.remove_job_from_running(running)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [a2.id, b1.id]

    def test_tasks_not_given_keep_their_limits(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """An engine registering other tasks leaves the limits of tasks it does not know."""
        broker.set_concurrency_limits([self.task("task", max_concurrency=1)])
        make_broker(broker.namespace).set_concurrency_limits([self.task("other")])
        broker.enqueue_jobs([self.job(clock), self.job(clock)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 1

    def test_removing_a_limit_releases_blocked_jobs(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Limits not given again are lifted."""
        broker.set_concurrency_limits([self.task("task", max_concurrency=1)])
        broker.enqueue_jobs([self.job(clock) for _ in range(3)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 1
        broker.set_concurrency_limits([self.task("task")])
        assert len(broker.get_jobs_from_queue("q", 10)) == 2


class SetRateLimitsContract(_Base):
    """:meth:`Broker.set_rate_limits`, and the rate limits that
    :meth:`Broker.get_jobs_from_queue` keeps."""

    @classmethod
    def limit(cls, broker: Broker, starts: int, seconds: float, name: str = "task") -> None:
        broker.set_rate_limits([cls.task(name, rate_limit=(starts, timedelta(seconds=seconds)))])

    def test_limit_holds(self, broker: Broker, clock: ManualClock) -> None:
        """No more jobs of a task start within the period than its limit; the rest wait."""
        self.limit(broker, 3, 60)
        broker.enqueue_jobs([self.job(clock) for _ in range(5)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 3
        assert broker.get_jobs_from_queue("q", 10) == []
        assert broker.count_jobs().queued == {"q": 2}
        assert not broker.is_queue_empty("q")

    def test_limit_counts_the_starts_of_every_broker(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """The starts are counted across the namespace, not per worker."""
        self.limit(broker, 2, 60)
        broker.enqueue_jobs([self.job(clock) for _ in range(4)])
        other = make_broker(broker.namespace)
        assert len(broker.get_jobs_from_queue("q", 1)) == 1
        assert len(other.get_jobs_from_queue("q", 10)) == 1
        assert broker.get_jobs_from_queue("q", 10) == []

    def test_window_slides_on_the_broker_clock(self, broker: Broker, clock: ManualClock) -> None:
        """A start counts for exactly one period after it: the window slides with each start."""
        self.limit(broker, 2, 10)
        broker.enqueue_jobs([self.job(clock) for _ in range(5)])
        assert len(broker.get_jobs_from_queue("q", 1)) == 1  # t=0
        clock.advance(4)
        assert len(broker.get_jobs_from_queue("q", 10)) == 1  # t=4
        clock.advance(5.9)
        assert broker.get_jobs_from_queue("q", 10) == []  # t=9.9: both count
        clock.advance(0.1)
        assert len(broker.get_jobs_from_queue("q", 10)) == 1  # t=10: the first left
        clock.advance(3.9)
        assert broker.get_jobs_from_queue("q", 10) == []  # t=13.9
        clock.advance(0.1)
        assert len(broker.get_jobs_from_queue("q", 10)) == 1  # t=14: the second left

    def test_ended_jobs_do_not_give_starts_back(self, broker: Broker, clock: ManualClock) -> None:
        """Unlike a concurrency slot, a start counts whether its job ended or not."""
        self.limit(broker, 1, 60)
        broker.enqueue_jobs([self.job(clock), self.job(clock)])
        (job,) = broker.get_jobs_from_queue("q", 10)
        job.status = JobStatus.SUCCEEDED
        broker.remove_job_from_running(job)
        assert broker.get_jobs_from_queue("q", 10) == []

    def test_a_retry_is_a_new_start(self, broker: Broker, clock: ManualClock) -> None:
        """A job handed out again for a retry counts again."""
        self.limit(broker, 2, 60)
        broker.enqueue_jobs([self.job(clock, max_retries=2), self.job(clock)])
        first, _ = broker.get_jobs_from_queue("q", 10)
        first.retries += 1
        first.at = clock.now()
        broker.retry_job(first)
        assert broker.get_jobs_from_queue("q", 10) == []
        clock.advance(60)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [first.id]

    def test_held_back_jobs_keep_order_and_do_not_block_others(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Jobs held back keep their order; other tasks' jobs pass them."""
        self.limit(broker, 1, 60, "a")
        a1, a2, b1, a3, b2 = (self.job(clock, name) for name in ["a", "a", "b", "a", "b"])
        broker.enqueue_jobs([a1, a2, b1, a3, b2])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [a1.id, b1.id, b2.id]
        c1 = self.job(clock, "a")
        broker.enqueue_jobs([c1])
        clock.advance(60)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [a2.id]
        clock.advance(60)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [a3.id]

    def test_held_back_job_keeps_its_place_among_others(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Once its task may start again, a held-back job goes before later jobs of other tasks."""
        self.limit(broker, 1, 60, "a")
        a1, a2 = self.job(clock, "a"), self.job(clock, "a")
        broker.enqueue_jobs([a1, a2])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [a1.id]
        b1 = self.job(clock, "b")
        broker.enqueue_jobs([b1])
        clock.advance(60)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [a2.id, b1.id]

    def test_many_held_back_jobs_do_not_hide_others(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Thousands of held-back jobs in front of another task's job do not hide it."""
        self.limit(broker, 1, 60, "a")
        blocked = [self.job(clock, "a") for _ in range(2500)]
        other = self.job(clock, "b")
        broker.enqueue_jobs([*blocked, other])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [blocked[0].id, other.id]
        assert broker.count_jobs().queued == {"q": 2499}

    def test_move_future_jobs_tells_when_held_back_jobs_may_start(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """The end of a hold is a due time of move_future_jobs, as a future job's is."""
        self.limit(broker, 2, 10)
        broker.enqueue_jobs([self.job(clock) for _ in range(3)])
        assert len(broker.get_jobs_from_queue("q", 1)) == 1
        clock.advance(3)
        assert len(broker.get_jobs_from_queue("q", 10)) == 1
        delay = broker.move_future_jobs()
        assert delay is not None
        assert delay == pytest.approx(7)
        clock.advance(delay)
        assert broker.move_future_jobs() is None
        assert len(broker.get_jobs_from_queue("q", 10)) == 1

    @pytest.mark.parametrize("period", [0.2, 0.3, 0.7, 1 / 3])
    def test_held_back_job_starts_at_the_time_told(
        self, broker: Broker, clock: ManualClock, period: float
    ) -> None:
        """Once the clock reaches the time move_future_jobs told, the held-back job
        starts: the hold and the wake-up agree, whatever the rounding of the times."""
        self.limit(broker, 1, period)
        broker.enqueue_jobs([self.job(clock)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 1
        for k in range(40):
            clock.advance(0.0137 * k % period)  # starts at times of many roundings
            broker.enqueue_jobs([self.job(clock)])
            assert broker.get_jobs_from_queue("q", 10) == []
            delay = broker.move_future_jobs()
            assert delay is not None
            assert delay > 0
            clock.advance(delay)
            assert len(broker.get_jobs_from_queue("q", 10)) == 1, f"not at {k}"

    def test_end_of_a_hold_is_told_whatever_else_holds_the_job(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """A job held back by both limits of its task: the end of the rate limit's
        hold is a due time all the same."""
        task = self.task("task", max_concurrency=1, rate_limit=(1, timedelta(seconds=10)))
        broker.set_concurrency_limits([task])
        broker.set_rate_limits([task])
        broker.enqueue_jobs([self.job(clock), self.job(clock)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 1
        assert broker.get_jobs_from_queue("q", 10) == []
        assert broker.move_future_jobs() == pytest.approx(10)

    def test_end_of_a_hold_wakes_waiting_workers(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Workers waiting for an event are woken when held-back jobs may start."""
        self.limit(broker, 1, 10)
        waiter = make_broker(broker.namespace)
        waiter.start()
        try:
            broker.enqueue_jobs([self.job(clock), self.job(clock)])
            # The enqueue's news, or the broker's own once its notifications are live.
            assert waiter.wait_for_event(10)
            assert len(waiter.get_jobs_from_queue("q", 10)) == 1
            assert waiter.get_jobs_from_queue("q", 10) == []
            while waiter.wait_for_event(0.05):
                pass  # anything that was on its way
            delay = broker.move_future_jobs()
            assert delay is not None
            assert delay == pytest.approx(10)
            clock.advance(delay)
            broker.move_future_jobs()
            assert waiter.wait_for_event(10), "the end of a hold woke nobody"
            assert len(waiter.get_jobs_from_queue("q", 10)) == 1
        finally:
            waiter.stop()

    def test_tasks_not_given_keep_their_limits(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """An engine registering other tasks leaves the limits of tasks it does not know."""
        self.limit(broker, 1, 60)
        make_broker(broker.namespace).set_rate_limits([self.task("other")])
        broker.enqueue_jobs([self.job(clock), self.job(clock)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 1

    def test_removing_a_limit_releases_held_back_jobs(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Limits not given again are lifted, and the held-back jobs start, in order."""
        self.limit(broker, 1, 60)
        jobs = [self.job(clock) for _ in range(3)]
        broker.enqueue_jobs(jobs)
        assert len(broker.get_jobs_from_queue("q", 10)) == 1
        broker.set_rate_limits([self.task("task")])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == self.ids(jobs[1:])

    def test_starts_count_against_a_changed_limit(self, broker: Broker, clock: ManualClock) -> None:
        """The starts within the period count against a new limit, as against the old."""
        self.limit(broker, 3, 60)
        broker.enqueue_jobs([self.job(clock) for _ in range(5)])
        assert len(broker.get_jobs_from_queue("q", 2)) == 2
        self.limit(broker, 2, 60)
        assert broker.get_jobs_from_queue("q", 10) == []
        self.limit(broker, 4, 60)
        assert len(broker.get_jobs_from_queue("q", 10)) == 2

    def test_lifting_a_concurrency_limit_keeps_the_rate_limit(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """Both limits hold a task's jobs together; lifting one leaves the other."""
        task = self.task("task", max_concurrency=1, rate_limit=(2, timedelta(seconds=60)))
        broker.set_concurrency_limits([task])
        broker.set_rate_limits([task])
        broker.enqueue_jobs([self.job(clock) for _ in range(4)])
        (job,) = broker.get_jobs_from_queue("q", 10)
        job.status = JobStatus.SUCCEEDED
        broker.remove_job_from_running(job)
        assert len(broker.get_jobs_from_queue("q", 10)) == 1
        broker.set_concurrency_limits([self.task("task", rate_limit=task.rate_limit)])
        assert broker.get_jobs_from_queue("q", 10) == []
        broker.set_rate_limits([self.task("task")])
        assert len(broker.get_jobs_from_queue("q", 10)) == 2

    def test_flush_forgets_the_starts(self, broker: Broker, clock: ManualClock) -> None:
        """A flushed namespace starts counting again."""
        self.limit(broker, 1, 60)
        broker.enqueue_jobs([self.job(clock)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 1
        broker.flush()
        self.limit(broker, 1, 60)
        broker.enqueue_jobs([self.job(clock)])
        assert len(broker.get_jobs_from_queue("q", 10)) == 1


class AdoptJobsOfDeadWorkersContract(_Base):
    """:meth:`Broker.heartbeat`, :meth:`Broker.deregister_worker` and
    :meth:`Broker.adopt_jobs_of_dead_workers`."""

    def test_jobs_of_a_live_worker_are_left_alone(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """A worker that heartbeats within the threshold keeps its jobs."""
        other = make_broker(broker.namespace)
        other.heartbeat()
        broker.heartbeat()
        broker.enqueue_jobs([self.job(clock)])
        assert len(other.get_jobs_from_queue("q", 1)) == 1
        clock.advance(9)
        assert broker.adopt_jobs_of_dead_workers(broker.heartbeat().at - 10) == []

    def test_jobs_of_a_dead_worker_are_adopted(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Past the threshold, a silent worker's jobs move to the adopter with new tokens."""
        dead = make_broker(broker.namespace)
        dead.heartbeat()
        broker.enqueue_jobs([self.job(clock, max_retries=1), self.job(clock)])
        taken = dead.get_jobs_from_queue("q", 2)
        clock.advance(11)
        silent_since = broker.heartbeat().at - 10
        adopted = broker.adopt_jobs_of_dead_workers(silent_since)
        assert sorted(self.ids(adopted)) == sorted(self.ids(taken))
        assert all(job.status is JobStatus.RUNNING for job in adopted)
        assert broker.adopt_jobs_of_dead_workers(silent_since) == []
        # The dead worker comes back: its outcomes are refused...
        assert dead.remove_job_from_running(taken[0]) is RunningJobState.NOT_OURS
        assert dead.retry_job(taken[1]) is RunningJobState.NOT_OURS
        # ...while the adopter's are recorded.
        for job in adopted:
            assert broker.remove_job_from_running(job) is RunningJobState.RECORDED
        assert broker.count_jobs().running == 0

    def test_adopted_jobs_keep_their_slots(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Adopting a job does not free its concurrency slot; ending it does."""
        broker.set_concurrency_limits([self.task("task", max_concurrency=1)])
        dead = make_broker(broker.namespace)
        dead.heartbeat()
        broker.enqueue_jobs([self.job(clock), self.job(clock)])
        assert len(dead.get_jobs_from_queue("q", 10)) == 1
        clock.advance(11)
        (adopted,) = broker.adopt_jobs_of_dead_workers(broker.heartbeat().at - 10)
        assert broker.get_jobs_from_queue("q", 10) == []
        broker.remove_job_from_running(adopted)
        assert len(broker.get_jobs_from_queue("q", 10)) == 1

    def test_deregistered_worker_jobs_are_adopted_at_once(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """A worker that deregistered with running jobs leaves them without a timeout."""
        leaving = make_broker(broker.namespace)
        leaving.heartbeat()
        broker.heartbeat()
        broker.enqueue_jobs([self.job(clock)])
        leaving.get_jobs_from_queue("q", 1)
        leaving.deregister_worker()
        assert len(broker.adopt_jobs_of_dead_workers(broker.heartbeat().at - 10)) == 1

    def test_worker_that_never_heartbeated_is_dead(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Running jobs of an unknown worker are adopted."""
        ghost = make_broker(broker.namespace)
        broker.enqueue_jobs([self.job(clock)])
        ghost.get_jobs_from_queue("q", 1)
        assert len(broker.adopt_jobs_of_dead_workers(broker.heartbeat().at - 10)) == 1

    def test_silence_is_measured_to_the_time_given(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Whatever the time now, a worker that heartbeated since silent_since is alive."""
        other = make_broker(broker.namespace)
        other.heartbeat()
        broker.enqueue_jobs([self.job(clock)])
        assert len(other.get_jobs_from_queue("q", 1)) == 1
        before = broker.heartbeat().at
        clock.advance(3600)
        assert broker.adopt_jobs_of_dead_workers(before - 10) == []
        assert len(broker.adopt_jobs_of_dead_workers(before + 1)) == 1


class HeartbeatContract(_Base):
    """:meth:`Broker.heartbeat`."""

    def test_returns_the_time_it_recorded(self, broker: Broker, clock: ManualClock) -> None:
        """A heartbeat is recorded at the broker's time, and says when."""
        assert broker.heartbeat().at == pytest.approx(clock.time())
        clock.advance(5)
        assert broker.heartbeat().at == pytest.approx(clock.time())

    def test_held_jobs_still_running_are_not_lost(self, broker: Broker, clock: ManualClock) -> None:
        """Jobs handed to this worker and running under their token are not lost."""
        broker.enqueue_jobs([self.job(clock), self.job(clock)])
        broker.heartbeat()
        held = broker.get_jobs_from_queue("q", 2)
        assert broker.heartbeat(held).lost == ()
        assert broker.heartbeat().lost == ()

    def test_jobs_taken_over_or_ended_are_lost(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Held jobs adopted by another worker, ended, or unknown come back as lost."""
        broker.heartbeat()
        broker.enqueue_jobs([self.job(clock, max_retries=1) for _ in range(2)])
        taken, ended = broker.get_jobs_from_queue("q", 2)
        clock.advance(11)
        adopter = make_broker(broker.namespace)
        adopted = adopter.adopt_jobs_of_dead_workers(adopter.heartbeat().at - 10)
        assert sorted(self.ids(adopted)) == sorted(self.ids([taken, ended]))
        adopter.remove_job_from_running(next(j for j in adopted if j.id == ended.id))
        unknown = self.job(clock)
        unknown.handout_token = "nobody:1:1"
        lost = broker.heartbeat([taken, ended, unknown]).lost
        assert sorted(self.ids(list(lost))) == sorted(self.ids([taken, ended, unknown]))


class GetJobContract(_Base):
    """:meth:`Broker.get_job`."""

    def test_queued_job_round_trips(self, broker: Broker, clock: ManualClock) -> None:
        """A ready job is QUEUED, with every field it was enqueued with."""
        job = self.job(
            clock, "t", "a", max_retries=3, args=(1, "é", [None]), kwargs={"k": {"n": 2.5}}
        )
        broker.enqueue_jobs([job])
        info = broker.get_job(str(job.id))
        assert info == JobInfo(
            job.id, JobStatus.QUEUED, "t", "a", job.at, 0, 3, (1, "é", [None]), {"k": {"n": 2.5}}
        )

    def test_future_job_is_waiting_until_due(self, broker: Broker, clock: ManualClock) -> None:
        """A job whose at is later than now is WAITING; once due it is QUEUED, moved or not."""
        job = self.job(clock, delay=10)
        broker.enqueue_jobs([job])
        info = broker.get_job(str(job.id))
        assert info is not None
        assert (info.status, info.at) == (JobStatus.WAITING, job.at)
        clock.advance(10)
        assert (info := broker.get_job(str(job.id))) is not None
        assert info.status is JobStatus.QUEUED
        broker.move_future_jobs()
        assert (info := broker.get_job(str(job.id))) is not None
        assert info.status is JobStatus.QUEUED

    def test_running_job_has_its_start_time(self, broker: Broker, clock: ManualClock) -> None:
        """A handed-out job is RUNNING, started_at the broker's time of the hand-out, UTC."""
        broker.enqueue_jobs([job := self.job(clock)])
        clock.advance(7)
        handed_at = clock.time()
        broker.get_jobs_from_queue("q", 1)
        clock.advance(5)
        info = broker.get_job(str(job.id))
        assert info is not None
        assert info.status is JobStatus.RUNNING
        assert info.started_at is not None
        assert info.started_at.utcoffset() == timedelta(0)
        assert info.started_at.timestamp() == pytest.approx(handed_at, abs=1e-3)
        assert (info.ended_at, info.error, info.result) == (None, None, None)

    def test_job_retried_later_shows_its_retries(self, broker: Broker, clock: ManualClock) -> None:
        """A job put back for a later retry is WAITING, with its retries and new at."""
        job = self.hand_out(broker, clock, max_retries=2)
        job.status, job.retries = JobStatus.QUEUED, 1
        job.at = clock.now() + timedelta(seconds=30)
        broker.record_outcomes([job])
        info = broker.get_job(str(job.id))
        assert info is not None
        assert (info.status, info.retries, info.at) == (JobStatus.WAITING, 1, job.at)

    def test_succeeded_job_has_its_result(self, broker: Broker, clock: ManualClock) -> None:
        """A job that succeeded keeping its result is SUCCEEDED, the result decoded."""
        job = self.hand_out(broker, clock, args=(1,), kwargs={"k": "v"})
        clock.advance(3)
        self.succeed(job, clock)
        job.started_at = clock.now() - timedelta(seconds=3)
        broker.record_outcomes([job])
        info = broker.get_job(str(job.id))
        assert info is not None
        assert (info.status, info.result, info.error) == (JobStatus.SUCCEEDED, {"a": [1, 2]}, None)
        assert (info.started_at, info.ended_at) == (job.started_at, job.ended_at)
        assert (info.task_name, info.queue, info.at) == (job.task_name, job.queue, job.at)
        assert (info.task_args, info.task_kwargs) == ((1,), {"k": "v"})

    def test_result_is_kept_for_its_time(self, broker: Broker, clock: ManualClock) -> None:
        """A kept result is still there before its keep_result seconds have passed."""
        job = self.succeeded_job(broker, clock, keep_result=60)
        assert broker.get_job(str(job.id)) is not None
        clock.advance(30)
        info = broker.get_job(str(job.id))
        assert info is not None
        assert info.status is JobStatus.SUCCEEDED

    def test_result_expires(self, broker: Broker, clock: ManualClock) -> None:
        """A kept result is gone once its keep_result seconds have passed.

        A Redis broker may expire it on the server's own clock rather than on
        the broker's, so this advances the contract clock past the expiry and
        also lets real time pass, looking again until a deadline.
        """
        job = self.succeeded_job(broker, clock, keep_result=0.05)
        self.wait_until_forgotten(broker, clock, job, "the result outlived its keep_result")

    def test_failed_job_has_its_error(self, broker: Broker, clock: ManualClock) -> None:
        """A job that failed for good is FAILED, with its error, times and arguments."""
        job = self.hand_out(broker, clock, max_retries=2, args=([1, {"x": None}],))
        clock.advance(2)
        self.fail(job, clock, "it broke")
        broker.record_outcomes([job])
        info = broker.get_job(str(job.id))
        assert info is not None
        assert (info.status, info.error, info.result) == (
            JobStatus.FAILED,
            self.error("it broke"),
            None,
        )
        assert (info.started_at, info.ended_at) == (job.started_at, job.ended_at)
        assert (info.at, info.max_retries, info.task_args) == (job.at, 2, ([1, {"x": None}],))

    @pytest.mark.parametrize("keep_result", [None, 60.0])
    def test_success_without_result_keeps_nothing(
        self, broker: Broker, clock: ManualClock, keep_result: float | None
    ) -> None:
        """A job that succeeded without a result to keep is gone."""
        job = self.hand_out(broker, clock)
        self.succeed(job, clock, result_json=None, keep_result=keep_result)
        broker.record_outcomes([job])
        assert broker.get_job(str(job.id)) is None

    def test_unknown_job_is_none(self, broker: Broker, clock: ManualClock) -> None:
        """An id the namespace never held gives None."""
        broker.enqueue_jobs([self.job(clock)])
        assert broker.get_job(str(uuid.uuid4())) is None

    def test_stale_token_keeps_nothing(self, broker: Broker, clock: ManualClock) -> None:
        """An end recorded with a token that is no longer the job's keeps no record."""
        job = self.fail(self.hand_out(broker, clock), clock)
        job.handout_token = "stale"
        assert broker.record_outcomes([job]) == [RunningJobState.NOT_OURS]
        info = broker.get_job(str(job.id))
        assert info is not None
        assert info.status is JobStatus.RUNNING
        assert broker.failed_jobs(10) == []


class FailedJobsContract(_Base):
    """:meth:`Broker.failed_jobs`."""

    def test_empty_store_gives_empty_list(self, broker: Broker, clock: ManualClock) -> None:
        """With no failure there is nothing to list, whatever else is stored."""
        broker.enqueue_jobs([self.job(clock)])
        assert broker.failed_jobs(10) == []

    def test_latest_failure_first(self, broker: Broker, clock: ManualClock) -> None:
        """Failed jobs are listed the latest failure first, each FAILED with its error."""
        jobs = []
        for i in range(3):
            jobs.append(self.failed_job(broker, clock, f"boom {i}"))
            clock.advance(1)
        infos = broker.failed_jobs(10)
        assert self.info_ids(infos) == self.ids(jobs[::-1])
        assert [info.status for info in infos] == [JobStatus.FAILED] * 3
        assert [info.error for info in infos] == [self.error(f"boom {i}") for i in (2, 1, 0)]

    def test_limit_and_offset_page_through(self, broker: Broker, clock: ManualClock) -> None:
        """limit caps the list, offset skips the latest failures."""
        jobs = []
        for i in range(5):
            jobs.append(self.failed_job(broker, clock, f"boom {i}"))
            clock.advance(1)
        latest_first = self.ids(jobs[::-1])
        pages = [self.info_ids(broker.failed_jobs(2, offset)) for offset in (0, 2, 4, 5, 9)]
        assert pages == [latest_first[:2], latest_first[2:4], latest_first[4:], [], []]
        assert self.info_ids(broker.failed_jobs(10, 1)) == latest_first[1:]
        assert broker.failed_jobs(0) == []

    def test_job_failing_again_is_listed_once(self, broker: Broker, clock: ManualClock) -> None:
        """A requeued job that fails again is listed once, as the latest failure."""
        first = self.failed_job(broker, clock, "first")
        clock.advance(1)
        second = self.failed_job(broker, clock, "second")
        clock.advance(1)
        assert broker.requeue_failed([str(first.id)]) == 1
        (again,) = broker.get_jobs_from_queue("q", 1)
        broker.record_outcomes([self.fail(again, clock, "again")])
        infos = broker.failed_jobs(10)
        assert self.info_ids(infos) == [first.id, second.id]
        assert infos[0].error == self.error("again")
        assert broker.count_jobs().failed == 2


class RequeueFailedContract(_Base):
    """:meth:`Broker.requeue_failed`."""

    def test_requeued_job_runs_again(self, broker: Broker, clock: ManualClock) -> None:
        """A requeued job is queued now with its id and arguments, retries 0, and handed out."""
        job = self.hand_out(broker, clock, max_retries=1, args=(1, [2]), kwargs={"k": None})
        job.status, job.retries = JobStatus.QUEUED, 1
        broker.record_outcomes([job])
        (job,) = broker.get_jobs_from_queue("q", 1)
        broker.record_outcomes([self.fail(job, clock)])
        clock.advance(10)
        assert broker.requeue_failed([str(job.id)]) == 1
        info = broker.get_job(str(job.id))
        assert info is not None
        assert (info.status, info.retries, info.max_retries) == (JobStatus.QUEUED, 0, 1)
        assert info.at.timestamp() == pytest.approx(clock.time(), abs=1e-3)
        assert (info.error, info.ended_at) == (None, None)
        assert broker.failed_jobs(10) == []
        counts = broker.count_jobs()
        assert (counts.queued, counts.failed) == ({"q": 1}, 0)
        (again,) = broker.get_jobs_from_queue("q", 1)
        assert (again.id, again.retries, again.max_retries) == (job.id, 0, 1)
        assert (again.task_args, again.task_kwargs) == ((1, [2]), {"k": None})

    def test_unknown_ids_are_skipped(self, broker: Broker, clock: ManualClock) -> None:
        """Ids not in the failed store are skipped and not counted."""
        failed = self.failed_job(broker, clock)
        broker.enqueue_jobs([queued := self.job(clock, queue="other")])
        ids = [str(uuid.uuid4()), str(failed.id), str(queued.id)]
        assert broker.requeue_failed(ids) == 1
        assert broker.count_jobs().queued == {"q": 1, "other": 1}
        assert broker.requeue_failed([str(uuid.uuid4())]) == 0

    def test_none_requeues_every_job(self, broker: Broker, clock: ManualClock) -> None:
        """Without ids, every job of the failed store goes back to its own queue."""
        jobs = [self.failed_job(broker, clock, queue=queue) for queue in ("a", "b", "b")]
        assert broker.requeue_failed() == 3
        assert broker.failed_jobs(10) == []
        assert broker.count_jobs().queued == {"a": 1, "b": 2}
        assert self.ids(broker.get_jobs_from_queue("a", 10)) == [jobs[0].id]
        assert sorted(self.ids(broker.get_jobs_from_queue("b", 10))) == sorted(self.ids(jobs[1:]))
        assert broker.requeue_failed() == 0

    def test_same_id_twice_counts_once(self, broker: Broker, clock: ManualClock) -> None:
        """A job given twice, or requeued again, is queued once."""
        job = self.failed_job(broker, clock)
        assert broker.requeue_failed([str(job.id), str(job.id)]) == 1
        assert broker.requeue_failed([str(job.id)]) == 0
        assert broker.count_jobs().queued == {"q": 1}

    def test_requeued_job_joins_the_tail(self, broker: Broker, clock: ManualClock) -> None:
        """A requeued job is queued after the jobs already ready in its queue."""
        failed = self.failed_job(broker, clock)
        broker.enqueue_jobs([ready := self.job(clock)])
        broker.requeue_failed([str(failed.id)])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [ready.id, failed.id]


class PurgeFailedContract(_Base):
    """:meth:`Broker.purge_failed`."""

    def test_purge_by_ids(self, broker: Broker, clock: ManualClock) -> None:
        """The jobs given leave the failed store, each counted once; unknown ids are not."""
        gone, stays = self.failed_job(broker, clock), self.failed_job(broker, clock)
        assert broker.purge_failed([str(gone.id), str(uuid.uuid4()), str(gone.id)]) == 1
        assert self.info_ids(broker.failed_jobs(10)) == [stays.id]
        assert broker.get_job(str(gone.id)) is None
        assert broker.purge_failed([str(gone.id)]) == 0
        assert broker.count_jobs().failed == 1

    def test_purge_failed_before(self, broker: Broker, clock: ManualClock) -> None:
        """With failed_before, the jobs that failed before that time go, later ones stay."""
        old = self.failed_job(broker, clock)
        cut = clock.time() + 5
        clock.advance(10)
        recent = self.failed_job(broker, clock)
        clock.advance(10)
        assert broker.purge_failed(failed_before=cut) == 1
        assert self.info_ids(broker.failed_jobs(10)) == [recent.id]
        assert broker.get_job(str(old.id)) is None
        assert broker.purge_failed(failed_before=cut) == 0
        assert broker.purge_failed(failed_before=clock.time()) == 1
        assert broker.failed_jobs(10) == []

    def test_purge_everything(self, broker: Broker, clock: ManualClock) -> None:
        """With neither ids nor failed_before, every failed job goes."""
        jobs = [self.failed_job(broker, clock) for _ in range(3)]
        assert broker.purge_failed() == 3
        assert broker.failed_jobs(10) == []
        assert [broker.get_job(str(job.id)) for job in jobs] == [None] * 3
        assert broker.count_jobs().failed == 0
        assert broker.purge_failed() == 0

    def test_purge_touches_only_the_failed_store(self, broker: Broker, clock: ManualClock) -> None:
        """Ready, future and running jobs and kept results stay."""
        self.failed_job(broker, clock)
        kept = self.succeeded_job(broker, clock)
        running = self.hand_out(broker, clock)
        broker.enqueue_jobs([self.job(clock), self.job(clock, delay=60)])
        assert broker.purge_failed() == 1
        assert broker.get_job(str(kept.id)) is not None
        assert broker.get_job(str(running.id)) is not None
        counts = broker.count_jobs()
        assert (counts.queued, counts.future, counts.running) == ({"q": 1}, 1, 1)


class WatchJobContract(_Base):
    """:meth:`Broker.watch_job`.

    Spurious sets are allowed, so these tests clear the event before the end
    they wait for; a watcher may need a moment to receive ends recorded
    elsewhere (a Redis broker subscribes to them), hence the generous waits.
    """

    def watch_two_ends(self, watcher: Broker, recorder: Broker, clock: ManualClock) -> None:
        """End two jobs watched by ``watcher`` through ``recorder``: a failure
        recorded by record_outcomes, then a kept result by remove_job_from_running.

        Once the first event is set, the watcher receives ends (or set every
        event after subscribing); the second end then tells whether it does.
        """
        recorder.enqueue_jobs([self.job(clock), self.job(clock)])
        failed, succeeded = recorder.get_jobs_from_queue("q", 2)
        with (
            watcher.watch_job(str(failed.id)) as first,
            watcher.watch_job(str(succeeded.id)) as second,
        ):
            first.clear()
            recorder.record_outcomes([self.fail(failed, clock)])
            assert first.wait(10), "the end of a watched failed job set no event"
            second.clear()
            recorder.remove_job_from_running(self.succeed(succeeded, clock))
            assert second.wait(10), "the end of a watched job keeping its result set no event"

    def test_end_recorded_elsewhere_sets_the_event(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """An end with a record kept, by another broker of the namespace, sets the event."""
        watcher = make_broker(broker.namespace)
        try:
            self.watch_two_ends(watcher, broker, clock)
        finally:
            watcher.stop()

    def test_end_recorded_here_sets_the_event(self, broker: Broker, clock: ManualClock) -> None:
        """An end with a record kept, by the watching broker itself, sets the event."""
        try:
            self.watch_two_ends(broker, broker, clock)
        finally:
            broker.stop()


class CancelJobContract(_Base):
    """:meth:`Broker.cancel_job`."""

    OUTCOME = '{"status":6,"started":null,"ended":1790000000.5,"error":null}'

    def cancel(self, broker: Broker, job: Job, keep: float = 60.0) -> Job | None:
        return broker.cancel_job(str(job.id), self.OUTCOME, keep)

    def assert_cancelled(self, broker: Broker, job: Job) -> None:
        info = broker.get_job(str(job.id))
        assert info is not None
        assert (info.status, info.task_name, info.task_args) == (
            JobStatus.CANCELLED,
            job.task_name,
            job.task_args,
        )
        assert info.ended_at is not None
        assert info.ended_at.timestamp() == pytest.approx(1_790_000_000.5)

    def test_queued_job_never_runs(self, broker: Broker, clock: ManualClock) -> None:
        """A queued job is cancelled: returned QUEUED as stored, recorded CANCELLED,
        never handed out, no longer counted; the jobs around it keep their order."""
        jobs = [self.job(clock, args=(i,)) for i in range(3)]
        broker.enqueue_jobs(jobs)
        got = self.cancel(broker, jobs[1])
        assert got is not None
        assert (got.id, got.status, got.task_args) == (jobs[1].id, JobStatus.QUEUED, (1,))
        self.assert_cancelled(broker, jobs[1])
        assert broker.count_jobs().queued == {"q": 2}
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [jobs[0].id, jobs[2].id]
        assert broker.is_queue_empty("q")
        assert broker.count_jobs().queued == {}

    def test_future_job_never_runs(self, broker: Broker, clock: ManualClock) -> None:
        """A future job is cancelled WAITING, and is not moved once due."""
        job = self.job(clock, delay=30)
        broker.enqueue_jobs([job])
        got = self.cancel(broker, job)
        assert got is not None
        assert got.status is JobStatus.WAITING
        assert broker.count_jobs().future == 0
        clock.advance(31)
        assert broker.move_future_jobs() is None
        assert broker.get_jobs_from_queue("q", 10) == []
        self.assert_cancelled(broker, job)

    def test_running_job_is_no_longer_its_workers(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """A running job is cancelled RUNNING: its worker's outcome changes nothing,
        its slot is free at once, and started brokers of the namespace are told."""
        told: list[list[str]] = []
        arrived = threading.Event()
        listener = make_broker(broker.namespace)

        def tell(job_ids: list[str]) -> None:
            told.append(job_ids)
            arrived.set()

        listener.on_jobs_cancelled(tell)
        listener.start()
        try:
            broker.set_concurrency_limits([self.task("task", max_concurrency=1)])
            running = self.hand_out(broker, clock, max_retries=1)
            waiting = self.job(clock, max_retries=1)
            broker.enqueue_jobs([waiting])
            # Its notifications are live (a Redis broker subscribes in a thread of
            # its own): woken by these jobs, or by its own wake-up once subscribed.
            assert listener.wait_for_event(10)
            assert broker.get_jobs_from_queue("q", 1) == []
            got = self.cancel(broker, running)
            assert got is not None
            assert got.status is JobStatus.RUNNING
            assert arrived.wait(10), "no started broker was told of the cancel"
            assert told == [[str(running.id)]]
            assert broker.record_outcomes([self.fail(running, clock)]) == [RunningJobState.NOT_OURS]
            assert broker.failed_jobs(10) == []
            self.assert_cancelled(broker, running)
            assert self.ids(broker.get_jobs_from_queue("q", 1)) == [waiting.id]
            assert broker.count_jobs().running == 1
        finally:
            listener.stop()

    def test_blocked_job_is_dropped_where_it_waits(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """A job set aside behind a concurrency limit is cancelled and never runs;
        the others keep their order."""
        broker.set_concurrency_limits([self.task("limited", max_concurrency=1)])
        first = self.hand_out(broker, clock, task_name="limited", max_retries=1)
        blocked = [self.job(clock, "limited", max_retries=1) for _ in range(2)]
        free = self.job(clock, "free")
        broker.enqueue_jobs([*blocked, free])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [free.id]
        assert self.cancel(broker, blocked[0]) is not None
        assert broker.count_jobs().queued == {"q": 1}
        first.status = JobStatus.SUCCEEDED
        broker.record_outcomes([first])
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [blocked[1].id]
        assert broker.failed_jobs(10) == []

    def test_unknown_or_ended_job_is_left_alone(self, broker: Broker, clock: ManualClock) -> None:
        """None for an unknown id, a job ended (failed, or succeeded keeping its
        result) and a second cancel; their records stay as they were."""
        assert broker.cancel_job(str(uuid.uuid4()), self.OUTCOME, 60) is None
        failed = self.failed_job(broker, clock)
        kept = self.succeeded_job(broker, clock)
        assert self.cancel(broker, failed) is None
        assert self.cancel(broker, kept) is None
        assert self.info_ids(broker.failed_jobs(10)) == [failed.id]
        assert (info := broker.get_job(str(kept.id))) is not None
        assert info.status is JobStatus.SUCCEEDED
        queued = self.job(clock)
        broker.enqueue_jobs([queued])
        assert self.cancel(broker, queued) is not None
        assert self.cancel(broker, queued) is None
        self.assert_cancelled(broker, queued)

    def test_cancelled_unique_job_frees_its_key(self, broker: Broker, clock: ManualClock) -> None:
        """A cancelled waiting unique job no longer blocks an equal one."""
        first = EnqueueJobsContract.unique_job(clock)
        broker.enqueue_jobs([first])
        self.cancel(broker, first)
        second = EnqueueJobsContract.unique_job(clock)
        second_id = second.id
        broker.enqueue_jobs([second])
        assert second.id == second_id != first.id
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == [second_id]

    def test_watchers_are_told(self, broker: Broker, clock: ManualClock) -> None:
        """Cancelling a job sets the events of its watchers."""
        job = self.job(clock)
        broker.enqueue_jobs([job])
        try:
            with broker.watch_job(str(job.id)) as ended:
                ended.clear()
                self.cancel(broker, job)
                assert ended.wait(10), "cancelling a watched job set no event"
        finally:
            broker.stop()

    def test_record_expires(self, broker: Broker, clock: ManualClock) -> None:
        """The record is gone after its keep seconds (on the server's clock for Redis,
        hence real time passes too)."""
        job = self.job(clock)
        broker.enqueue_jobs([job])
        self.cancel(broker, job, keep=0.05)
        self.wait_until_forgotten(broker, clock, job, "the record outlived its keep seconds")


class CountJobsContract(_Base):
    """:meth:`Broker.count_jobs` and :meth:`Broker.is_queue_empty`."""

    def test_counts_by_state(self, broker: Broker, clock: ManualClock) -> None:
        """Ready, future and running jobs are counted where they are."""
        broker.enqueue_jobs(
            [self.job(clock, queue="a"), self.job(clock, queue="a"), self.job(clock, queue="b")]
        )
        broker.enqueue_jobs([self.job(clock, delay=5)])
        broker.get_jobs_from_queue("a", 1)
        counts = broker.count_jobs()
        assert (counts.queued, counts.future, counts.running) == ({"a": 1, "b": 1}, 1, 1)
        assert not broker.is_queue_empty("a")
        assert broker.is_queue_empty("q")

    def test_counts_failed_jobs(self, broker: Broker, clock: ManualClock) -> None:
        """Jobs of the failed store are counted as failed, and only they."""
        assert (broker.count_jobs().failed, broker.count_jobs().failed_dropped) == (0, 0)
        first = self.failed_job(broker, clock)
        self.failed_job(broker, clock)
        self.succeeded_job(broker, clock)
        broker.enqueue_jobs([self.job(clock)])
        counts = broker.count_jobs()
        assert (counts.queued, counts.running, counts.failed) == ({"q": 1}, 0, 2)
        assert counts.failed_dropped == 0
        broker.purge_failed([str(first.id)])
        assert broker.count_jobs().failed == 1


class InspectContract(_Base):
    """:meth:`Broker.inspect`."""

    def test_empty_namespace(self, broker: Broker) -> None:
        """A namespace holding nothing has no queue, no worker, no failure."""
        inspection = broker.inspect()
        assert (inspection.queues, inspection.workers) == ({}, ())
        assert (inspection.failed, inspection.failed_dropped) == (0, 0)

    def test_counts_each_queue_by_state(self, broker: Broker, clock: ManualClock) -> None:
        """Ready, held-back, future and running jobs count in their own queue,
        a queue holding only future jobs included."""
        broker.set_concurrency_limits([self.task("limited", max_concurrency=1)])
        broker.enqueue_jobs([self.job(clock, "limited", queue="a") for _ in range(3)])
        broker.enqueue_jobs([self.job(clock, queue="a"), self.job(clock, queue="b")])
        broker.enqueue_jobs([self.job(clock, queue="a", delay=5)])
        broker.enqueue_jobs([self.job(clock, queue="later", delay=5) for _ in range(2)])
        assert len(broker.get_jobs_from_queue("a", 2)) == 2  # a limited job, then the other
        assert broker.inspect().queues == {
            "a": QueueState(ready=0, held_back=2, future=1, running=2),
            "b": QueueState(ready=1, held_back=0, future=0, running=0),
            "later": QueueState(ready=0, held_back=0, future=2, running=0),
        }

    def test_jobs_held_back_by_a_rate_limit(self, broker: Broker, clock: ManualClock) -> None:
        """A job set aside by its task's rate limit is held back until it may start."""
        broker.set_rate_limits([self.task("rated", rate_limit=(1, timedelta(seconds=10)))])
        broker.enqueue_jobs([self.job(clock, "rated") for _ in range(2)])
        (started,) = broker.get_jobs_from_queue("q", 2)
        assert broker.inspect().queues["q"] == QueueState(0, 1, 0, 1)
        broker.remove_job_from_running(started)
        clock.advance(11)
        assert len(broker.get_jobs_from_queue("q", 2)) == 1
        assert broker.inspect().queues["q"] == QueueState(0, 0, 0, 1)

    def test_cancelled_jobs_do_not_count(self, broker: Broker, clock: ManualClock) -> None:
        """A cancelled job counts nowhere, whether it was ready or waiting."""
        ready, waiting = self.job(clock), self.job(clock, delay=5)
        broker.enqueue_jobs([ready, waiting, self.job(clock)])
        for job in (ready, waiting):
            assert broker.cancel_job(str(job.id), '{"cancelled": true}', 60) is not None
        assert broker.inspect().queues["q"] == QueueState(1, 0, 0, 0)

    def test_cancelled_held_back_job_beside_ready_ones(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """A cancelled job that was held back leaves the held-back count, not the ready one."""
        broker.set_concurrency_limits([self.task("limited", max_concurrency=1)])
        held = [self.job(clock, "limited") for _ in range(3)]
        broker.enqueue_jobs([*held, self.job(clock)])
        assert len(broker.get_jobs_from_queue("q", 2)) == 2
        broker.enqueue_jobs([self.job(clock)])
        assert broker.inspect().queues["q"] == QueueState(1, 2, 0, 2)
        assert broker.cancel_job(str(held[2].id), '{"cancelled": true}', 60) is not None
        assert broker.inspect().queues["q"] == QueueState(1, 1, 0, 2)

    def test_future_jobs_follow_every_move(self, broker: Broker, clock: ManualClock) -> None:
        """Future jobs count in their queue as they are stored, cancelled, come due
        and come back for a retry later."""
        a_jobs = [self.job(clock, queue="a", delay=10) for _ in range(3)]
        broker.enqueue_jobs([*a_jobs, self.job(clock, queue="b", delay=100)])
        assert broker.cancel_job(str(a_jobs[0].id), '{"cancelled": true}', 60) is not None
        assert {q: s.future for q, s in broker.inspect().queues.items()} == {"a": 2, "b": 1}
        clock.advance(11)
        broker.move_future_jobs()
        assert {q: s.future for q, s in broker.inspect().queues.items()} == {"a": 0, "b": 1}
        job = broker.get_jobs_from_queue("a", 1)[0]
        job.retries += 1
        job.at = clock.now() + timedelta(seconds=30)
        assert broker.retry_job(job) is RunningJobState.RECORDED
        assert broker.inspect().queues["a"] == QueueState(1, 0, 1, 0)

    def test_queues_without_jobs_are_left_out(self, broker: Broker, clock: ManualClock) -> None:
        """A queue appears while it holds or runs jobs, whatever else names it."""
        broker.register_periodic_tasks(
            [self.task("tick", queue="ticks", periodicity=timedelta(minutes=1))]
        )
        assert broker.get_jobs_from_queue("never", 1) == []
        job = self.hand_out(broker, clock)
        assert set(broker.inspect().queues) == {"q"}
        broker.remove_job_from_running(job)
        assert broker.inspect().queues == {}

    def test_workers_tell_who_they_are(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Each worker appears from its first heartbeat with its host, process
        id, running jobs and last heartbeat, the most recent first."""
        other = make_broker(broker.namespace)
        assert broker.inspect().workers == ()
        first = other.heartbeat().at
        clock.advance(2)
        broker.enqueue_jobs([self.job(clock), self.job(clock)])
        other.get_jobs_from_queue("q", 2)
        last = broker.heartbeat().at
        workers = broker.inspect().workers
        assert [w.id for w in workers] == [broker.worker_id, other.worker_id]
        assert [w.running for w in workers] == [0, 2]
        assert [w.last_heartbeat for w in workers] == pytest.approx([last, first])
        assert {(w.host, w.pid) for w in workers} == {(socket.gethostname(), os.getpid())}

    def test_workers_leave_when_they_stop_or_die(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """A worker that deregistered, or was declared dead, is gone."""
        stopping, dying = make_broker(broker.namespace), make_broker(broker.namespace)
        stopping.heartbeat()
        dying.heartbeat()
        stopping.deregister_worker()
        assert [w.id for w in broker.inspect().workers] == [dying.worker_id]
        clock.advance(11)
        broker.adopt_jobs_of_dead_workers(broker.heartbeat().at - 10)
        assert [w.id for w in broker.inspect().workers] == [broker.worker_id]

    def test_failed_store(self, broker: Broker, clock: ManualClock) -> None:
        """The failed store's jobs and those dropped from it are counted."""
        broker.max_failed = 1
        self.failed_job(broker, clock)
        self.failed_job(broker, clock)
        inspection = broker.inspect()
        assert (inspection.failed, inspection.failed_dropped) == (1, 1)


class JobActivityContract(_Base):
    """:meth:`Broker.job_activity`."""

    @staticmethod
    def counts(broker: Broker, minutes: int) -> list[tuple[int, int]]:
        return [(m.started, m.failed) for m in broker.job_activity(minutes)]

    def test_minutes_end_with_the_current_one(self, broker: Broker, clock: ManualClock) -> None:
        """Each minute is there, zeros included, the oldest first, the current one last."""
        minutes = broker.job_activity(3)
        current = clock.time() // 60 * 60
        assert [m.at for m in minutes] == [current - 120, current - 60, current]
        assert self.counts(broker, 3) == [(0, 0)] * 3
        assert len(broker.job_activity()) == 60

    def test_started_and_failed_jobs_count_in_their_minute(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """A job handed out counts as started; one entering the failed store as
        failed; a retry or a success is no failure."""
        broker.enqueue_jobs([self.job(clock, max_retries=1) for _ in range(3)])
        failing, retried, succeeding = broker.get_jobs_from_queue("q", 3)
        self.fail(failing, clock)
        retried.retries += 1
        retried.at = clock.now() + timedelta(hours=2)
        self.succeed(succeeding, clock)
        assert broker.record_outcomes([failing, succeeding]) == [RunningJobState.RECORDED] * 2
        assert broker.retry_job(retried) is RunningJobState.RECORDED
        assert self.counts(broker, 2) == [(0, 0), (3, 1)]
        clock.advance(60)
        self.failed_job(broker, clock)
        assert self.counts(broker, 3) == [(0, 0), (3, 1), (1, 1)]

    def test_an_hour_is_kept(self, broker: Broker, clock: ManualClock) -> None:
        """The counts of a minute are there for the next hour."""
        clock.set(clock.time() // 60 * 60)  # the start of a minute
        self.hand_out(broker, clock)
        for _ in range(59):
            clock.advance(60)
            self.hand_out(broker, clock)
        assert self.counts(broker, 60) == [(1, 0)] * 60
        clock.advance(60)
        assert self.counts(broker, 60) == [(1, 0)] * 59 + [(0, 0)]

    @pytest.mark.parametrize("minutes", [0, 61, -1, 1.5, "5", True])
    def test_minutes_out_of_range_are_refused(self, broker: Broker, minutes: Any) -> None:
        """Only 1 to 60 minutes can be asked for."""
        with pytest.raises(ValueError, match="minutes must be"):
            broker.job_activity(minutes)


class AsyncVariantsContract(_Base):
    """:meth:`Broker.now_async`, :meth:`Broker.enqueue_jobs_async`,
    :meth:`Broker.get_job_async` and :meth:`Broker.close_async`: the same
    contracts as the blocking operations, awaited from an event loop."""

    @staticmethod
    def run(broker: Broker, body: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
        """Await ``body()`` in a new event loop, then close what the broker holds for it."""

        async def main() -> _T:
            try:
                return await body()
            finally:
                await broker.close_async()

        return asyncio.run(main())

    def test_enqueue_stores_as_the_blocking_call(self, broker: Broker, clock: ManualClock) -> None:
        """Ready jobs are handed out in order, a future one is kept aside, a
        call sent again stores nothing twice, and no job is accepted."""
        ready = [self.job(clock, args=(i,)) for i in range(3)]
        future = self.job(clock, delay=60)

        async def body() -> None:
            await broker.enqueue_jobs_async([*ready, future])
            await broker.enqueue_jobs_async([ready[0], future])
            await broker.enqueue_jobs_async([])

        self.run(broker, body)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == self.ids(ready)
        assert broker.count_jobs().future == 1

    def test_unique_job_takes_the_id_of_the_holder(
        self, broker: Broker, clock: ManualClock
    ) -> None:
        """A job whose unique key a waiting job holds takes that job's id."""
        first, second = EnqueueJobsContract.unique_job(clock), EnqueueJobsContract.unique_job(clock)
        broker.enqueue_jobs([first])

        async def body() -> None:
            await broker.enqueue_jobs_async([second])

        self.run(broker, body)
        assert second.id == first.id
        assert sum(broker.count_jobs().queued.values()) == 1

    def test_get_job_reads_as_the_blocking_call(self, broker: Broker, clock: ManualClock) -> None:
        """Queued, waiting, running and succeeded jobs, and an unknown id, read the same."""
        queued, waiting = self.job(clock, queue="other"), self.job(clock, delay=60)
        broker.enqueue_jobs([queued, waiting])
        running, succeeded = self.hand_out(broker, clock), self.succeeded_job(broker, clock)
        ids = [str(j.id) for j in (queued, waiting, running, succeeded)] + [str(uuid.uuid4())]

        async def body() -> list[JobInfo | None]:
            return [await broker.get_job_async(i) for i in ids]

        infos = self.run(broker, body)
        assert infos == [broker.get_job(i) for i in ids]
        assert [None if i is None else i.status for i in infos] == [
            JobStatus.QUEUED,
            JobStatus.WAITING,
            JobStatus.RUNNING,
            JobStatus.SUCCEEDED,
            None,
        ]

    def test_now_is_the_broker_time(self, broker: Broker, clock: ManualClock) -> None:
        """now_async tells the time of now, the broker's clock."""
        clock.advance(12.5)

        async def body() -> float:
            return (await broker.now_async()).timestamp()

        assert self.run(broker, body) == pytest.approx(broker.now().timestamp(), abs=1e-3)

    def test_one_event_loop_after_another(self, broker: Broker, clock: ManualClock) -> None:
        """A loop that ends after close_async leaves nothing that another loop
        trips over: each awaits the broker in turn (asyncio.run, one after
        another, as a test suite does)."""
        jobs = [self.job(clock, args=(i,)) for i in range(3)]
        for job in jobs:

            async def body(job: Job = job) -> JobInfo | None:
                await broker.enqueue_jobs_async([job])
                return await broker.get_job_async(str(job.id))

            info = self.run(broker, body)
            assert info is not None
            assert (info.id, info.status) == (job.id, JobStatus.QUEUED)
        assert self.ids(broker.get_jobs_from_queue("q", 10)) == self.ids(jobs)

        async def nothing_opened() -> None:
            await broker.close_async()

        self.run(broker, nothing_opened)


class FlushContract(_Base):
    """:meth:`Broker.flush`."""

    def test_flush_empties_only_its_namespace(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Flushing removes every job of the namespace and nothing of another."""
        other = make_broker(f"{broker.namespace}-other")
        for b in (broker, other):
            b.enqueue_jobs([self.job(clock), self.job(clock, delay=5)])
            b.register_periodic_tasks([self.task("tick", periodicity=timedelta(seconds=5))])
        broker.get_jobs_from_queue("q", 1)
        broker.flush()
        counts = broker.count_jobs()
        assert (counts.queued, counts.future, counts.running) == ({}, 0, 0)
        assert broker.move_future_jobs() is None
        other_counts = other.count_jobs()
        assert (other_counts.queued, other_counts.future) == ({"q": 1}, 1)
        assert other.move_future_jobs() == pytest.approx(5)
        other.flush()

    def test_flush_removes_kept_records(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Flushing removes failed jobs, their dropped count and kept results, of its
        namespace only."""
        other = make_broker(f"{broker.namespace}-other")
        broker.max_failed = 1
        failed = [self.failed_job(broker, clock) for _ in range(2)]
        kept = self.succeeded_job(broker, clock)
        other_failed = self.failed_job(other, clock)
        other_kept = self.succeeded_job(other, clock)
        broker.flush()
        assert broker.failed_jobs(10) == []
        assert [broker.get_job(str(job.id)) for job in (*failed, kept)] == [None] * 3
        counts = broker.count_jobs()
        assert (counts.failed, counts.failed_dropped) == (0, 0)
        assert self.info_ids(other.failed_jobs(10)) == [other_failed.id]
        assert other.get_job(str(other_kept.id)) is not None
        other.flush()


class NamespaceContract(_Base):
    """Namespaces sharing one storage do not see each other."""

    def test_namespaces_are_isolated(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Jobs, periodic tasks, limits and workers of one namespace stay in it."""
        other = make_broker(f"{broker.namespace}-other")
        broker.set_concurrency_limits([self.task("task", max_concurrency=1)])
        broker.register_periodic_tasks([self.task("tick", periodicity=timedelta(seconds=5))])
        broker.enqueue_jobs([self.job(clock), self.job(clock, delay=1)])
        assert other.get_jobs_from_queue("q", 10) == []
        assert other.move_future_jobs() is None
        other.enqueue_jobs([self.job(clock), self.job(clock)])
        assert len(other.get_jobs_from_queue("q", 10)) == 2
        assert len(broker.get_jobs_from_queue("q", 10)) == 1
        clock.advance(60)
        third = make_broker(other.namespace)
        assert len(third.adopt_jobs_of_dead_workers(10)) == 2
        assert broker.count_jobs().running == 1
        other.flush()


class WaitForEventContract(_Base):
    """:meth:`Broker.wait_for_event` and :meth:`Broker.wake_up`.

    Spurious wake-ups are allowed, so these tests check that a wake-up comes
    when it must, and that an idle broker that was never started does not
    wake up by itself.
    """

    def test_timeout_without_event_returns_false(self, broker: Broker) -> None:
        """Nothing happened: the wait ends after its timeout and says so."""
        assert broker.wait_for_event(0.05) is False

    def test_wake_up_before_the_wait_counts(self, broker: Broker) -> None:
        """A wake_up() that came first ends the next wait at once, and only that one."""
        broker.wake_up()
        assert broker.wait_for_event(10) is True
        assert broker.wait_for_event(0.05) is False

    def test_wake_up_from_another_thread_ends_a_wait(self, broker: Broker) -> None:
        """A wait in progress ends when another thread calls wake_up()."""
        waiting = threading.Event()
        woken: list[bool] = []

        def wait() -> None:
            waiting.set()
            woken.append(broker.wait_for_event(30))

        thread = threading.Thread(target=wait)
        thread.start()
        assert waiting.wait(10)
        broker.wake_up()
        thread.join(30)
        assert woken == [True]

    def test_jobs_of_other_workers_wake_a_waiting_one(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """A job made ready, or retried, by another broker of the namespace wakes this one."""
        waiter = make_broker(broker.namespace)
        waiter.start()
        try:
            broker.enqueue_jobs([self.job(clock, max_retries=1)])
            # This, or the broker's own wake-up once its notifications are live.
            assert waiter.wait_for_event(10)
            broker.enqueue_jobs([self.job(clock)])
            assert waiter.wait_for_event(10), "a ready job stored elsewhere woke nobody"
            (job,) = broker.get_jobs_from_queue("q", 1)
            job.retries += 1
            broker.retry_job(job)
            assert waiter.wait_for_event(10), "a job retried elsewhere woke nobody"
        finally:
            waiter.stop()


class WaitForJobsContract(_Base):
    """:meth:`Broker.wait_for_jobs`: a job stored during or after a worker's wait
    reaches that worker once, or stays in line for any worker; never both,
    never neither.

    A broker may hand jobs out to the wait (the RedisBroker does), or only
    wake it up (the default). These tests hold either way: each takes the jobs
    the wait returned together with those of the worker's next fetch.
    """

    def _wait_in_thread(
        self, broker: Broker, timeout: float = 30
    ) -> tuple[threading.Thread, threading.Event, list[list[Job]]]:
        """A thread in ``broker.wait_for_jobs("q", 4, timeout)``; its event is set
        just before the call, and the list gets what the call returned."""
        calling = threading.Event()
        returned: list[list[Job]] = []

        def wait() -> None:
            calling.set()
            returned.append(broker.wait_for_jobs("q", 4, timeout))

        thread = threading.Thread(target=wait)
        thread.start()
        return thread, calling, returned

    def test_nothing_to_hand_out_ends_the_wait_empty(self, broker: Broker) -> None:
        """With no job, the wait ends after its timeout and returns no job."""
        assert broker.wait_for_jobs("q", 4, 0.05) == []

    def test_a_job_stored_during_the_wait_reaches_the_worker_once(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """The job stored while the worker waits ends the wait, and is the
        worker's once: returned by the wait, or by the worker's next fetch."""
        producer = make_broker(broker.namespace)
        broker.start()
        try:
            assert broker.get_jobs_from_queue("q", 4) == []
            thread, calling, returned = self._wait_in_thread(broker)
            assert calling.wait(10)
            job = self.job(clock)
            producer.enqueue_jobs([job])
            thread.join(30)
            assert not thread.is_alive(), "a job stored during the wait did not end it"
            got = returned[0] + broker.get_jobs_from_queue("q", 4)
            assert self.ids(got) == [job.id]
            assert got[0].status is JobStatus.RUNNING
            assert got[0].handout_token
            assert broker.get_jobs_from_queue("q", 4) == []
            counts = producer.count_jobs()
            assert (counts.queued.get("q", 0), counts.running) == (0, 1)
        finally:
            broker.stop()

    def test_wake_up_ends_a_wait_for_jobs(self, broker: Broker) -> None:
        """A wake_up() from another thread ends a wait for jobs in progress."""
        thread, calling, returned = self._wait_in_thread(broker)
        assert calling.wait(10)
        broker.wake_up()
        thread.join(30)
        assert returned == [[]]

    def test_jobs_stored_after_the_wait_come_with_the_next_fetch(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """Jobs stored after the wait ended, before the worker fetches again,
        are that fetch's (handed out to the wait, or still in line), once."""
        producer = make_broker(broker.namespace)
        assert broker.wait_for_jobs("q", 4, 0.01) == []
        jobs = [self.job(clock), self.job(clock)]
        producer.enqueue_jobs(jobs)
        got = broker.get_jobs_from_queue("q", 4)
        assert self.ids(got) == self.ids(jobs)
        assert [job.handout_token for job in got] != [None, None]
        assert broker.get_jobs_from_queue("q", 4) == []
        assert producer.get_jobs_from_queue("q", 4) == []

    def test_a_worker_that_stops_puts_back_the_jobs_of_its_wait(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """deregister_worker() after a wait: jobs stored since are in line for
        any worker, in their order, and none is running."""
        other = make_broker(broker.namespace)
        assert broker.wait_for_jobs("q", 4, 0.01) == []
        jobs = [self.job(clock), self.job(clock)]
        other.enqueue_jobs(jobs)
        broker.deregister_worker()
        counts = other.count_jobs()
        assert (counts.queued.get("q", 0), counts.running) == (2, 0)
        assert self.ids(other.get_jobs_from_queue("q", 4)) == self.ids(jobs)

    def test_a_fetch_of_another_queue_puts_back_the_jobs_of_the_wait(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """A worker that fetches from another queue after waiting for jobs of
        "q" leaves the jobs of "q" stored since to any worker."""
        other = make_broker(broker.namespace)
        assert broker.wait_for_jobs("q", 4, 0.01) == []
        job = self.job(clock)
        other.enqueue_jobs([job])
        assert broker.get_jobs_from_queue("elsewhere", 4) == []
        assert self.ids(other.get_jobs_from_queue("q", 4)) == [job.id]
        assert broker.get_jobs_from_queue("q", 4) == []

    def test_a_wait_gets_no_job_beyond_its_task_limit(
        self, make_broker: MakeBroker, broker: Broker, clock: ManualClock
    ) -> None:
        """A job of a task at its concurrency limit is not handed out to a wait:
        it starts once the running one ended."""
        other = make_broker(broker.namespace)
        other.set_concurrency_limits([self.task("task", max_concurrency=1)])
        running = self.hand_out(other, clock)
        assert broker.wait_for_jobs("q", 4, 0.01) == []
        job = self.job(clock)
        other.enqueue_jobs([job])
        assert broker.get_jobs_from_queue("q", 4) == []
        assert other.record_outcomes([self.succeed(running, clock)]) == [RunningJobState.RECORDED]
        assert self.ids(broker.get_jobs_from_queue("q", 4)) == [job.id]


class BrokerContract(
    EnqueueJobsContract,
    GetJobsFromQueueContract,
    RemoveJobFromRunningContract,
    RetryJobContract,
    RecordOutcomesContract,
    MoveFutureJobsContract,
    RegisterPeriodicTasksContract,
    SetConcurrencyLimitsContract,
    SetRateLimitsContract,
    HeartbeatContract,
    AdoptJobsOfDeadWorkersContract,
    GetJobContract,
    FailedJobsContract,
    RequeueFailedContract,
    PurgeFailedContract,
    CancelJobContract,
    WatchJobContract,
    CountJobsContract,
    InspectContract,
    JobActivityContract,
    AsyncVariantsContract,
    FlushContract,
    NamespaceContract,
    WaitForEventContract,
    WaitForJobsContract,
):
    """The whole broker contract; subclass it and provide ``make_broker``."""
