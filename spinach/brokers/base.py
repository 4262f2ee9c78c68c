"""The broker interface: the atomic storage operations of a task queue.

A broker stores jobs, moves them and hands them out, each operation atomic.
It decides no policy: whether a failed job is retried, when, and what a dead
worker's jobs become is decided by the engine, above this interface, once for
every broker.

Vocabulary used by the contracts below:

* a job is **ready** when its queue holds it, **future** when it waits for
  its time, **running** from the moment it is handed out until its outcome is
  recorded;
* a **worker** is one broker object serving one engine, known by
  :attr:`Broker.worker_id`; its jobs are the running jobs it was handed;
* every hand-out carries a **token** (:attr:`Job.handout_token`): recording
  an outcome with a token that is no longer the job's changes nothing, so a
  worker declared dead cannot overwrite the work of the one that took over;
* **now** is :meth:`Broker.now`, the broker's clock, never a worker's own;
* a job **ended for good** (status in :data:`FINISHED`) leaves the broker,
  except for a **record** of it (see :mod:`spinach._ended`): a job that
  failed goes to the **failed store**, bounded by :attr:`Broker.max_failed`,
  and one that succeeded is kept for its ``keep_result`` seconds when it has
  a result to keep.

Each atomic operation here has a contract test class named after it in
:mod:`spinach.testing.contract`, and, when Redis needs more than one command
for it, a script of the same name in ``lua/``.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import json
import os
import socket
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Collection, Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Callable

import attrs

from ..clock import Clock, SystemClock
from ..const import DEFAULT_MAX_FAILED, DEFAULT_NAMESPACE
from ..exc import BrokerInUseError, ConfigurationError
from ..job import FINISHED, Job, JobInfo

if TYPE_CHECKING:
    from ..task import Task

__all__ = [
    "FINISHED",
    "Broker",
    "Heartbeat",
    "Inspection",
    "JobCounts",
    "MinuteActivity",
    "QueueState",
    "RunningJobState",
    "WorkerState",
    "runs_again",
]


def runs_again(job: Job) -> bool:
    """Whether recording the end of ``job`` puts it back for another run.

    A job runs again unless its status says it ended for good (in
    :data:`FINISHED`): the engine sets that status once it has decided,
    from the outcome and the task's retries, that it will not run again.
    """
    return job.status not in FINISHED


class RunningJobState(enum.IntEnum):
    """Outcome of recording the end of a running job."""

    #: The outcome was recorded.
    RECORDED = 0
    #: The job is no longer ours (its worker was declared dead and the job
    #: went to another one): nothing changed.
    NOT_OURS = 1


@attrs.frozen
class Heartbeat:
    """What :meth:`Broker.heartbeat` recorded."""

    #: When the heartbeat was recorded, POSIX seconds on the broker's clock.
    at: float
    #: The jobs of those given as held that no longer run under this worker
    #: with their token: taken over, ended, or unknown.
    lost: tuple[Job, ...] = ()


@attrs.frozen
class JobCounts:
    """How many jobs a namespace holds, by state."""

    #: ready jobs by queue, including jobs waiting for a concurrency slot
    queued: dict[str, int]
    future: int
    running: int
    #: jobs in the failed store
    failed: int = 0
    #: jobs dropped from the failed store to keep it within ``max_failed``, ever
    failed_dropped: int = 0


@attrs.frozen
class QueueState:
    """The jobs of one queue, by state (see :meth:`Broker.inspect`)."""

    #: jobs that can start now
    ready: int
    #: ready jobs set aside while their task is at its concurrency or rate limit
    held_back: int
    #: jobs waiting for their time
    future: int
    running: int


@attrs.frozen
class WorkerState:
    """A worker registered in a namespace (see :meth:`Broker.inspect`)."""

    #: the worker's id (:attr:`Broker.worker_id`)
    id: str
    #: its host name; "" when it did not tell (a worker of an older Spinach)
    host: str
    #: its process id; None when it did not tell
    pid: int | None
    #: how many jobs run under it
    running: int
    #: when its last heartbeat was recorded, POSIX seconds on the broker's clock
    last_heartbeat: float

    @classmethod
    def told(
        cls, worker_id: str, description: str, running: int, last_heartbeat: float
    ) -> WorkerState:
        """The state of a worker that described itself with ``description`` (the
        text of :func:`describe_this_process`; anything else reads as nothing told)."""
        try:
            told = json.loads(description)
        except ValueError:
            told = None
        if not isinstance(told, dict):
            told = {}
        host, pid = told.get("host"), told.get("pid")
        return cls(
            id=worker_id,
            host=host if isinstance(host, str) else "",
            pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
            running=running,
            last_heartbeat=last_heartbeat,
        )


@attrs.frozen
class Inspection:
    """What a namespace holds, read at once (see :meth:`Broker.inspect`)."""

    #: the state of each queue holding or running jobs
    queues: dict[str, QueueState]
    #: the registered workers, the most recent heartbeat first
    workers: tuple[WorkerState, ...]
    #: jobs in the failed store
    failed: int
    #: jobs dropped from the failed store to keep it within ``max_failed``, ever
    failed_dropped: int


#: The most minutes :meth:`Broker.job_activity` tells of: those it keeps.
ACTIVITY_MINUTES = 60


@attrs.frozen
class MinuteActivity:
    """Jobs started and failed in one minute (see :meth:`Broker.job_activity`)."""

    #: the start of the minute, POSIX seconds on the broker's clock
    at: float
    #: jobs handed out to workers
    started: int
    #: jobs that failed for good (entered the failed store)
    failed: int


def check_activity_minutes(minutes: object) -> int:
    """``minutes`` when it is a valid argument of :meth:`Broker.job_activity`.

    Raises:
        ValueError: it is not an int from 1 to :data:`ACTIVITY_MINUTES`.
    """
    if isinstance(minutes, bool) or not isinstance(minutes, int):
        raise ValueError(f"minutes must be an int from 1 to {ACTIVITY_MINUTES}, got {minutes!r}")
    if not 1 <= minutes <= ACTIVITY_MINUTES:
        raise ValueError(
            f"minutes must be from 1 to {ACTIVITY_MINUTES} (the broker keeps an hour), "
            f"got {minutes}"
        )
    return minutes


def describe_this_process() -> str:
    """What a worker tells of itself in its heartbeats: JSON text with its host
    name and process id, read back by :meth:`WorkerState.told`."""
    return json.dumps({"host": socket.gethostname(), "pid": os.getpid()}, separators=(",", ":"))


class Broker(ABC):
    """Stores jobs of one namespace and hands them out atomically.

    Args:
        clock: where the broker reads the time; the system clock by default.
    """

    def __init__(self, clock: Clock | None = None) -> None:
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._namespace = DEFAULT_NAMESPACE
        self._attached = False
        self._something_happened = threading.Event()
        #: Identity of this broker as a worker: its running jobs are recorded
        #: under it, and it heartbeats under it.
        self.worker_id = uuid.uuid4().hex
        #: Most jobs the failed store keeps: recording a failure beyond it drops
        #: the oldest, and counts them. None keeps every one. Set by the engine.
        self.max_failed: int | None = DEFAULT_MAX_FAILED
        # Events of the callers of watch_job(), by job id.
        self._watchers: dict[str, set[threading.Event]] = {}
        self._watchers_lock = threading.Lock()
        # Called with the ids of running jobs cancelled (see on_jobs_cancelled).
        self._cancelled_handler: Callable[[list[str]], None] | None = None

    # -- concrete helpers ---------------------------------------------------

    @property
    def namespace(self) -> str:
        """The namespace whose jobs this broker handles."""
        return self._namespace

    @namespace.setter
    def namespace(self, value: str) -> None:
        if not isinstance(value, str) or not value:
            raise ConfigurationError(f"A namespace must be a non-empty str, got {value!r}")
        self._check_namespace(value)
        self._namespace = value

    def _check_namespace(self, namespace: str) -> None:  # noqa: B027 - optional hook
        """Raise ConfigurationError for a namespace this broker cannot store."""

    def attach_engine(self, namespace: str) -> None:
        """Bind this broker to one engine and its namespace.

        Raises:
            BrokerInUseError: the broker already serves an engine.
        """
        if self._attached:
            raise BrokerInUseError(
                f"This {type(self).__name__} already serves the Engine of namespace "
                f"{self._namespace!r}: give each Engine a broker of its own"
            )
        self.namespace = namespace
        self._attached = True

    @property
    def clock(self) -> Clock:
        """The clock this broker decides times with."""
        return self._clock

    def now(self) -> datetime:
        """The current time by the broker's clock, aware UTC."""
        return self._clock.now()

    def wake_up(self) -> None:
        """End a :meth:`wait_for_event` in progress (or the next one) now."""
        self._something_happened.set()

    def wait_for_event(self, timeout: float) -> bool:
        """Block until something may have changed, or ``timeout`` seconds.

        Something changed means: a job became ready, a running job ended, or
        :meth:`wake_up` was called. Spurious wake-ups are allowed; callers
        check the state again after waking up. Returns False on a timeout.
        """
        if self._something_happened.wait(timeout):
            self._something_happened.clear()
            return True
        return False

    def wait_for_jobs(self, queue: str, max_jobs: int, timeout: float) -> list[Job]:
        """:meth:`wait_for_event`, for a worker that found no job of ``queue``;
        a broker may hand it up to ``max_jobs`` jobs of ``queue`` meanwhile.

        The jobs handed out during the wait are returned, as
        :meth:`get_jobs_from_queue` returns them (running under
        :attr:`worker_id`, counted against their limits): a broker that has
        them sent along with the news saves the worker a fetch. Jobs may also
        be handed out to the wait after it returned, until the worker's next
        call of :meth:`get_jobs_from_queue` (or
        :meth:`record_outcomes_and_get_jobs`) of ``queue``, which returns them,
        or of :meth:`deregister_worker`, which puts them back in line. An
        empty list may mean that jobs became ready: fetch to see.

        This default waits as :meth:`wait_for_event` does, and hands nothing out.
        """
        self.wait_for_event(timeout)
        return []

    @contextlib.contextmanager
    def watch_job(
        self, job_id: str, event: threading.Event | None = None
    ) -> Iterator[threading.Event]:
        """Within, the event given is set whenever the job ``job_id`` may have
        ended for good with a record kept (see :meth:`get_job`), here or in
        another process; spurious sets are allowed.

        Clear the event before each look at the job, so that an end that
        comes between the look and the wait is not missed. ``event``: the
        event to set (one whose ``set`` does more), a new one by default.
        """
        if event is None:
            event = threading.Event()
        self._listen_for_outcomes()
        with self._watchers_lock:
            self._watchers.setdefault(job_id, set()).add(event)
        try:
            yield event
        finally:
            with self._watchers_lock:
                events = self._watchers.get(job_id)
                if events is not None:
                    events.discard(event)
                    if not events:
                        del self._watchers[job_id]

    def _watching(self) -> bool:
        """Whether a :meth:`watch_job` is in progress."""
        with self._watchers_lock:
            return bool(self._watchers)

    def _jobs_ended(self, job_ids: Iterable[str] | None) -> None:
        """Set the events of :meth:`watch_job` of these jobs; of every job for None
        (when ends may have been missed)."""
        with self._watchers_lock:
            if job_ids is None:
                events = [e for watching in self._watchers.values() for e in watching]
            else:
                events = [e for i in job_ids for e in self._watchers.get(i, ())]
        for event in events:
            event.set()

    def on_jobs_cancelled(self, handler: Callable[[list[str]], None] | None) -> None:
        """Call ``handler`` with the ids of running jobs that :meth:`cancel_job`
        cancelled, here or in another process, while :meth:`start` holds (the
        engine passes them to its workers). Messages may be lost (a dropped
        connection): the engine also learns it from :meth:`heartbeat`."""
        self._cancelled_handler = handler

    def _jobs_cancelled(self, job_ids: list[str]) -> None:
        """Pass the ids of cancelled running jobs to the handler of :meth:`on_jobs_cancelled`."""
        handler = self._cancelled_handler
        if handler is not None:
            handler(job_ids)

    def _listen_for_outcomes(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Make sure that the ends of jobs recorded elsewhere reach :meth:`_jobs_ended`."""

    def start(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Called when the engine starts workers (open subscriptions...)."""

    def stop(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Called when the engine's workers have stopped."""

    # -- for asyncio code ----------------------------------------------------
    #
    # What the engine's ``*_async`` methods call. By default each runs its
    # blocking counterpart in a thread of the running loop's default executor,
    # so that a broker written without them works unchanged; a broker with an
    # asyncio client of its own overrides them, to hold no thread at all.

    async def now_async(self) -> datetime:
        """:meth:`now` for asyncio code."""
        return await asyncio.to_thread(self.now)

    async def enqueue_jobs_async(self, jobs: Sequence[Job]) -> None:
        """:meth:`enqueue_jobs` for asyncio code, with the same contract."""
        await asyncio.to_thread(self.enqueue_jobs, jobs)

    async def get_job_async(self, job_id: str) -> JobInfo | None:
        """:meth:`get_job` for asyncio code, with the same contract."""
        return await asyncio.to_thread(self.get_job, job_id)

    async def close_async(self) -> None:  # noqa: B027 - an optional hook, empty by design
        """Release what the methods above hold for the running event loop
        (its connections); call it before the loop ends. They may be called
        again afterwards, and take new ones."""

    # -- atomic operations --------------------------------------------------

    @abstractmethod
    def enqueue_jobs(self, jobs: Sequence[Job]) -> None:
        """Store jobs: ready ones at the tail of their queue, in the given
        order, future ones (``at`` later than now) aside until due.

        Atomic: all jobs are stored or none. Safe to retry: a job whose id the
        namespace already holds (ready, future or running) is not stored twice.

        A job with a :attr:`Job.unique_key` is not stored while a job stored
        with the same key waits (ready or future; a job handed out no longer
        holds its key): its ``id`` is set to that job's id instead. Within one
        call, the first job with a key holds it for the next ones.
        """

    @abstractmethod
    def get_jobs_from_queue(self, queue: str, max_jobs: int) -> list[Job]:
        """Hand out up to ``max_jobs`` ready jobs of ``queue``, oldest first.

        Jobs of a task at its concurrency limit, or at its rate limit (as
        many starts within the last period as it allows, by the broker's
        clock), are held back: they keep their place and do not hold back
        jobs of other tasks. Each job handed out is recorded as running under
        :attr:`worker_id` with a fresh :attr:`Job.handout_token`, counts
        against its task's concurrency limit and as a start against its rate
        limit, and has status ``RUNNING``. When jobs are held back by a rate
        limit, :meth:`move_future_jobs` counts the time their task may start
        again as a due time, and wakes the namespace's workers then.

        Atomic: a job is handed out to exactly one caller. An empty list means
        no job of this queue can start now. Not safe to retry blindly: jobs of
        a lost reply stay running under this worker until recovered.
        """

    def remove_job_from_running(self, job: Job) -> RunningJobState:
        """Record that a running job ended for good (succeeded or failed).

        Frees the job's concurrency slot. In the same atomic step, its record
        is kept when :func:`spinach._ended.keeps_record` says so: a failed
        job enters the failed store (dropping the oldest beyond
        :attr:`max_failed`, counted), and a job that succeeded with a result
        is kept for ``job.keep_result`` seconds; then the watchers of the job
        (:meth:`watch_job`) are told. Safe to retry (a second call returns
        ``NOT_OURS`` and changes nothing).
        """
        return self._record_outcomes([job], [False])[0]

    def retry_job(self, job: Job) -> RunningJobState:
        """Put a running job back for another run, as it is now.

        The caller has already updated the job (``retries``, ``at``). In one
        atomic step the job leaves the running jobs, frees its concurrency
        slot and is stored again: at the tail of its queue when ``at`` is not
        later than now, else aside until due. Its id stays the same. Safe to
        retry (a second call returns ``NOT_OURS`` and changes nothing).
        """
        return self._record_outcomes([job], [True])[0]

    def record_outcomes(self, jobs: Sequence[Job]) -> list[RunningJobState]:
        """Record the outcomes of running jobs, one state per job, in order.

        A job whose status is in :data:`FINISHED` ended for good and is
        recorded as by :meth:`remove_job_from_running`; any other runs again,
        as by :meth:`retry_job`. This is the one place where that is decided.
        """
        return self._record_outcomes(jobs, [runs_again(job) for job in jobs])

    @abstractmethod
    def _record_outcomes(self, jobs: Sequence[Job], again: Sequence[bool]) -> list[RunningJobState]:
        """Record the end of running jobs, each for good or, where ``again`` says
        so, for another run; one state per job, in order.

        The one operation behind :meth:`record_outcomes`,
        :meth:`remove_job_from_running` and :meth:`retry_job`, which give it
        the decision. Each job's record is atomic and safe to retry, as those
        methods say; brokers record them all in one step where they can.
        """

    def record_outcomes_and_get_jobs(
        self, jobs: Sequence[Job], queue: str, max_jobs: int
    ) -> tuple[list[RunningJobState], list[Job]]:
        """:meth:`record_outcomes` of ``jobs``, then :meth:`get_jobs_from_queue`.

        One call, so that a broker can send both in one round trip (this
        default makes two calls). When it raises, either part may have
        happened: outcomes are safe to record again, and the broker repairs
        a hand-out whose reply was lost as it does for
        :meth:`get_jobs_from_queue`.
        """
        states = self.record_outcomes(jobs) if jobs else []
        return states, self.get_jobs_from_queue(queue, max_jobs)

    @abstractmethod
    def move_future_jobs(self) -> float | None:
        """Move due future jobs to their queues, then run due periodic tasks.

        Due future jobs go to the tail of their queue in order of ``at``. Each
        periodic task that is due gets one new ready job, and its next run is
        set one period after the run it was due for, or one period from now
        if that is later: time lost while nobody called this is not made up,
        and a task never gets two jobs within one period.

        It also wakes the namespace's workers (as :meth:`wait_for_event`
        sees it) once jobs held back by a rate limit may start.

        Returns the seconds until the next future job, periodic run or end of
        a rate limit's hold is due (0 or more), or ``None`` when there is
        none. Atomic; safe to retry.
        """

    @abstractmethod
    def register_periodic_tasks(self, tasks: Collection[Task]) -> None:
        """Store the periodic schedule of ``tasks`` in the namespace.

        A periodic task new to the namespace, or whose periodicity changed,
        runs first one period from now; one registered again unchanged keeps
        its schedule; a task of ``tasks`` without periodicity is no longer
        periodic. Tasks not in ``tasks`` are left as they are: engines with
        different registries share a namespace. Atomic; safe to retry.
        """

    @abstractmethod
    def set_concurrency_limits(self, tasks: Collection[Task]) -> None:
        """Store the ``max_concurrency`` of ``tasks`` as the namespace's limits.

        A task of ``tasks`` without ``max_concurrency`` loses its limit; tasks
        not in ``tasks`` keep theirs (engines with different registries share
        a namespace). Running jobs count against their task's limit. Atomic;
        safe to retry.
        """

    @abstractmethod
    def set_rate_limits(self, tasks: Collection[Task]) -> None:
        """Store the ``rate_limit`` of ``tasks`` as the namespace's rate limits.

        A task of ``tasks`` without ``rate_limit`` loses its limit, and its
        held-back jobs may start; tasks not in ``tasks`` keep theirs (engines
        with different registries share a namespace). Starts already counted
        within the period count against a changed limit. Atomic; safe to retry.
        """

    @abstractmethod
    def heartbeat(self, held: Collection[Job] = ()) -> Heartbeat:
        """Record that the worker :attr:`worker_id` is alive now, and tell which
        of the ``held`` jobs it was handed are no longer its own.

        The heartbeat's time is the broker's (for a Redis server, its own
        clock), and is returned: an engine measures with it that its own
        heartbeats keep being recorded on schedule. Atomic: a job not lost
        here cannot be taken over until this heartbeat is older than the
        ``silent_since`` of an :meth:`adopt_jobs_of_dead_workers` call. Safe
        to retry.
        """

    @abstractmethod
    def deregister_worker(self) -> None:
        """Record that the worker :attr:`worker_id` stopped cleanly.

        If it still has running jobs they are left for
        :meth:`adopt_jobs_of_dead_workers` at once, instead of after a
        timeout. Safe to retry.
        """

    @abstractmethod
    def adopt_jobs_of_dead_workers(self, silent_since: float) -> list[Job]:
        """Take over the running jobs of dead workers.

        A worker is dead when its last heartbeat was recorded before
        ``silent_since`` (POSIX seconds on the broker's clock), when it
        deregistered, or when it never heartbeated. The caller decides
        ``silent_since``: how long silence means death, as of when. Its
        running jobs become running jobs of this worker, with new tokens (so
        the dead worker cannot record their outcome any more), keeping their
        concurrency slots; they are returned so that the caller retries or
        fails them. The dead workers are forgotten.

        Atomic. An empty list means no dead worker had running jobs.
        """

    @abstractmethod
    def get_job(self, job_id: str) -> JobInfo | None:
        """What the namespace holds of the job ``job_id`` (a job id's text), or
        None when it holds nothing of it.

        The status is ``RUNNING`` for a running job (with ``started_at``, when
        it was handed out), else ``WAITING`` for a stored job whose ``at`` is
        later than now, ``QUEUED`` for another stored job; an ended job is
        found while its record is kept: ``SUCCEEDED`` with its result, or
        ``FAILED`` with its error. Atomic: a job moving meanwhile is seen
        before or after the move, never nowhere.
        """

    @abstractmethod
    def failed_jobs(self, limit: int, offset: int = 0) -> list[JobInfo]:
        """Up to ``limit`` jobs of the failed store, the latest failure first,
        skipping the first ``offset`` (both 0 or more). Failures recorded at
        the same time (in one call) come in no particular order."""

    @abstractmethod
    def requeue_failed(self, job_ids: Collection[str] | None = None) -> int:
        """Queue jobs of the failed store again, each as its last run was stored,
        with ``retries`` at 0 and ``at`` now, keeping its id; for None, every job
        in the store when the call starts (not those failing meanwhile).
        Returns how many were queued; ids not in the store are skipped.

        Each job leaves the store and enters its queue in one atomic step: a
        job is never in both, nor in neither. A job whose payload cannot be
        read is queued again as it is where the broker can still read its
        queue from it; otherwise it stays in the store.
        """

    @abstractmethod
    def purge_failed(
        self, job_ids: Collection[str] | None = None, *, failed_before: float | None = None
    ) -> int:
        """Remove jobs from the failed store: those of ``job_ids``; or, with
        ``failed_before`` (POSIX seconds on the broker's clock, and no
        ``job_ids``), those that failed strictly before it; or, when both are
        None, every one in the store when the call starts. Returns how many
        were removed. Atomic per job; safe to retry.
        """

    @abstractmethod
    def cancel_job(self, job_id: str, outcome: str, keep: float) -> Job | None:
        """Cancel the job ``job_id`` (a job id's text) if the namespace holds it.

        In one atomic step a waiting, queued or running job leaves the broker
        for good, and its record ``<outcome>\\n<payload>`` (see
        :mod:`spinach._ended`; the caller builds the outcome) is kept ``keep``
        seconds, as a kept result is: :meth:`get_job` reports it
        ``CANCELLED``. A waiting or queued job never runs, and frees its
        unique key. A running job frees its concurrency slot: the outcome its
        worker records later changes nothing (``NOT_OURS``), and the handlers
        of :meth:`on_jobs_cancelled` are told. The watchers of the job
        (:meth:`watch_job`) are told.

        Returns the job as it was stored, with the status it had (``WAITING``,
        ``QUEUED`` or ``RUNNING``), or None when the namespace holds no such
        job: unknown, or already ended. Safe to retry (a second call returns
        None).
        """

    @abstractmethod
    def is_queue_empty(self, queue: str) -> bool:
        """Whether ``queue`` holds no ready job (blocked ones included)."""

    @abstractmethod
    def count_jobs(self) -> JobCounts:
        """Count the jobs of the namespace by state."""

    @abstractmethod
    def inspect(self) -> Inspection:
        """What the namespace holds by queue, its workers and its failed store,
        read in one atomic step.

        A queue appears while it holds or runs a job. Its held-back jobs are
        the ready jobs set aside while their task was at its concurrency or
        rate limit; a job of such a task that no fetch has reached yet counts
        as ready. A worker appears from its first
        :meth:`heartbeat` until it deregisters or is declared dead, with what
        it told of itself there (see :func:`describe_this_process`). Reads
        only; its cost may grow with the running jobs, not with the waiting ones.
        """

    @abstractmethod
    def job_activity(self, minutes: int = ACTIVITY_MINUTES) -> list[MinuteActivity]:
        """Jobs started and failed for good in each of the last ``minutes``
        minutes (1 to 60), the oldest first and the current minute (on the
        broker's clock) last; minutes that saw none are there with zeros.

        A job is counted as started when :meth:`get_jobs_from_queue` hands it
        out, as failed when :meth:`record_outcomes` puts it in the failed
        store. The counts of a minute are kept an hour at least. Reads only.

        Raises:
            ValueError: ``minutes`` is not an int from 1 to 60.
        """

    @abstractmethod
    def flush(self) -> None:
        """Delete everything stored for this namespace, and nothing else."""
