"""A broker that keeps jobs in this process, for tests and embedded use.

It has every feature of the Redis broker and keeps the same contract, so an
application's own tests see production behaviour. Jobs are stored as JSON
text, so that arguments come back exactly as a Redis broker returns them.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import uuid
import weakref
from collections import deque
from collections.abc import Collection, Iterable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

import attrs
from typing_extensions import override

from .._ended import keeps_record, outcome_of, read_record, split_record
from ..job import Job, JobInfo, JobStatus
from .base import (
    ACTIVITY_MINUTES,
    Broker,
    Heartbeat,
    Inspection,
    JobCounts,
    MinuteActivity,
    QueueState,
    RunningJobState,
    WorkerState,
    check_activity_minutes,
    describe_this_process,
)

if TYPE_CHECKING:
    from ..clock import Clock
    from ..task import Task

__all__ = ["MemoryBroker", "MemoryStore"]


@attrs.define
class _Queued:
    seq: int
    job_id: str
    task_name: str


@attrs.define
class _Running:
    worker_id: str
    token: str
    task_name: str
    #: when it was handed out, POSIX seconds
    started: float


@attrs.define
class _Periodic:
    task_name: str
    queue: str
    max_retries: int
    period: float
    next_run: float


@attrs.define
class _Namespace:
    """Everything stored for one namespace."""

    #: every stored job by id, as JSON text
    payloads: dict[str, str] = attrs.Factory(dict)
    #: ready jobs by queue, oldest first
    queues: dict[str, deque[_Queued]] = attrs.Factory(dict)
    #: ready jobs set aside while their task is at its concurrency or rate
    #: limit, by queue then task, oldest first
    parked: dict[str, dict[str, deque[_Queued]]] = attrs.Factory(dict)
    #: heap of (at, seq, job id, queue, task name) of future jobs
    future: list[tuple[float, int, str, str, str]] = attrs.Factory(list)
    running: dict[str, _Running] = attrs.Factory(dict)
    limits: dict[str, int] = attrs.Factory(dict)
    in_flight: dict[str, int] = attrs.Factory(dict)
    #: task name -> (starts, period in seconds)
    rate_limits: dict[str, tuple[int, float]] = attrs.Factory(dict)
    #: task name -> the times of its starts within the period, oldest first;
    #: kept when its limit is lifted, so that they count if it comes back
    rate_logs: dict[str, deque[float]] = attrs.Factory(dict)
    #: queue -> when a job it holds back by a rate limit may start
    rate_wake: dict[str, float] = attrs.Factory(dict)
    periodic: dict[str, _Periodic] = attrs.Factory(dict)
    #: last heartbeat time by worker id
    workers: dict[str, float] = attrs.Factory(dict)
    #: what each worker told of itself in its heartbeats
    workers_info: dict[str, str] = attrs.Factory(dict)
    #: the failed store: job id -> (when it failed, record), the oldest first
    failed: dict[str, tuple[float, str]] = attrs.Factory(dict)
    #: jobs dropped from the failed store to keep it within its bound
    failed_dropped: int = 0
    #: kept results: job id -> (when it expires, record)
    results: dict[str, tuple[float, str]] = attrs.Factory(dict)
    #: heap of (expiry, job id) of the kept results
    result_expiry: list[tuple[float, str]] = attrs.Factory(list)
    #: unique key -> id of the waiting job holding it, and the reverse
    unique: dict[str, str] = attrs.Factory(dict)
    unique_of: dict[str, str] = attrs.Factory(dict)
    #: minute (POSIX seconds // 60) -> [jobs started, jobs failed] in it, the
    #: last hour
    activity: dict[int, list[int]] = attrs.Factory(dict)

    def count_activity(self, kind: int, now: float, n: int = 1) -> None:
        """Add ``n`` jobs started (``kind`` 0) or failed (1) to the minute of ``now``."""
        minute = int(now // 60)
        counts = self.activity.get(minute)
        if counts is None:
            for old in [m for m in self.activity if m < minute - ACTIVITY_MINUTES]:
                del self.activity[old]
            counts = self.activity[minute] = [0, 0]
        counts[kind] += n

    def at_limit(self, task_name: str, now: float) -> bool:
        limit = self.limits.get(task_name)
        if limit is not None and self.in_flight.get(task_name, 0) >= limit:
            return True
        return self.rate_free_at(task_name, now) is not None

    def rate_free_at(self, task_name: str, now: float) -> float | None:
        """When a job of a rate-limited task may start, if it may not now."""
        rate = self.rate_limits.get(task_name)
        if rate is None:
            return None
        starts, period = rate
        log = self.rate_logs.setdefault(task_name, deque())
        while log and log[0] <= now - period:
            log.popleft()
        if len(log) < starts:
            return None
        # A microsecond past the period: the start has left it, whatever the rounding.
        return log[len(log) - starts] + period + 1e-6

    def holder(self, unique_key: str) -> str | None:
        """The id of the waiting job holding ``unique_key``, if one does."""
        job_id = self.unique.get(unique_key)
        if job_id is None or job_id not in self.payloads or job_id in self.running:
            return None
        return job_id

    def release_unique(self, job_id: str) -> None:
        """Free the unique key that the job ``job_id`` holds, if any."""
        key = self.unique_of.pop(job_id, None)
        if key is not None and self.unique.get(key) == job_id:
            del self.unique[key]

    def release_slot(self, task_name: str) -> None:
        count = self.in_flight.get(task_name, 0) - 1
        if count > 0:
            self.in_flight[task_name] = count
        else:
            self.in_flight.pop(task_name, None)


class MemoryStore:
    """The storage behind :class:`MemoryBroker` objects, like one Redis server.

    Several brokers given the same store see the same jobs (per namespace),
    as several processes connected to one Redis would: tests use it to play
    several workers in one process.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self._namespaces: dict[str, _Namespace] = {}
        self._brokers: weakref.WeakSet[MemoryBroker] = weakref.WeakSet()
        self._seq = itertools.count()

    def namespace(self, name: str) -> _Namespace:
        ns = self._namespaces.get(name)
        if ns is None:
            ns = self._namespaces[name] = _Namespace()
        return ns

    def drop(self, name: str) -> None:
        self._namespaces.pop(name, None)

    def next_seq(self) -> int:
        return next(self._seq)

    def register(self, broker: MemoryBroker) -> None:
        self._brokers.add(broker)

    def notify(self, namespace: str) -> None:
        """Wake up the brokers of ``namespace`` waiting for an event."""
        for broker in list(self._brokers):
            if broker.namespace == namespace:
                broker.wake_up()

    def notify_cancelled(self, namespace: str, job_ids: list[str]) -> None:
        """Tell the brokers of ``namespace`` that these running jobs were cancelled."""
        for broker in list(self._brokers):
            if broker.namespace == namespace:
                broker._jobs_cancelled(job_ids)

    def notify_ended(self, namespace: str, job_ids: Iterable[str]) -> None:
        """Tell the brokers of ``namespace`` watching these jobs that they ended."""
        ids = list(job_ids)
        for broker in list(self._brokers):
            if broker.namespace == namespace:
                broker._jobs_ended(ids)


class MemoryBroker(Broker):
    """A broker storing jobs in this process.

    Args:
        clock: where the broker reads the time; the system clock by default.
        store: storage shared with other brokers; a new one by default.
    """

    def __init__(self, clock: Clock | None = None, *, store: MemoryStore | None = None) -> None:
        super().__init__(clock)
        self._store = store if store is not None else MemoryStore()
        self._store.register(self)
        self._tokens = itertools.count(1)

    @property
    def store(self) -> MemoryStore:
        """The storage of this broker."""
        return self._store

    def _now(self) -> float:
        # Through a datetime, so that it compares exactly with job times,
        # which have microsecond precision.
        return self.now().timestamp()

    def _ns(self) -> _Namespace:
        return self._store.namespace(self.namespace)

    def _push_ready(self, ns: _Namespace, job_id: str, queue: str, task_name: str) -> None:
        entry = _Queued(self._store.next_seq(), job_id, task_name)
        ns.queues.setdefault(queue, deque()).append(entry)

    def _store_job(self, ns: _Namespace, job: Job, payload: str, now: float) -> None:
        job_id = str(job.id)
        ns.payloads[job_id] = payload
        at = job.at.timestamp()
        if at <= now:
            self._push_ready(ns, job_id, job.queue, job.task_name)
        else:
            entry = (at, self._store.next_seq(), job_id, job.queue, job.task_name)
            heapq.heappush(ns.future, entry)

    @override
    def enqueue_jobs(self, jobs: Sequence[Job]) -> None:
        # Serialize before taking the lock: a bad job fails before anything is stored.
        payloads = [job.serialize() for job in jobs]
        with self._store.lock:
            ns = self._ns()
            now = self._now()
            for job, payload in zip(jobs, payloads):
                key = job.unique_key
                if key is not None:
                    holder = ns.holder(key)
                    if holder is not None:
                        job.id = uuid.UUID(holder)
                        continue
                job_id = job.id_text
                if job_id not in ns.payloads:
                    self._store_job(ns, job, payload, now)
                    if key is not None:
                        ns.unique[key] = job_id
                        ns.unique_of[job_id] = key
        self._store.notify(self.namespace)

    # The store is in this process and its lock is held briefly: the asyncio
    # variants call the blocking ones without a thread.

    @override
    async def now_async(self) -> datetime:
        return self.now()

    @override
    async def enqueue_jobs_async(self, jobs: Sequence[Job]) -> None:
        self.enqueue_jobs(jobs)

    @override
    async def get_job_async(self, job_id: str) -> JobInfo | None:
        return self.get_job(job_id)

    @override
    def get_jobs_from_queue(self, queue: str, max_jobs: int) -> list[Job]:
        handed: list[Job] = []
        with self._store.lock:
            ns = self._ns()
            now = self._now()
            ready = ns.queues.get(queue)
            parked = ns.parked.setdefault(queue, {})
            while len(handed) < max_jobs:
                # Park the blocked jobs at the head of the queue, so that the
                # cost of a fetch does not grow with blocked work.
                while ready and ns.at_limit(ready[0].task_name, now):
                    head = ready.popleft()
                    parked.setdefault(head.task_name, deque()).append(head)
                source: deque[_Queued] | None = ready if ready else None
                for task_name, waiting in parked.items():
                    if (
                        waiting
                        and (source is None or waiting[0].seq < source[0].seq)
                        and not ns.at_limit(task_name, now)
                    ):
                        source = waiting
                if source is None:
                    break
                entry = source.popleft()
                handed.append(self._hand_out(ns, entry, queue, now))
            if handed:
                ns.count_activity(0, now, len(handed))
            for task_name in [name for name, waiting in parked.items() if not waiting]:
                del parked[task_name]
            # Jobs held back by a rate limit: move_future_jobs wakes the workers
            # when their task may start again. The earliest time is kept, but for
            # one already due: this fetch is what it woke the workers for.
            for task_name in parked:
                free_at = ns.rate_free_at(task_name, now)
                wake = ns.rate_wake.get(queue)
                if free_at is not None and (wake is None or wake <= now or free_at < wake):
                    ns.rate_wake[queue] = free_at
        return handed

    def _hand_out(self, ns: _Namespace, entry: _Queued, queue: str, now: float) -> Job:
        token = f"{self.worker_id}:{next(self._tokens)}"
        ns.running[entry.job_id] = _Running(self.worker_id, token, entry.task_name, now)
        if entry.task_name in ns.rate_limits:
            ns.rate_logs.setdefault(entry.task_name, deque()).append(now)
        if entry.task_name in ns.limits:
            ns.in_flight[entry.task_name] = ns.in_flight.get(entry.task_name, 0) + 1
        if ns.unique_of:
            ns.release_unique(entry.job_id)
        return self._running_job(ns, entry.job_id, token, entry.task_name, queue)

    def _running_job(
        self, ns: _Namespace, job_id: str, token: str, task_name: str, queue: str
    ) -> Job:
        """The running job ``job_id``, read back; for a payload that cannot be
        read, a stand-in (see :meth:`Job.could_not_read`), the payload set aside."""
        payload = ns.payloads[job_id]
        try:
            job = Job.deserialize(payload)
        except ValueError as e:
            why = f"{e}; its payload goes to the failed store as it is"
            job = Job.could_not_read(job_id, why, self.now(), task_name, queue)
        job.status = JobStatus.RUNNING
        job.handout_token = token
        return job

    def _end_running(self, ns: _Namespace, job: Job) -> str | None:
        """End a running job if it is still ours; return its stored payload then."""
        job_id = job.id_text
        running = ns.running.get(job_id)
        if running is None or running.token != job.handout_token:
            return None
        del ns.running[job_id]
        if running.task_name in ns.in_flight:
            ns.release_slot(running.task_name)
        return ns.payloads.pop(job_id)

    def _keep_record(self, ns: _Namespace, job: Job, record: str, now: float) -> None:
        job_id = str(job.id)
        if job.status is JobStatus.FAILED:
            ns.failed.pop(job_id, None)
            ns.failed[job_id] = (now, record)
            ns.count_activity(1, now)
            while self.max_failed is not None and len(ns.failed) > self.max_failed:
                del ns.failed[next(iter(ns.failed))]
                ns.failed_dropped += 1
        else:
            self._keep_result(ns, job_id, record, now + (job.keep_result or 0.0), now)

    @staticmethod
    def _keep_result(ns: _Namespace, job_id: str, record: str, expires: float, now: float) -> None:
        """Keep the record of a job that did not fail until ``expires``, and
        forget the records expired by ``now``."""
        ns.results[job_id] = (expires, record)
        heapq.heappush(ns.result_expiry, (expires, job_id))
        while ns.result_expiry and ns.result_expiry[0][0] <= now:
            _, expired = heapq.heappop(ns.result_expiry)
            kept = ns.results.get(expired)
            if kept is not None and kept[0] <= now:
                del ns.results[expired]

    @override
    def _record_outcomes(self, jobs: Sequence[Job], again: Sequence[bool]) -> list[RunningJobState]:
        # Payloads and outcomes first: a job that cannot be serialized fails the
        # call before anything changes.
        payloads = [job.serialize() if run_again else None for job, run_again in zip(jobs, again)]
        outcomes = [
            outcome_of(job) if not run_again and keeps_record(job) else None
            for job, run_again in zip(jobs, again)
        ]
        states = []
        ended: list[str] = []
        with self._store.lock:
            ns = self._ns()
            now = self._now()
            for job, payload, outcome in zip(jobs, payloads, outcomes):
                stored = self._end_running(ns, job)
                if stored is None:
                    states.append(RunningJobState.NOT_OURS)
                    continue
                if payload is not None:
                    self._store_job(ns, job, payload, now)
                elif outcome is not None:
                    self._keep_record(ns, job, f"{outcome}\n{stored}", now)
                    ended.append(str(job.id))
                states.append(RunningJobState.RECORDED)
        if RunningJobState.RECORDED in states:
            self._store.notify(self.namespace)
        if ended:
            self._store.notify_ended(self.namespace, ended)
        return states

    @override
    def move_future_jobs(self) -> float | None:
        moved = False
        with self._store.lock:
            ns = self._ns()
            now = self._now()
            while ns.future and ns.future[0][0] <= now:
                _, _, job_id, queue, task_name = heapq.heappop(ns.future)
                self._push_ready(ns, job_id, queue, task_name)
                moved = True
            for periodic in ns.periodic.values():
                if periodic.next_run <= now:
                    self._run_periodic(ns, periodic, now)
                    moved = True
            for queue, wake in list(ns.rate_wake.items()):
                if wake <= now:
                    del ns.rate_wake[queue]
                    moved = True
            next_times = [p.next_run for p in ns.periodic.values()]
            next_times += ns.rate_wake.values()
            if ns.future:
                next_times.append(ns.future[0][0])
        if moved:
            self._store.notify(self.namespace)
        return max(0.0, min(next_times) - now) if next_times else None

    def _run_periodic(self, ns: _Namespace, periodic: _Periodic, now: float) -> None:
        job = Job(periodic.task_name, periodic.queue, self._clock.now(), periodic.max_retries)
        job_id = str(job.id)
        ns.payloads[job_id] = job.serialize()
        self._push_ready(ns, job_id, job.queue, job.task_name)
        # The next run is one period later; after a delay, one period from now,
        # so that the task never runs twice within one period.
        periodic.next_run = max(periodic.next_run, now) + periodic.period

    @override
    def register_periodic_tasks(self, tasks: Collection[Task]) -> None:
        with self._store.lock:
            ns = self._ns()
            now = self._now()
            for task in tasks:
                if task.periodicity is None:
                    ns.periodic.pop(task.name, None)
                    continue
                period = task.periodicity.total_seconds()
                existing = ns.periodic.get(task.name)
                next_run = now + period
                if existing is not None and existing.period == period:
                    next_run = existing.next_run
                ns.periodic[task.name] = _Periodic(
                    task.name, task.queue, task.max_retries, period, next_run
                )
        self._store.notify(self.namespace)

    @override
    def set_concurrency_limits(self, tasks: Collection[Task]) -> None:
        with self._store.lock:
            ns = self._ns()
            for task in tasks:
                if task.max_concurrency is None:
                    ns.limits.pop(task.name, None)
                else:
                    ns.limits[task.name] = task.max_concurrency
            # Running jobs of limited tasks count against the limit.
            in_flight: dict[str, int] = {}
            for running in ns.running.values():
                if running.task_name in ns.limits:
                    in_flight[running.task_name] = in_flight.get(running.task_name, 0) + 1
            ns.in_flight = in_flight
        self._store.notify(self.namespace)

    @override
    def set_rate_limits(self, tasks: Collection[Task]) -> None:
        with self._store.lock:
            ns = self._ns()
            for task in tasks:
                if task.rate_limit is None:
                    ns.rate_limits.pop(task.name, None)
                else:
                    starts, period = task.rate_limit
                    ns.rate_limits[task.name] = (starts, period.total_seconds())
        self._store.notify(self.namespace)

    @override
    def heartbeat(self, held: Collection[Job] = ()) -> Heartbeat:
        with self._store.lock:
            ns = self._ns()
            now = ns.workers[self.worker_id] = self._now()
            ns.workers_info[self.worker_id] = describe_this_process()
            lost = []
            for job in held:
                running = ns.running.get(str(job.id))
                if running is None or running.token != job.handout_token:
                    lost.append(job)
        return Heartbeat(now, tuple(lost))

    @override
    def deregister_worker(self) -> None:
        with self._store.lock:
            ns = self._ns()
            ns.workers.pop(self.worker_id, None)
            ns.workers_info.pop(self.worker_id, None)

    @override
    def adopt_jobs_of_dead_workers(self, silent_since: float) -> list[Job]:
        adopted: list[Job] = []
        with self._store.lock:
            ns = self._ns()
            dead = {w for w, beat in ns.workers.items() if beat < silent_since}
            for job_id, running in ns.running.items():
                owner = running.worker_id
                if owner == self.worker_id or (owner in ns.workers and owner not in dead):
                    continue
                running.worker_id = self.worker_id
                running.token = f"{self.worker_id}:{next(self._tokens)}"
                adopted.append(self._running_job(ns, job_id, running.token, running.task_name, ""))
            for worker_id in dead:
                del ns.workers[worker_id]
                ns.workers_info.pop(worker_id, None)
        return adopted

    @override
    def get_job(self, job_id: str) -> JobInfo | None:
        with self._store.lock:
            ns = self._ns()
            now = self._now()
            payload = ns.payloads.get(job_id)
            running = ns.running.get(job_id)
            failed = ns.failed.get(job_id)
            result = ns.results.get(job_id)
        if payload is not None:
            try:
                job = Job.deserialize(payload)
            except ValueError:
                job = Job.could_not_read(job_id, "", self.now())
            if running is not None:
                started = datetime.fromtimestamp(running.started, tz=timezone.utc)
                return JobInfo.of_job(job, JobStatus.RUNNING, started)
            status = JobStatus.WAITING if job.at.timestamp() > now else JobStatus.QUEUED
            return JobInfo.of_job(job, status)
        if failed is not None:
            return self._read(job_id, failed[1])
        if result is not None and result[0] > now:
            return self._read(job_id, result[1])
        return None

    @staticmethod
    def _read(job_id: str, record: str) -> JobInfo:
        return read_record(job_id, record, _unpack, _salvage)

    @override
    def failed_jobs(self, limit: int, offset: int = 0) -> list[JobInfo]:
        with self._store.lock:
            records = list(self._ns().failed.items())
        start = max(0, len(records) - offset - limit)
        stop = max(0, len(records) - offset)
        return [self._read(job_id, record) for job_id, (_, record) in reversed(records[start:stop])]

    @override
    def requeue_failed(self, job_ids: Collection[str] | None = None) -> int:
        requeued = 0
        with self._store.lock:
            ns = self._ns()
            now = self._now()
            for job_id in list(ns.failed) if job_ids is None else job_ids:
                kept = ns.failed.get(job_id)
                if kept is None:
                    continue
                _, payload = split_record(kept[1])
                try:
                    job = Job.deserialize(payload)
                except ValueError:
                    continue  # no queue to put it in: it stays in the store
                del ns.failed[job_id]
                if job_id in ns.payloads:
                    continue
                job.retries, job.at, job.status = 0, self.now(), JobStatus.QUEUED
                self._store_job(ns, job, job.serialize(), now)
                requeued += 1
        if requeued:
            self._store.notify(self.namespace)
        return requeued

    @override
    def purge_failed(
        self, job_ids: Collection[str] | None = None, *, failed_before: float | None = None
    ) -> int:
        with self._store.lock:
            ns = self._ns()
            if job_ids is not None:
                return sum(ns.failed.pop(job_id, None) is not None for job_id in job_ids)
            if failed_before is None:
                count = len(ns.failed)
                ns.failed.clear()
                return count
            old = [job_id for job_id, (at, _) in ns.failed.items() if at < failed_before]
            for job_id in old:
                del ns.failed[job_id]
            return len(old)

    @override
    def cancel_job(self, job_id: str, outcome: str, keep: float) -> Job | None:
        with self._store.lock:
            ns = self._ns()
            now = self._now()
            payload = ns.payloads.pop(job_id, None)
            if payload is None:
                return None
            running = ns.running.pop(job_id, None)
            if running is not None:
                status = JobStatus.RUNNING
                if running.task_name in ns.in_flight:
                    ns.release_slot(running.task_name)
            else:
                status = JobStatus.QUEUED if self._unqueue(ns, job_id) else JobStatus.WAITING
                ns.release_unique(job_id)
            self._keep_result(ns, job_id, f"{outcome}\n{payload}", now + keep, now)
        if running is not None:
            self._store.notify_cancelled(self.namespace, [job_id])
            self._store.notify(self.namespace)
        self._store.notify_ended(self.namespace, [job_id])
        try:
            job = Job.deserialize(payload)
        except ValueError:
            job = Job.could_not_read(job_id, "", self.now())
        job.status = status
        return job

    @staticmethod
    def _unqueue(ns: _Namespace, job_id: str) -> bool:
        """Take the job ``job_id`` out of its ready list or parked entries,
        else out of the future jobs; True when it was ready."""
        lines = [*ns.queues.values()]
        lines += [waiting for by_task in ns.parked.values() for waiting in by_task.values()]
        for line in lines:
            for entry in line:
                if entry.job_id == job_id:
                    line.remove(entry)
                    return True
        ns.future = [entry for entry in ns.future if entry[2] != job_id]
        heapq.heapify(ns.future)
        return False

    @override
    def is_queue_empty(self, queue: str) -> bool:
        with self._store.lock:
            ns = self._ns()
            return not ns.queues.get(queue) and not any(ns.parked.get(queue, {}).values())

    @override
    def count_jobs(self) -> JobCounts:
        with self._store.lock:
            ns = self._ns()
            queued: dict[str, int] = {}
            for queue, ready in ns.queues.items():
                queued[queue] = len(ready)
            for queue, by_task in ns.parked.items():
                queued[queue] = queued.get(queue, 0) + sum(len(d) for d in by_task.values())
            return JobCounts(
                queued={q: n for q, n in queued.items() if n},
                future=len(ns.future),
                running=len(ns.running),
                failed=len(ns.failed),
                failed_dropped=ns.failed_dropped,
            )

    @override
    def inspect(self) -> Inspection:
        with self._store.lock:
            ns = self._ns()
            counts: dict[str, list[int]] = {}  # queue -> ready, held back, future, running

            def of(queue: str) -> list[int]:
                return counts.setdefault(queue, [0, 0, 0, 0])

            for queue, ready in ns.queues.items():
                of(queue)[0] += len(ready)
            for queue, by_task in ns.parked.items():
                of(queue)[1] += sum(len(waiting) for waiting in by_task.values())
            for _, _, _, queue, _ in ns.future:
                of(queue)[2] += 1
            by_worker: dict[str, int] = {}
            for job_id, running in ns.running.items():
                by_worker[running.worker_id] = by_worker.get(running.worker_id, 0) + 1
                queue = _queue_of(ns.payloads.get(job_id))
                if queue:
                    of(queue)[3] += 1
            workers = [
                WorkerState.told(w, ns.workers_info.get(w, ""), by_worker.get(w, 0), beat)
                for w, beat in ns.workers.items()
            ]
            return Inspection(
                queues={q: QueueState(*c) for q, c in counts.items() if any(c)},
                workers=tuple(sorted(workers, key=lambda w: -w.last_heartbeat)),
                failed=len(ns.failed),
                failed_dropped=ns.failed_dropped,
            )

    @override
    def job_activity(self, minutes: int = ACTIVITY_MINUTES) -> list[MinuteActivity]:
        check_activity_minutes(minutes)
        with self._store.lock:
            ns = self._ns()
            current = int(self._now() // 60)
            return [
                MinuteActivity(float(minute * 60), *ns.activity.get(minute, (0, 0)))
                for minute in range(current - minutes + 1, current + 1)
            ]

    @override
    def flush(self) -> None:
        with self._store.lock:
            self._store.drop(self.namespace)
        self._store.notify(self.namespace)


def _queue_of(payload: str | None) -> str:
    """The queue of a stored job, "" when it cannot be read."""
    try:
        return Job.deserialize(payload).queue if payload is not None else ""
    except ValueError:
        return ""


def _unpack(job_id: str, payload: Any) -> Job:
    return Job.deserialize(payload)


def _salvage(payload: Any) -> tuple[str, str]:
    return "", ""
