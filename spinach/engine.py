"""The engine: schedules jobs and drives workers, above any broker."""

from __future__ import annotations

import collections
import contextlib
import inspect
import logging
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from types import FrameType
from typing import Any, Callable, Optional

from . import const, signals
from ._backoff import backoff
from ._bounds import short_repr
from ._lifecycle import JobLifecycle
from ._liveness import Liveness
from ._outcome import settle
from .brokers.base import Broker, RunningJobState
from .exc import (
    ConfigurationError,
    InvalidJobSignatureError,
    InvalidTaskTypeError,
    JobTooLargeError,
    SpinachError,
    UnreadableJobError,
    WorkerDiedError,
    WorkersError,
)
from .job import MAX_META_BYTES, Job, JobStatus, check_arguments, check_meta, unique_key
from .task import Batch, Task, TaskLike, Tasks
from .worker import ThreadWorkers, Workers

__all__ = ["Engine"]

logger = logging.getLogger(__name__)

#: Most call shapes remembered as matching their task's signature.
_MAX_BOUND_SHAPES = 10_000
#: Most outcomes recorded in one broker call.
_RECORD_BATCH = 500
#: Longest wait of an idle engine between two looks at the broker, in seconds.
_MAX_IDLE_WAIT = 1.0
_MAX_ERROR_WAIT = 30.0
#: Least time between two moves of future jobs, unless one is due.
_MOVE_INTERVAL = 0.05
#: Tries of each broker operation made while starting workers.
_START_TRIES = 5
#: Seconds between two looks of a blocked start_workers at the engine's threads.
_JOIN_POLL = 0.1
#: Seconds between two recordings of outcomes while stopping.
_DRAIN_POLL = 0.1
#: Seconds a cancelled job's id is remembered, for a hand-out that crossed the news.
_REMEMBER_CANCELLED = 60.0
#: Seconds between two purges of the jobs older than keep_failed.
_PURGE_INTERVAL = 60.0


class Engine(JobLifecycle):
    """Schedules jobs in a broker and runs them with workers.

    Args:
        broker: where jobs are stored; one broker serves one engine.
        namespace: isolates engines sharing one broker server or interpreter.
        heartbeat_interval: seconds between two heartbeats of running workers,
            at most a quarter of ``dead_worker_timeout``.
        dead_worker_timeout: seconds without a heartbeat after which another
            engine's workers are declared dead and their jobs taken over, by
            an engine whose own heartbeats kept their schedule that long (see
            ``docs/guarantees.md``).
        max_job_size: the largest serialized job, in bytes, that scheduling
            accepts (512 KiB by default), and the largest result kept (in bytes
            of JSON); None for no limit.
        keep_failed: how long a job that failed for good stays in the failed
            store (7 days by default); None keeps it until ``max_failed``
            pushes it out.
        max_failed: most jobs in the failed store (10,000 by default): the
            oldest are dropped, and counted (``spinach doctor`` shows the
            count); None for no bound.
    """

    def __init__(
        self,
        broker: Broker,
        namespace: str = const.DEFAULT_NAMESPACE,
        *,
        heartbeat_interval: float = const.DEFAULT_HEARTBEAT_INTERVAL,
        dead_worker_timeout: float = const.DEFAULT_DEAD_WORKER_TIMEOUT,
        max_job_size: int | None = const.DEFAULT_MAX_JOB_SIZE,
        keep_failed: timedelta | None = const.DEFAULT_KEEP_FAILED,
        max_failed: int | None = const.DEFAULT_MAX_FAILED,
    ) -> None:
        check_failed_bounds(keep_failed, max_failed)
        if max_job_size is not None and max_job_size < 1:
            raise ConfigurationError(
                f"max_job_size must be a number of bytes above 0, or None, got {max_job_size!r}"
            )
        if not 0 < heartbeat_interval <= dead_worker_timeout / 4:
            raise ConfigurationError(
                "heartbeat_interval must be above 0 and at most a quarter of "
                f"dead_worker_timeout, got {heartbeat_interval} and {dead_worker_timeout}: "
                "a worker is declared dead only after missing several heartbeats, and only "
                "by an engine whose own heartbeats kept their schedule"
            )
        broker.attach_engine(namespace)
        broker.max_failed = max_failed
        self._keep_failed = keep_failed
        self._broker = broker
        self._namespace = namespace
        self._heartbeat_interval = heartbeat_interval
        self._dead_worker_timeout = dead_worker_timeout
        self._max_job_size = max_job_size
        self._tasks = Tasks()
        self._signatures: dict[str, inspect.Signature | None] = {}
        self._bound_shapes: set[tuple[Any, ...]] = set()
        # Task, why it cannot run on the current workers if so, and the seconds
        # its results are kept and its jobs may run, by task name.
        self._resolved: dict[str, _Resolved] = {}
        self._arbiter: threading.Thread | None = None
        self._maintenance: threading.Thread | None = None
        self._workers: Workers | None = None
        self._liveness: Liveness | None = None
        self._must_stop = threading.Event()
        self._maintenance_must_stop = threading.Event()
        # Jobs whose outcome is settled but not yet recorded in the broker.
        self._to_record: collections.deque[Job] = collections.deque()
        # Ids of jobs whose outcome is recorded again after a failed call.
        self._retried_records: set[uuid.UUID] = set()
        self._grace_period: float | None = None
        # Moves of future jobs that failed in a row.
        self._move_failures = 0
        # Ids of jobs cancelled lately, until when (time.monotonic()) they are
        # remembered: a job whose hand-out crossed the news is not started.
        self._recently_cancelled: dict[str, float] = {}
        self._cancel_lock = threading.Lock()
        broker.on_jobs_cancelled(self._stop_cancelled)

    @property
    def namespace(self) -> str:
        """The namespace of this engine."""
        return self._namespace

    @property
    def broker(self) -> Broker:
        """The broker of this engine."""
        return self._broker

    # -- tasks ---------------------------------------------------------------

    def attach_tasks(self, tasks: Tasks) -> None:
        """Make the tasks of a registry known to this engine.

        The registry's ``schedule`` methods then go through this engine.
        """
        if tasks._engine is not None and tasks._engine is not self:
            logger.warning(
                "Tasks registry %r was attached to the engine of namespace %r, now to %r",
                tasks,
                tasks._engine.namespace,
                self._namespace,
            )
        self._tasks.update(tasks)
        tasks._engine = self

    def task(self, func: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """Register a task with this engine; used like :meth:`Tasks.task`."""
        return self._tasks.task(func, **kwargs)

    def execute(self, task: TaskLike, *args: Any, **kwargs: Any) -> Any:
        """Run a task now, in this thread, without a broker."""
        return self._tasks.get(task).func(*args, **kwargs)

    # -- scheduling ----------------------------------------------------------

    def schedule(self, task: TaskLike, *args: Any, **kwargs: Any) -> Job:
        """Schedule a job to run as soon as possible.

        For a task with ``unique=True``, while a job of the task with equal
        arguments waits to start for the first time (queued, or waiting for
        its time), nothing is stored: the job returned has that job's id.
        """
        job = self._build_job(task, None, args, kwargs)
        self._broker.enqueue_jobs([job])
        return job

    def schedule_at(self, task: TaskLike, at: datetime, *args: Any, **kwargs: Any) -> Job:
        """Schedule a job to run at ``at`` (a naive datetime is UTC)."""
        job = self._build_job(task, at, args, kwargs)
        self._broker.enqueue_jobs([job])
        return job

    def schedule_batch(self, batch: Batch) -> list[Job]:
        """Schedule every job of a batch in one broker call; all or none are stored."""
        now = self._broker.now()
        jobs = [
            self._build_job(task, at, args, kwargs, now)
            for task, at, args, kwargs in batch.jobs_to_create
        ]
        self._broker.enqueue_jobs(jobs)
        return jobs

    async def schedule_async(self, task: TaskLike, *args: Any, **kwargs: Any) -> Job:
        """:meth:`schedule` for asyncio code (FastAPI, Starlette, aiohttp): the
        loop goes on while the job is stored (see :meth:`Broker.enqueue_jobs_async`)."""
        job = self._build_job(task, None, args, kwargs, await self._broker.now_async())
        await self._broker.enqueue_jobs_async([job])
        return job

    async def schedule_at_async(
        self, task: TaskLike, at: datetime, *args: Any, **kwargs: Any
    ) -> Job:
        """:meth:`schedule_at` for asyncio code, as :meth:`schedule_async`."""
        job = self._build_job(task, at, args, kwargs, await self._broker.now_async())
        await self._broker.enqueue_jobs_async([job])
        return job

    async def schedule_batch_async(self, batch: Batch) -> list[Job]:
        """:meth:`schedule_batch` for asyncio code, as :meth:`schedule_async`."""
        now = await self._broker.now_async()
        jobs = [
            self._build_job(task, at, args, kwargs, now)
            for task, at, args, kwargs in batch.jobs_to_create
        ]
        await self._broker.enqueue_jobs_async(jobs)
        return jobs

    def _build_job(
        self,
        task_like: TaskLike,
        at: datetime | None,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        now: datetime | None = None,
    ) -> Job:
        task = self._tasks.get(task_like)
        self._check_signature(task, args, kwargs)
        size_bound = check_arguments(task.name, args, kwargs)
        if now is None:
            now = self._broker.now()
        job = Job(task.name, task.queue, now if at is None else at, task.max_retries, args, kwargs)
        job.status = JobStatus.QUEUED if job.at <= now else JobStatus.WAITING
        if task.unique:
            job.unique_key = unique_key(task.name, args, kwargs)
        if signals.job_scheduling.receivers:
            signals.job_scheduling.send(self._namespace, job=job)
            if type(job.meta) is not dict or job.meta:
                check_meta(job.meta, f"Task {task.name!r}: the meta set by job_scheduling")
                size_bound += MAX_META_BYTES
        limit = self._max_job_size
        # Serialized only when the bound of its size could be over the limit.
        if limit is not None and size_bound + _job_size_bound(task) > limit:
            # Serialized JSON is ASCII: its length is its size in bytes.
            size = len(job.serialize())
            if size > limit:
                raise JobTooLargeError(
                    f"Task {task.name!r}: the job is {size:,} bytes once serialized, over "
                    f"the limit of {limit:,} bytes (Engine(max_job_size=...)). "
                    "Store large data elsewhere (a file, a database row) and pass its id"
                )
        return job

    def _check_signature(self, task: Task, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        # Whether a call binds depends only on how many positional arguments
        # and which keywords it has: a shape that bound once binds again.
        shape = (task.name, len(args), *kwargs)
        if shape in self._bound_shapes:
            return
        try:
            sig = self._signatures[task.name]
        except KeyError:
            try:
                sig = inspect.signature(task.func)
            except (TypeError, ValueError):  # some builtins have no signature to check
                sig = None
            self._signatures[task.name] = sig
        if sig is None:
            return
        try:
            sig.bind(*args, **kwargs)
        except TypeError as e:
            raise InvalidJobSignatureError(
                f"Task {task.name!r} cannot be called as {task.name}{sig} with "
                f"args={short_repr(args)} and kwargs={short_repr(kwargs)}: {e}"
            ) from None
        if len(self._bound_shapes) < _MAX_BOUND_SHAPES:
            self._bound_shapes.add(shape)

    # -- workers -------------------------------------------------------------

    def start_workers(
        self,
        number: int = const.DEFAULT_WORKER_NUMBER,
        queue: str = const.DEFAULT_QUEUE,
        block: bool = True,
        stop_when_queue_empty: bool = False,
        workers_class: type[Workers] = ThreadWorkers,
        *,
        grace_period: float | None = None,
    ) -> None:
        """Start workers consuming ``queue``.

        With ``block=True``, return after SIGINT or SIGTERM (when called from
        the main thread) or once the queue is empty with
        ``stop_when_queue_empty=True``, having stopped gracefully.

        A stop lets running jobs finish. With ``grace_period`` (seconds), jobs
        still running that long after the stop began are given up: an
        at-least-once job is queued again (counting a retry), an at-most-once
        job is reported failed with :class:`WorkerDiedError`; jobs handed to
        the workers but not started yet are queued again as they were.

        Raises:
            WorkersError: the workers of this engine are already running.
            ConfigurationError: ``number`` is below 1.
            InvalidTaskTypeError: a task of ``queue`` does not suit ``workers_class``.
        """
        if self._arbiter is not None and self._arbiter.is_alive():
            raise WorkersError(
                f"The workers of the engine of namespace {self._namespace!r} are already "
                "running: call stop_workers() before starting them again"
            )
        if not isinstance(number, int) or number < 1:
            raise ConfigurationError(f"start_workers(number=...) must be 1 or more, got {number!r}")
        if grace_period is not None and grace_period < 0:
            raise ConfigurationError(
                f"start_workers(grace_period=...) must be 0 or more seconds, got {grace_period!r}"
            )
        self._grace_period = grace_period
        self._check_task_kinds(queue, workers_class)
        self._join_threads()
        self._must_stop.clear()
        if block and threading.current_thread() is threading.main_thread():
            # Handlers first: a SIGTERM while starting still stops gracefully.
            with self._stopping_on_signals():
                self._start(number, queue, stop_when_queue_empty, workers_class)
                self._join_threads()
        else:
            self._start(number, queue, stop_when_queue_empty, workers_class)
            if block:
                self._join_threads()

    def _start(
        self, number: int, queue: str, stop_when_queue_empty: bool, workers_class: type[Workers]
    ) -> None:
        self._resolved.clear()
        # Each start is a new worker: jobs a previous start left running (their
        # outcome could not be recorded) belong to a dead worker and get adopted.
        self._broker.worker_id = uuid.uuid4().hex
        liveness = self._liveness = Liveness(
            self._broker, self._heartbeat_interval, self._dead_worker_timeout, self._must_stop
        )
        self._with_retries(self._register_tasks)
        self._with_retries(liveness.heartbeat)
        self._broker.start()
        self._maintenance_must_stop.clear()
        try:
            self._workers = workers_class(
                number,
                self._namespace,
                clock=self._broker.clock,
                on_job_done=self._broker.wake_up,
                gate=liveness,
                max_result_size=self._max_job_size,
            )
        except BaseException:
            self._broker.stop()
            raise
        self._maintenance = threading.Thread(
            target=self._maintain, name=f"{self._namespace}-maintenance", daemon=True
        )
        self._arbiter = threading.Thread(
            target=self._arbitrate,
            args=(queue, stop_when_queue_empty),
            name=f"{self._namespace}-arbiter",
            daemon=True,
        )
        self._maintenance.start()
        self._arbiter.start()

    def stop_workers(self) -> None:
        """Stop fetching jobs, let every job handed to a worker finish and
        record its outcome, then return. The workers can be started again."""
        self._must_stop.set()
        self._broker.wake_up()
        if threading.current_thread() in (self._arbiter, self._maintenance) or (
            self._workers is not None and self._workers.runs_in_current_thread()
        ):
            # Called from a job or a signal receiver of the engine's own threads:
            # joining would wait for the caller itself.
            return
        self._join_threads()

    def _join_threads(self) -> None:
        for thread in (self._arbiter, self._maintenance):
            if thread is not None and thread is not threading.current_thread():
                # Short joins: a signal that the kernel delivered to another
                # thread only runs its Python handler once the main thread
                # runs Python code again, which a join without end may never do.
                while thread.is_alive():
                    thread.join(_JOIN_POLL)

    @contextlib.contextmanager
    def _stopping_on_signals(self) -> Iterator[None]:
        """Make SIGINT and SIGTERM stop the workers gracefully, while inside."""
        previous: dict[int, Any] = {}

        def restore() -> None:
            for signum_, handler in previous.items():
                signal.signal(signum_, handler)

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if self._must_stop.is_set():
                # A stop is under way: a second signal gets the previous
                # behaviour (KeyboardInterrupt, exit), even one that came
                # before the previous handlers were back.
                restore()
                signal.raise_signal(signum)
                return
            logger.info(
                "Received %s, stopping workers gracefully; send it again to stop at once",
                signal.Signals(signum).name,
            )
            self._must_stop.set()
            self._broker.wake_up()
            restore()

        for stop_signal in (signal.SIGINT, signal.SIGTERM):
            previous[stop_signal] = signal.signal(stop_signal, on_signal)
        try:
            yield
        finally:
            restore()

    def _check_task_kinds(self, queue: str, workers_class: type[Workers]) -> None:
        for task in self._tasks.tasks.values():
            if task.queue == queue:
                error = _kind_error(task, workers_class)
                if error is not None:
                    raise error

    def _resolve(self, job: Job) -> SpinachError | None:
        """Set the job's function, or return why it cannot run here."""
        assert self._workers is not None
        if job.unreadable is not None:
            return UnreadableJobError(f"Job {job.id} could not be read back: {job.unreadable}")
        try:
            task, error, keep, limit = self._resolved[job.task_name]
        except KeyError:
            try:
                task = self._tasks.get(job.task_name)
            except SpinachError as e:
                return e
            error = _kind_error(task, type(self._workers))
            keep = None if task.keep_result is None else task.keep_result.total_seconds()
            limit = None if task.time_limit is None else task.time_limit.total_seconds()
            self._resolved[job.task_name] = (task, error, keep, limit)
        if error is not None:
            return error
        try:
            # Stored jobs may predate a change of the task's signature.
            self._check_signature(task, job.task_args, job.task_kwargs)
        except InvalidJobSignatureError as e:
            return e
        job.task_func = task.func
        job.keep_result = keep
        job.time_limit = limit
        return None

    def _arbitrate(self, queue: str, stop_when_queue_empty: bool) -> None:
        """Fetch jobs for free workers and record outcomes, until told to stop."""
        workers = self._workers
        assert workers is not None
        errors = 0
        move_after = move_due = 0.0
        while not self._must_stop.is_set():
            try:
                # Future jobs are moved when one is due (then before the fetch,
                # which hands them out at once), and otherwise at most every
                # _MOVE_INTERVAL, after the fetch, off the path of ready jobs (in
                # case one was stored meanwhile; jobs moved then wake the engine
                # up like any job stored): a busy engine does not pay a broker
                # call per loop to learn that nothing is due.
                due = time.monotonic() >= move_due
                if due:
                    move_after, move_due = self._move_future_jobs()
                fetched = self._exchange(queue, workers)
                if not due and time.monotonic() >= move_after:
                    move_after, move_due = self._move_future_jobs()
                # Woken up meanwhile, a future job may have been stored: look
                # again within _MOVE_INTERVAL.
                look_again = min(move_due, move_after)
                if (
                    stop_when_queue_empty
                    and not fetched
                    and workers.idle
                    and not self._to_record
                    and self._broker.is_queue_empty(queue)
                ):
                    logger.info("Queue %r is empty, stopping workers", queue)
                    break
                if not fetched:
                    self._wait(queue, workers, max(0.0, look_again - time.monotonic()))
                errors = 0
            except Exception:
                errors += 1
                wait = backoff(errors, base=0.1, cap=_MAX_ERROR_WAIT)
                logger.exception("Error in the engine loop, trying again in %.1f s", wait)
                self._must_stop.wait(wait)
        self._shut_down(workers)

    def _wait(self, queue: str, workers: Workers, timeout: float) -> None:
        """Wait for news; with free workers, for jobs, which the broker may hand
        out along with the news (see Broker.wait_for_jobs)."""
        wanted = workers.jobs_wanted
        if wanted <= 0 or self._must_stop.is_set():
            self._broker.wait_for_event(timeout)
            return
        # Handed out during the wait: the workers' gate takes them as handed
        # out at its start.
        since = time.monotonic()
        jobs = self._broker.wait_for_jobs(queue, wanted, timeout)
        if jobs:
            self._submit(jobs, since)

    def _move_future_jobs(self) -> tuple[float, float]:
        """Move due future jobs; return when to move them again at the earliest,
        and when at the latest.

        An error is logged and puts off the next move, never the fetch: ready
        jobs keep flowing whatever is wrong with the future ones.
        """
        now = time.monotonic()
        try:
            next_due = self._broker.move_future_jobs()
        except Exception:
            self._move_failures += 1
            wait = backoff(self._move_failures, base=0.1, cap=_MAX_ERROR_WAIT)
            logger.exception("Could not move future jobs, trying again in %.1f s", wait)
            return now + wait, now + wait
        self._move_failures = 0
        wait = _MAX_IDLE_WAIT if next_due is None else min(next_due, _MAX_IDLE_WAIT)
        return now + _MOVE_INTERVAL, now + wait

    def _exchange(self, queue: str, workers: Workers) -> int:
        """Record the outcomes that came in and fetch jobs for the free workers,
        in one broker call when there are both; return the number fetched."""
        self._to_record.extend(workers.collect_finished())
        wanted = workers.jobs_wanted
        if wanted <= 0 or not self._to_record or len(self._to_record) > _RECORD_BATCH:
            self._record_outcomes()
            return self._fetch(queue, wanted)
        # Taken one by one: the maintenance thread appends adopted jobs meanwhile.
        jobs = [self._to_record.popleft() for _ in range(len(self._to_record))]
        sent = time.monotonic()
        with self._recording(jobs) as states:
            recorded, fetched = self._broker.record_outcomes_and_get_jobs(jobs, queue, wanted)
            states += recorded
        self._submit(fetched, sent)
        return len(fetched)

    def _fetch(self, queue: str, wanted: int) -> int:
        if wanted <= 0:
            return 0
        sent = time.monotonic()
        jobs = self._broker.get_jobs_from_queue(queue, wanted)
        self._submit(jobs, sent)
        return len(jobs)

    def _submit(self, jobs: list[Job], handed_out: float) -> None:
        """Hand fetched jobs to the workers, and settle at once those that cannot run here.

        ``handed_out`` is the time.monotonic() before the call that fetched them:
        the workers' gate confirms them if the lease broke since.
        """
        assert self._workers is not None
        runnable = []
        for job in jobs:
            error = self._resolve(job)
            if error is None:
                runnable.append(job)
            else:
                settle(self._namespace, job, None, error, self._broker.now())
                self._to_record.append(job)
        if not runnable:
            return
        # Under the lock of _stop_cancelled (once per fetch): a cancel heard
        # meanwhile finds the jobs submitted, or is seen here.
        with self._cancel_lock:
            cancelled = self._recently_cancelled
            if cancelled:
                runnable = [job for job in runnable if job.id_text not in cancelled]
            if runnable:
                self._workers.submit_jobs(runnable, handed_out)
        # Let a worker take the GIL and start now, rather than once this thread
        # blocks in its next broker call (benchmarks/latency.py: median 0.80 to
        # 0.89 ms before, 0.70 to 0.84 ms after; the drain rate is unchanged).
        time.sleep(0)

    def _record_outcomes(self) -> None:
        assert self._workers is not None
        self._to_record.extend(self._workers.collect_finished())
        while self._to_record:
            count = min(len(self._to_record), _RECORD_BATCH)
            jobs = [self._to_record.popleft() for _ in range(count)]
            with self._recording(jobs) as states:
                states += self._broker.record_outcomes(jobs)

    @contextlib.contextmanager
    def _recording(self, jobs: list[Job]) -> Iterator[list[RunningJobState]]:
        """Around a broker call recording ``jobs``, which fills the list it is given
        with their states: on an error, the jobs are recorded again later."""
        states: list[RunningJobState] = []
        try:
            yield states
        except Exception:
            # The call may have been recorded with its reply lost: then the
            # next try finds the jobs no longer ours, which is fine.
            self._retried_records.update(job.id for job in jobs)
            self._to_record.extendleft(reversed(jobs))
            raise
        for job, state in zip(jobs, states):
            if job.id in self._retried_records:
                self._retried_records.discard(job.id)
            elif state is RunningJobState.NOT_OURS and job.status is not JobStatus.CANCELLED:
                logger.warning(
                    "Outcome of %s not recorded: the job is no longer this worker's (it "
                    "was taken over after this worker was declared dead, or given up at "
                    "shutdown)",
                    job,
                )

    def _shut_down(self, workers: Workers) -> None:
        try:
            self._drain(workers)
        finally:
            # Stop adopting before the last outcomes are recorded, so that none is left behind.
            self._maintenance_must_stop.set()
            if self._maintenance is not None:
                self._maintenance.join()
            self._finish_shut_down()

    def _drain(self, workers: Workers) -> None:
        """Let the running jobs end, recording outcomes as they come, within the grace period."""
        workers.request_stop()
        grace = self._grace_period
        deadline = None if grace is None else time.monotonic() + grace
        while True:
            wait = _DRAIN_POLL if deadline is None else deadline - time.monotonic()
            if workers.join(max(0.0, min(wait, _DRAIN_POLL))):
                return
            try:
                self._record_outcomes()
            except Exception:
                logger.exception("Could not record outcomes while stopping; trying again")
            if deadline is not None and time.monotonic() >= deadline:
                self._give_up(workers)
                return

    def _finish_shut_down(self) -> None:
        try:
            self._record_outcomes()
        except Exception:
            logger.exception(
                "Could not record the outcome of %d jobs at shutdown; the next worker "
                "to start in this namespace will take them over",
                len(self._to_record),
            )
            self._to_record.clear()
        try:
            self._broker.deregister_worker()
        except Exception:
            logger.exception("Could not deregister the worker at shutdown")
        self._broker.stop()

    def _with_retries(self, call: Callable[[], object]) -> None:
        """Call a start-up broker operation, retrying a few times through a brief outage."""
        for attempt in range(_START_TRIES):
            try:
                call()
                return
            except SpinachError:
                raise
            except Exception as e:
                if attempt == _START_TRIES - 1:
                    raise
                wait = backoff(attempt, base=0.1, cap=_MAX_ERROR_WAIT)
                logger.warning("Broker error while starting (%s), trying again in %.1f s", e, wait)
                self._must_stop.wait(wait)

    def _register_tasks(self) -> None:
        """Store the namespace's concurrency and rate limits and periodic tasks in the broker."""
        tasks = list(self._tasks.tasks.values())
        self._broker.set_concurrency_limits(tasks)
        self._broker.set_rate_limits(tasks)
        self._broker.register_periodic_tasks(tasks)

    def _give_up(self, workers: Workers) -> None:
        """Settle the jobs still running past the grace period, and requeue the waiting ones."""
        started, waiting = workers.abandon()
        now = self._broker.now()
        for job in waiting:
            job.at, job.status = now, JobStatus.QUEUED
        for job in started:
            err = WorkerDiedError(
                f"{job} was still running {self._grace_period:g} s after the workers "
                "were told to stop"
            )
            settle(self._namespace, job, None, err, now)
        logger.warning(
            "Grace period over: gave up %d running job(s), queued %d waiting one(s) again",
            len(started),
            len(waiting),
        )
        self._to_record.extend(started + waiting)

    def _stop_cancelled(self, job_ids: list[str]) -> None:
        """Stop the jobs of these ids that the workers run or hold: they were
        cancelled. Remembered a while, for jobs whose hand-out is not submitted yet."""
        with self._cancel_lock:
            now = time.monotonic()
            recent = self._recently_cancelled
            for job_id in [job_id for job_id, until in recent.items() if until <= now]:
                del recent[job_id]
            for job_id in job_ids:
                recent[job_id] = now + _REMEMBER_CANCELLED
            workers = self._workers
            if workers is not None:
                workers.cancel(job_ids)

    def _heartbeat(self, liveness: Liveness) -> None:
        """Heartbeat with the jobs the workers run: one of them no longer this
        worker's and recorded CANCELLED was cancelled while the news was lost
        (a dropped subscription), and is stopped now."""
        workers = self._workers
        beat = liveness.heartbeat(workers.started_jobs() if workers is not None else ())
        for job in beat.lost:
            info = self._broker.get_job(job.id_text)
            if info is not None and info.status is JobStatus.CANCELLED:
                self._stop_cancelled([job.id_text])

    def _maintain(self) -> None:
        """Heartbeat, and take over the jobs of dead workers, until told to stop.

        Only with evidence (see :mod:`spinach._liveness`): after a stall or
        an outage, no job is taken over until this engine's heartbeats have
        kept their schedule for ``dead_worker_timeout``, by which time every
        live worker has heartbeated again. After the broker was out of reach,
        the tasks are registered again (its data may have been lost).
        """
        liveness = self._liveness
        assert liveness is not None
        reachable = True
        purge_after = time.monotonic()
        while not self._maintenance_must_stop.wait(self._heartbeat_interval):
            try:
                if not reachable:
                    self._register_tasks()
                self._heartbeat(liveness)
                if not reachable:
                    reachable = True
                    logger.info("The broker is reachable again")
                if self._keep_failed is not None and time.monotonic() >= purge_after:
                    purge_after = time.monotonic() + _PURGE_INTERVAL
                    self._purge_old_failures()
                silent_since = liveness.dead_before()
                if silent_since is None:
                    continue
                for job in self._broker.adopt_jobs_of_dead_workers(silent_since):
                    err = WorkerDiedError(
                        f"The worker running {job} stopped heartbeating for over "
                        f"{self._dead_worker_timeout:g} s and was declared dead"
                    )
                    settle(self._namespace, job, None, err, self._broker.now())
                    self._to_record.append(job)
                    self._broker.wake_up()
            except Exception:
                reachable = False
                logger.exception("Error while heartbeating")

    def _purge_old_failures(self) -> None:
        """Remove the jobs that failed longer ago than ``keep_failed``; an error is
        logged, and the next purge comes at its time."""
        assert self._keep_failed is not None
        try:
            before = self._broker.now() - self._keep_failed
            self._broker.purge_failed(failed_before=before.timestamp())
        except Exception:
            logger.exception("Could not purge the failed jobs older than %s", self._keep_failed)


#: What the engine resolved of a task: the task, why it cannot run on the
#: current workers if so, the seconds its results are kept and its jobs may run.
_Resolved = tuple[Task, Optional[InvalidTaskTypeError], Optional[float], Optional[float]]


def check_failed_bounds(
    keep_failed: object, max_failed: object, names: tuple[str, str] = ("keep_failed", "max_failed")
) -> None:
    """Check the bounds of the failed store, as ``Engine()`` takes them.

    Raises:
        ConfigurationError: naming the setting (``names``) at fault.
    """
    if keep_failed is not None and (
        not isinstance(keep_failed, timedelta) or keep_failed.total_seconds() <= 0
    ):
        raise ConfigurationError(
            f"{names[0]} must be a timedelta above 0, or None, got {keep_failed!r}"
        )
    if max_failed is not None and (
        not isinstance(max_failed, int) or isinstance(max_failed, bool) or max_failed < 1
    ):
        raise ConfigurationError(
            f"{names[1]} must be a number of jobs above 0, or None, got {max_failed!r}"
        )


def _job_size_bound(task: Task) -> int:
    """An upper bound of the size of a serialized job of ``task``, without its arguments."""
    # Field names and punctuation, id, numbers and time; names escaped at worst.
    return 300 + 12 * (len(task.name) + len(task.queue))


def _kind_error(task: Task, workers_class: type[Workers]) -> InvalidTaskTypeError | None:
    is_coroutine = inspect.iscoroutinefunction(task.func)
    if is_coroutine == workers_class.runs_coroutines:
        return None
    kind, other = (
        ("an 'async def'", "AsyncioWorkers") if is_coroutine else ("a plain 'def'", "ThreadWorkers")
    )
    return InvalidTaskTypeError(
        f"Task {task.name!r} is {kind} function and cannot run on {workers_class.__name__}: "
        f"give its queue workers of class {other}, or put it in another queue"
    )
