"""An engine's own heartbeats: the evidence to declare others dead, and the lease to start jobs."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Iterator
from datetime import datetime, timezone

import pytest

from spinach import MemoryBroker, ThreadWorkers, signals
from spinach._liveness import Liveness
from spinach.brokers.base import Heartbeat
from spinach.brokers.memory import MemoryStore
from spinach.clock import ManualClock
from spinach.job import Job
from spinach.testing import wait_for


class OutageBroker(MemoryBroker):
    """A MemoryBroker whose heartbeats fail while ``down`` is set."""

    def __init__(self, clock: ManualClock, store: MemoryStore) -> None:
        super().__init__(clock, store=store)
        self.down = threading.Event()
        self.failures = 0

    def heartbeat(self, held: Collection[Job] = ()) -> Heartbeat:
        if self.down.is_set():
            self.failures += 1
            raise ConnectionError("broker out of reach")
        return super().heartbeat(held)


@pytest.fixture
def broker(clock: ManualClock, store: MemoryStore, namespace: str) -> OutageBroker:
    broker = OutageBroker(clock, store)
    broker.namespace = namespace
    return broker


@pytest.fixture
def stopping() -> threading.Event:
    return threading.Event()


def liveness_of(broker: MemoryBroker, stopping: threading.Event, timeout: float) -> Liveness:
    return Liveness(broker, timeout / 10, timeout, stopping)


class TestEvidence:
    def test_no_evidence_before_a_whole_timeout_on_schedule(
        self, broker: OutageBroker, clock: ManualClock, stopping: threading.Event
    ) -> None:
        """Others are declared dead only once this engine's heartbeats kept their
        schedule for dead_worker_timeout, and only if silent that long before the last."""
        liveness = liveness_of(broker, stopping, 10)
        assert liveness.max_gap == pytest.approx(4.5)
        start = liveness.heartbeat().at
        for _ in range(4):
            clock.advance(2)
            liveness.heartbeat()
            assert liveness.dead_before() is None
        clock.advance(2)
        last = liveness.heartbeat().at
        assert liveness.dead_before() == pytest.approx(start)
        assert liveness.dead_before() == pytest.approx(last - 10)

    @pytest.mark.parametrize("kind", ["gap", "failure"])
    def test_a_gap_or_a_failure_breaks_the_run(
        self, broker: OutageBroker, clock: ManualClock, stopping: threading.Event, kind: str
    ) -> None:
        """A heartbeat recorded over max_gap after the last one, or a failed one,
        starts the wait for evidence again."""
        liveness = liveness_of(broker, stopping, 10)
        for _ in range(6):
            liveness.heartbeat()
            clock.advance(2)
        assert liveness.dead_before() is not None
        if kind == "gap":
            clock.advance(4)  # 6 s after the last heartbeat: over 4.5
        else:
            broker.down.set()
            with pytest.raises(ConnectionError):
                liveness.heartbeat()
            broker.down.clear()
        restart = liveness.heartbeat().at
        assert liveness.dead_before() is None
        while clock.time() < restart + 10:
            clock.advance(2)
            liveness.heartbeat()
        assert liveness.dead_before() == pytest.approx(clock.time() - 10)

    def test_a_heartbeat_recorded_late_by_another_thread_keeps_the_run(
        self, broker: OutageBroker, clock: ManualClock, stopping: threading.Event
    ) -> None:
        """Two threads heartbeating at once may record out of order: that is no gap."""
        liveness = liveness_of(broker, stopping, 10)
        first = liveness.heartbeat().at
        for _ in range(5):
            clock.advance(2)
            liveness.heartbeat()
        clock.advance(-3)
        liveness.heartbeat()
        clock.advance(3)
        liveness.heartbeat()
        assert liveness.dead_before() == pytest.approx(first)


@pytest.fixture
def workers(namespace: str) -> Iterator[list[ThreadWorkers]]:
    made: list[ThreadWorkers] = []
    yield made
    for pool in made:
        pool.stop(timeout=10)


def take_over(store: MemoryStore, clock: ManualClock, namespace: str) -> list[Job]:
    """Another worker, a minute later, takes over the jobs of the silent ones."""
    adopter = MemoryBroker(clock, store=store)
    adopter.namespace = namespace
    clock.advance(60)
    return adopter.adopt_jobs_of_dead_workers(adopter.heartbeat().at - 10)


def held_through_a_stall(
    broker: OutageBroker, liveness: Liveness, count: int, started: list[int]
) -> tuple[list[Job], float]:
    """``count`` jobs handed to this worker, which then stalls (its heartbeats
    fail) until its lease has run out; their runs append their number to
    ``started``. Returns them, and when they were handed out."""
    broker.enqueue_jobs([Job("run", "q", broker.now(), 0, (i,)) for i in range(count)])
    liveness.heartbeat()
    handed_out = time.monotonic()
    held = broker.get_jobs_from_queue("q", count)
    for job in held:
        job.task_func = started.append
    broker.down.set()
    wait_for(lambda: not liveness.is_open(handed_out), timeout=5)
    return held, handed_out


class TestLease:
    def test_lease_lapses_half_a_timeout_after_the_last_heartbeat(
        self, broker: OutageBroker, stopping: threading.Event
    ) -> None:
        """Jobs start without a round trip while the last heartbeat is under T/2 old."""
        liveness = liveness_of(broker, stopping, 0.4)
        handed_out = time.monotonic()
        assert not liveness.is_open(handed_out)
        liveness.heartbeat()
        assert not liveness.is_open(handed_out)  # handed out before the lease began
        handed_out = time.monotonic()
        assert liveness.is_open(handed_out)
        wait_for(lambda: not liveness.is_open(handed_out), timeout=5)

    def test_a_heartbeat_after_a_lapse_does_not_clear_older_jobs(
        self, broker: OutageBroker, stopping: threading.Event
    ) -> None:
        """Once the lease broke, jobs handed out before it holds again need confirming,
        whatever heartbeat renewed it: the worker may have been declared dead meanwhile."""
        liveness = liveness_of(broker, stopping, 0.4)
        liveness.heartbeat()
        handed_out = time.monotonic()
        assert liveness.is_open(handed_out)
        wait_for(lambda: not liveness.is_open(handed_out), timeout=5)
        liveness.heartbeat()
        assert not liveness.is_open(handed_out)
        assert liveness.is_open(time.monotonic())

    @pytest.mark.parametrize("taken_over", [False, True])
    def test_jobs_are_confirmed_after_a_stall(
        self,
        broker: OutageBroker,
        store: MemoryStore,
        clock: ManualClock,
        stopping: threading.Event,
        namespace: str,
        workers: list[ThreadWorkers],
        taken_over: bool,
    ) -> None:
        """A worker whose lease lapsed starts no job until one heartbeat has confirmed
        them; the jobs another worker took over meanwhile are dropped, never started."""
        liveness = liveness_of(broker, stopping, 0.4)
        started: list[int] = []
        held, handed_out = held_through_a_stall(broker, liveness, 4, started)
        if taken_over:
            assert len(take_over(store, clock, namespace)) == 4
        pool = ThreadWorkers(2, namespace, gate=liveness)
        workers.append(pool)
        pool.submit_jobs(held, handed_out)
        wait_for(lambda: broker.failures >= 1)
        assert started == []
        broker.down.clear()
        if taken_over:
            wait_for(lambda: pool.idle)
            assert started == []
            assert pool.collect_finished() == []
        else:
            wait_for(lambda: len(started) == 4)
            assert sorted(started) == [0, 1, 2, 3]

    def test_jobs_that_cannot_be_confirmed_are_given_up_at_a_stop(
        self,
        broker: OutageBroker,
        stopping: threading.Event,
        namespace: str,
        workers: list[ThreadWorkers],
    ) -> None:
        """Stopping while the broker is out of reach, unconfirmed jobs are not started."""
        liveness = liveness_of(broker, stopping, 0.4)
        started: list[int] = []
        held, handed_out = held_through_a_stall(broker, liveness, 3, started)
        pool = ThreadWorkers(1, namespace, gate=liveness)
        workers.append(pool)
        pool.submit_jobs(held, handed_out)
        wait_for(lambda: broker.failures >= 1)
        stopping.set()
        assert pool.stop(timeout=10)
        assert started == []
        assert pool.idle
        assert broker.count_jobs().running == 3  # left for another worker to take over

    @pytest.mark.parametrize("taken_over", [False, True])
    def test_a_stall_between_start_and_call(
        self,
        broker: OutageBroker,
        store: MemoryStore,
        clock: ManualClock,
        stopping: threading.Event,
        namespace: str,
        workers: list[ThreadWorkers],
        taken_over: bool,
    ) -> None:
        """A worker that stalls after it announced a job but before calling its task
        asks the broker once; the task is not called if the job was taken over."""
        liveness = liveness_of(broker, stopping, 0.4)
        called: list[int] = []
        broker.enqueue_jobs([Job("run", "q", broker.now(), 0, (1,))])
        liveness.heartbeat()
        handed_out = time.monotonic()
        (job,) = broker.get_jobs_from_queue("q", 1)
        job.task_func = called.append

        def stall(sender: str, job: Job) -> None:
            # The stall, in the job_started receiver: past the lease, and
            # long enough for another worker to take the job over.
            wait_for(lambda: not liveness.is_open(handed_out), timeout=5)
            if taken_over:
                assert len(take_over(store, clock, namespace)) == 1

        pool = ThreadWorkers(1, namespace, gate=liveness)
        workers.append(pool)
        with signals.job_started.connected_to(stall, sender=namespace):
            pool.submit_jobs([job], handed_out)
            if taken_over:
                wait_for(lambda: pool.idle)  # forgotten, not handed back
            else:
                wait_for(lambda: called == [1] and len(pool.collect_finished()) == 1)
        assert called == ([] if taken_over else [1])


class TestSameJobTwice:
    """A job taken over while its worker stalled may come back to that worker: a
    second object with the same id, while the first one waits or runs."""

    def test_a_dropped_copy_waiting_in_the_queue_does_not_run(
        self, namespace: str, workers: list[ThreadWorkers]
    ) -> None:
        """The copy dropped as taken over never runs; the copy handed out again does."""
        release = threading.Event()
        ran: list[str] = []
        pool = ThreadWorkers(1, namespace)
        workers.append(pool)
        blocker = Job("block", "q", datetime.now(timezone.utc), 0)
        blocker.task_func = lambda: release.wait(10)
        first = Job("job", "q", datetime.now(timezone.utc), 1)
        first.task_func = lambda: ran.append("first")
        again = Job.deserialize(first.serialize())
        again.task_func = lambda: ran.append("again")
        pool.submit_jobs([blocker, first])
        pool.drop([first])
        pool.submit_jobs([again])
        release.set()
        finished: list[Job] = []
        wait_for(lambda: finished.extend(pool.collect_finished()) or len(finished) == 2)
        assert ran == ["again"]
        assert {id(job) for job in finished} == {id(blocker), id(again)}
        assert pool.idle

    def test_a_copy_handed_out_while_the_first_runs_runs_too(
        self, namespace: str, workers: list[ThreadWorkers]
    ) -> None:
        """Both copies run and are handed back, each once; no slot is leaked."""
        release = threading.Event()
        ran: list[str] = []
        pool = ThreadWorkers(2, namespace)
        workers.append(pool)
        first = Job("job", "q", datetime.now(timezone.utc), 1)
        first.task_func = lambda: (ran.append("first"), release.wait(10))
        again = Job.deserialize(first.serialize())
        again.task_func = lambda: ran.append("again")
        pool.submit_jobs([first])
        wait_for(lambda: ran == ["first"])
        pool.submit_jobs([again])
        wait_for(lambda: ran == ["first", "again"])
        release.set()
        finished: list[Job] = []
        wait_for(lambda: finished.extend(pool.collect_finished()) or len(finished) == 2)
        assert {id(job) for job in finished} == {id(first), id(again)}
        assert pool.idle
