"""Workers: run the jobs an engine hands them, in threads or on an event loop.

Workers know nothing of brokers. They run a job, settle its outcome (see
:mod:`spinach._outcome`), send the job signals from the thread or task that
ran it, and hand the job back to the engine, which records it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Collection, Sequence
from typing import Any, Callable, Protocol

from typing_extensions import override

from . import signals
from ._interrupts import Interrupts
from ._outcome import fail, keep_result, settle
from .clock import Clock, SystemClock
from .exc import ConfigurationError, JobCancelled, JobTimeLimitExceeded, WorkersError
from .job import FINISHED, Job, JobStatus, check_arguments
from .logs import job_fields

__all__ = ["AsyncioWorkers", "StartGate", "ThreadWorkers", "Workers"]

logger = logging.getLogger(__name__)

#: Work, in seconds of the recent mean job duration, queued beyond the free
#: workers so that they do not wait for the broker's round trip between jobs.
_QUEUED_WORK = 0.02
#: Most jobs queued beyond the free workers: 32 per worker, at least 64 and at
#: most 256 (a fetch costs Redis and the engine less per job by the batch).
_MAX_QUEUED_PER_WORKER, _MIN_MAX_QUEUED, _MAX_MAX_QUEUED = 32, 64, 256


class StartGate(Protocol):
    """What workers ask before they start a job (the engine's is in ``spinach._liveness``)."""

    def is_open(self, handed_out: float) -> bool:
        """Whether a job handed out at ``handed_out`` (``time.monotonic()``) may
        start as it is; cheap, no I/O."""

    def confirm(self, workers: Workers) -> None:
        """Settle the jobs waiting in ``workers``: :meth:`Workers.confirmed` for
        those that may start, :meth:`Workers.drop` for the others."""

    def still_ours(self, job: Job) -> bool:
        """Whether a job taken through the gate, whose lease broke before its
        task was called, may still run (asks the broker)."""


class Workers(ABC):
    """A pool of ``num_workers`` workers of one namespace.

    Args:
        num_workers: how many jobs may run at once.
        namespace: namespace of the engine, the sender of the signals.
        clock: where retries read the time; the engine passes its broker's.
        on_job_done: called (from the worker) each time a job ran.
        gate: asked before each job starts; none by default.
        max_result_size: the largest result kept, in bytes of JSON; a job of
            a task keeping results that returns more fails. No limit by default.
    """

    #: Whether the task functions these workers call are ``async def``.
    runs_coroutines = False

    def __init__(
        self,
        num_workers: int,
        namespace: str,
        *,
        clock: Clock | None = None,
        on_job_done: Callable[[], None] | None = None,
        gate: StartGate | None = None,
        max_result_size: int | None = None,
    ) -> None:
        if not isinstance(num_workers, int) or num_workers < 1:
            raise ConfigurationError(
                f"the number of workers must be 1 or more, got {num_workers!r}"
            )
        self._num_workers = num_workers
        self._max_queued = min(
            _MAX_MAX_QUEUED, max(_MIN_MAX_QUEUED, num_workers * _MAX_QUEUED_PER_WORKER)
        )
        self._namespace = namespace
        self._clock = clock if clock is not None else SystemClock()
        self._on_job_done = on_job_done
        self._gate = gate
        self._max_result_size = max_result_size
        self._done: queue.SimpleQueue[Job] = queue.SimpleQueue()
        self._in_flight = 0
        self._lock = threading.Lock()
        self._stopping = False
        # Submitted jobs not yet done, and those that started. Keyed by the job
        # object, not its id: a job taken over while this worker stalled may be
        # handed to it again, a second object with the same id, while the first
        # still waits in a queue or runs.
        self._unfinished: dict[int, Job] = {}
        self._taken: set[int] = set()
        # When each job not done was handed out (or last confirmed), for the gate.
        self._handed_out: dict[int, float] = {}
        # Jobs started and then cancelled, until they are done (see cancel()).
        self._cancelled: dict[int, Job] = {}
        # Moving mean of the run time of jobs, None before the first one.
        self._mean_duration: float | None = None
        self._start()

    @property
    def num_workers(self) -> int:
        """How many jobs may run at once."""
        return self._num_workers

    @property
    def available_slots(self) -> int:
        """How many more jobs can be submitted now."""
        with self._lock:
            return self._num_workers - self._in_flight

    @property
    def jobs_wanted(self) -> int:
        """How many more jobs to submit now.

        One per free worker, plus, while the recent jobs were short, as many
        as the workers run in about 20 ms (by the moving mean of job run
        times; 32 per worker, at least 64 and at most 256) to queue: short
        jobs are not held back by the round trip that fetches the next ones.
        """
        with self._lock:
            queued = 0
            mean = self._mean_duration
            if mean is not None:
                wanted = int(self._num_workers * _QUEUED_WORK / max(mean, 1e-6))
                queued = min(self._max_queued, wanted)
            return self._num_workers + queued - self._in_flight

    @property
    def idle(self) -> bool:
        """Whether no submitted job is waiting, running or uncollected."""
        with self._lock:
            return self._in_flight == 0

    def submit_job(self, job: Job) -> None:
        """Hand a job (with its ``task_func`` set) to a free worker."""
        self.submit_jobs([job])

    def submit_jobs(self, jobs: list[Job], handed_out: float | None = None) -> None:
        """Hand jobs (with their ``task_func`` set) to the workers, in order.

        ``handed_out`` is the ``time.monotonic()`` before the broker call that
        handed them out, for the gate; now by default.
        """
        if handed_out is None:
            handed_out = time.monotonic()
        with self._lock:
            if self._stopping:
                raise WorkersError(
                    f"Workers of namespace {self._namespace!r} are stopping and take no new "
                    "job: submit jobs before stop() or request_stop(), or to new workers"
                )
            self._in_flight += len(jobs)
            for job in jobs:
                self._unfinished[id(job)] = job
                self._handed_out[id(job)] = handed_out
        self._submit(jobs)

    def collect_finished(self) -> list[Job]:
        """Return the jobs that ran since the last call, freeing their slots."""
        jobs: list[Job] = []
        while True:
            try:
                jobs.append(self._done.get_nowait())
            except queue.Empty:
                break
        if jobs:
            with self._lock:
                self._in_flight -= len(jobs)
        return jobs

    def abandon(self) -> tuple[list[Job], list[Job]]:
        """Give up the jobs not done yet: they will not be handed back.

        Returns the jobs that started (and may still be running), and those
        that never started (and now never will).
        """
        with self._lock:
            jobs = list(self._unfinished.values())
            started = [job for job in jobs if id(job) in self._taken]
            waiting = [job for job in jobs if id(job) not in self._taken]
            self._unfinished.clear()
            self._taken.clear()
            self._handed_out.clear()
        return started, waiting

    def started_jobs(self) -> list[Job]:
        """The jobs submitted that started and are not done yet."""
        with self._lock:
            return [job for job in self._unfinished.values() if id(job) in self._taken]

    def waiting_jobs(self) -> list[Job]:
        """The jobs submitted that did not start yet."""
        with self._lock:
            return [job for job in self._unfinished.values() if id(job) not in self._taken]

    def drop(self, jobs: Collection[Job]) -> None:
        """Never start these jobs (those that did not start yet), nor hand them back."""
        with self._lock:
            for job in jobs:
                if id(job) in self._unfinished and id(job) not in self._taken:
                    del self._unfinished[id(job)]
                    del self._handed_out[id(job)]
                    self._in_flight -= 1

    def cancel(self, job_ids: Collection[str]) -> None:
        """Stop the jobs of these ids, which were cancelled: those not started
        never start, nor are handed back (as :meth:`drop`); those started are
        interrupted (see :meth:`_interrupt`), and handed back ``CANCELLED``."""
        wanted = set(job_ids)
        started = []
        with self._lock:
            for job in [job for job in self._unfinished.values() if job.id_text in wanted]:
                if id(job) in self._taken:
                    self._cancelled[id(job)] = job
                    started.append(job)
                else:
                    del self._unfinished[id(job)]
                    del self._handed_out[id(job)]
                    self._in_flight -= 1
        if started:
            self._interrupt(started)

    @abstractmethod
    def _interrupt(self, jobs: list[Job]) -> None:
        """Interrupt these started jobs, now in :attr:`_cancelled`."""

    def confirmed(self, jobs: Collection[Job], at: float) -> None:
        """Count these jobs, if not done, as handed out at ``at`` for the gate."""
        with self._lock:
            for job in jobs:
                if id(job) in self._handed_out:
                    self._handed_out[id(job)] = at

    def _worker_name(self, index: int) -> str:
        return f"{self._namespace}-worker-{index}"

    def _take(self, job: Job) -> bool | None:
        """Mark a job as started: True when it may run (:meth:`_may_call` has the
        last word); False when it was abandoned or dropped and must not run;
        None when the gate must confirm it first (then call this again)."""
        with self._lock:
            if id(job) not in self._unfinished:
                return False
            if self._gate is not None and not self._gate.is_open(self._handed_out[id(job)]):
                return None
            self._taken.add(id(job))
            return True

    def _may_call(self, job: Job) -> bool | None:
        """Right before the task of a job taken by :meth:`_take` is called: True
        when it may be; None when the lease broke in between (this process
        stalled), and the gate must ask the broker (:meth:`StartGate.still_ours`)."""
        # One dict read, atomic: no lock on the path of every job.
        handed_out = self._handed_out.get(id(job))
        if self._gate is None or handed_out is None or self._gate.is_open(handed_out):
            return True
        return None

    def _not_called(self, job: Job) -> None:
        """Forget a job taken over between :meth:`_take` and the call of its task."""
        with self._lock:
            if self._unfinished.pop(id(job), None) is not None:
                self._in_flight -= 1
            self._taken.discard(id(job))
            self._cancelled.pop(id(job), None)
            self._handed_out.pop(id(job), None)
        logger.warning(
            "%s was taken over by another worker while this one was unresponsive, "
            "right before its task was called: not run here",
            job,
        )
        # Its job_started was sent: what receivers began there, they end here.
        signals.job_finished.send(self._namespace, job=job)

    def _started(self, job: Job) -> float:
        job.status = JobStatus.RUNNING
        signals.job_started.send(self._namespace, job=job)
        if logger.isEnabledFor(logging.INFO):
            extra = job_fields(job, job.retries + 1, "started")
            logger.info("Starting execution of %s", job, extra=extra)
        return time.monotonic()

    def _ran(self, job: Job, started: float, err: BaseException | None, result: object) -> None:
        duration = time.monotonic() - started
        try:
            if err is None and job.keep_result is not None:
                err = keep_result(job, result, self._max_result_size)
            settle(self._namespace, job, duration, err, self._clock.now())
            if job.status not in FINISHED:
                # The task may have put what JSON cannot hold into its own
                # arguments; stored again, the job would fail every record.
                check_arguments(job.task_name, job.task_args, job.task_kwargs)
        except Exception as e:
            # The job must still be recorded: fail it rather than lose it.
            logger.exception("Could not settle the outcome of %s; failing it", job)
            fail(job, e, self._clock.now())
            signals.job_failed.send(self._namespace, job=job, err=e)
        signals.job_finished.send(self._namespace, job=job)
        with self._lock:
            mean = self._mean_duration
            self._mean_duration = duration if mean is None else 0.9 * mean + 0.1 * duration
            abandoned = self._unfinished.pop(id(job), None) is None
            self._cancelled.pop(id(job), None)
            self._taken.discard(id(job))
            self._handed_out.pop(id(job), None)
            if not abandoned:
                # Inside the lock: a job is either abandoned or handed back, never neither.
                self._done.put(job)
        if abandoned:
            logger.warning("%s ended after the workers gave it up: outcome not recorded", job)
            return
        if self._on_job_done is not None:
            self._on_job_done()

    @abstractmethod
    def _start(self) -> None:
        """Start the workers; called at the end of ``__init__``."""

    @abstractmethod
    def _submit(self, jobs: list[Job]) -> None:
        """Pass jobs to the workers."""

    def stop(self, timeout: float | None = None) -> bool:
        """Let every submitted job run to its end, then stop the workers.

        Returns False when ``timeout`` seconds passed before that.
        """
        self.request_stop()
        return self.join(timeout)

    def request_stop(self) -> None:
        """Ask the workers to stop once every submitted job has run; do not wait.

        From then on they take no new job: :meth:`submit_jobs` raises
        :class:`~spinach.exc.WorkersError`, as in 0.0.25.
        """
        with self._lock:
            self._stopping = True
        self._request_stop()

    @abstractmethod
    def _request_stop(self) -> None:
        """Tell the workers to stop once every submitted job has run."""

    @abstractmethod
    def join(self, timeout: float | None = None) -> bool:
        """Wait for the workers to stop; False when ``timeout`` seconds passed first."""

    @abstractmethod
    def runs_in_current_thread(self) -> bool:
        """Whether the calling code runs in one of these workers."""


class ThreadWorkers(Workers):
    """Workers running plain ``def`` tasks, one thread each, named ``{ns}-worker-{i}``."""

    @override
    def _start(self) -> None:
        self._interrupts = Interrupts(f"{self._namespace}-time-limits")
        self._queue: queue.SimpleQueue[Job | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(
                target=self._work,
                args=(self._worker_name(i),),
                name=self._worker_name(i),
                daemon=True,
            )
            for i in range(1, self._num_workers + 1)
        ]
        for thread in self._threads:
            thread.start()

    @override
    def _submit(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._queue.put(job)

    def _work(self, worker_name: str) -> None:
        signals.worker_started.send(self._namespace, worker_name=worker_name)
        while True:
            job = self._queue.get()
            if job is None:
                break
            taken = self._take(job)
            while taken is None:
                assert self._gate is not None
                self._gate.confirm(self)
                taken = self._take(job)
            if not taken:
                continue
            started = self._started(job)
            call = self._may_call(job)
            if call is None:
                assert self._gate is not None
                call = self._gate.still_ours(job)
            if not call:
                self._not_called(job)
                continue
            assert job.task_func is not None  # set by the engine
            result, err = self._interrupts.run(
                id(job),
                job.time_limit,
                job.task_func,
                job.task_args,
                job.task_kwargs,
                self._cancelled,
            )
            _explain(err, job)
            self._ran(job, started, err, result)
        signals.worker_terminated.send(self._namespace, worker_name=worker_name)

    @override
    def _interrupt(self, jobs: list[Job]) -> None:
        for job in jobs:
            self._interrupts.interrupt(id(job))

    @override
    def runs_in_current_thread(self) -> bool:
        return threading.current_thread() in self._threads

    @override
    def _request_stop(self) -> None:
        for _ in self._threads:
            self._queue.put(None)

    @override
    def join(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for thread in self._threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        if any(thread.is_alive() for thread in self._threads):
            return False
        self._interrupts.stop()
        return True


class AsyncioWorkers(Workers):
    """Workers running ``async def`` tasks: one thread with an event loop and
    ``num_workers`` worker coroutines, named ``{ns}-worker-{i}``."""

    runs_coroutines = True

    @override
    def _start(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._queue: asyncio.Queue[Job | None] | None = None
        # The task running each job's coroutine, and the jobs whose task was
        # cancelled because the job was; touched in the loop's thread only.
        self._running_in: dict[int, asyncio.Task[Any]] = {}
        self._cancelling: set[int] = set()
        self._thread = threading.Thread(
            target=self._run_loop, name=f"{self._namespace}-asyncio-workers", daemon=True
        )
        self._thread.start()
        self._ready.wait()

    def _run_loop(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._queue = asyncio.Queue()
        self._ready.set()
        await asyncio.gather(
            *(self._work(self._worker_name(i)) for i in range(1, self._num_workers + 1))
        )

    async def _work(self, worker_name: str) -> None:
        assert self._queue is not None
        signals.worker_started.send(self._namespace, worker_name=worker_name)
        while True:
            job = await self._queue.get()
            if job is None:
                break
            taken = self._take(job)
            while taken is None:
                assert self._gate is not None
                # In a thread: the confirmation is a broker call, which must not
                # hold up the coroutines running meanwhile.
                await asyncio.to_thread(self._gate.confirm, self)
                taken = self._take(job)
            if not taken:
                continue
            started = self._started(job)
            call = self._may_call(job)
            if call is None:
                assert self._gate is not None
                call = await asyncio.to_thread(self._gate.still_ours, job)
            if not call:
                self._not_called(job)
                continue
            result, err = await self._call(job)
            _explain(err, job)
            self._ran(job, started, err, result)
        signals.worker_terminated.send(self._namespace, worker_name=worker_name)

    async def _call(self, job: Job) -> tuple[Any, BaseException | None]:
        """Run the job's coroutine; its result and None, or None and what it raised."""
        if id(job) in self._cancelled:  # cancelled before its call: _interrupt() came first
            return None, JobCancelled()
        task = asyncio.current_task()
        assert task is not None
        # Cancelling this worker's task while it awaits the job cancels the job:
        # nothing else is awaited until the job ends.
        self._running_in[id(job)] = task
        err: BaseException | None = None
        result = None
        try:
            coroutine = job.task_func(*job.task_args, **job.task_kwargs)  # type: ignore[misc]  # set by the engine
            if job.time_limit is None:
                result = await coroutine
            else:
                result = await _limited(coroutine, job.time_limit)
        except BaseException as e:  # a task raising CancelledError must not kill its worker
            err = e
        finally:
            del self._running_in[id(job)]
        if id(job) in self._cancelling:
            self._cancelling.discard(id(job))
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+
            if uncancel is not None:
                uncancel()
            return None, JobCancelled()
        return result, err

    def _cancel_tasks(self, jobs: list[Job]) -> None:
        """In the loop's thread: cancel the tasks running these jobs."""
        for job in jobs:
            task = self._running_in.get(id(job))
            if task is not None and id(job) not in self._cancelling:
                self._cancelling.add(id(job))
                task.cancel()

    @override
    def _interrupt(self, jobs: list[Job]) -> None:
        # A closed loop raises RuntimeError: the workers stopped, and the jobs ended.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._cancel_tasks, jobs)

    def _put(self, items: Sequence[Job | None]) -> None:
        assert self._queue is not None
        for item in items:
            self._queue.put_nowait(item)

    @override
    def _submit(self, jobs: list[Job]) -> None:
        # One wake-up of the event loop for all of them.
        self._loop.call_soon_threadsafe(self._put, list(jobs))

    @override
    def runs_in_current_thread(self) -> bool:
        return threading.current_thread() is self._thread

    @override
    def _request_stop(self) -> None:
        if self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._put, [None] * self._num_workers)

    @override
    def join(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


async def _limited(coroutine: Any, limit: float) -> Any:
    """Await ``coroutine``, cancelled after ``limit`` seconds with
    :class:`JobTimeLimitExceeded` raised instead."""
    task = asyncio.ensure_future(_outcome_of(coroutine))
    try:
        done, _ = await asyncio.wait({task}, timeout=limit)
    except asyncio.CancelledError:
        # Cancelled itself (the job was): the job's task ends before the worker goes on.
        task.cancel()
        await asyncio.wait({task})
        raise
    if task in done:
        result, err = task.result()
        if err is not None:
            raise err
        return result
    task.cancel()
    try:
        await task
    except BaseException:
        if not task.done():  # this worker itself is being cancelled
            raise
        # Else its CancelledError, or what it raised while cancelled: not the outcome.
    raise JobTimeLimitExceeded()


async def _outcome_of(coroutine: Any) -> tuple[Any, BaseException | None]:
    """The result of ``coroutine``, or what it raised: in a task of its own, a
    ``SystemExit`` it raises must fail its job, not leave the event loop."""
    try:
        return await coroutine, None
    except asyncio.CancelledError:
        raise
    except BaseException as e:
        return None, e


def _explain(err: BaseException | None, job: Job) -> None:
    """Give a time limit's or a cancellation's exception, raised bare, a message
    naming the job."""
    if isinstance(err, JobTimeLimitExceeded) and not err.args:
        err.args = (f"{job} ran past its time limit of {job.time_limit:g} s",)
    elif isinstance(err, JobCancelled) and not err.args:
        err.args = (f"{job} was cancelled",)
