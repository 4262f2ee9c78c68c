"""An engine's own heartbeats: the evidence to declare others dead, and the lease to start jobs.

Two promises rest on them (see ``docs/guarantees.md``):

* **Death needs evidence.** An engine declares another worker dead only
  after its own heartbeats were recorded on schedule, with no gap longer than
  :attr:`Liveness.max_gap`, for a whole ``dead_worker_timeout``, and only
  workers silent for ``dead_worker_timeout`` before its *last* heartbeat,
  by the broker's clock. A stall of Redis, of the network or of this process
  breaks the run of heartbeats, so after any of them every other worker gets
  a fresh ``dead_worker_timeout`` to heartbeat again.
* **A worker never starts a job that is no longer its own.** A heartbeat
  sent at ``t`` and recorded means no other worker can declare this one dead
  before ``t + dead_worker_timeout``: it gives a lease until
  ``t + dead_worker_timeout / 2``. A job starts without a round trip when the
  lease has held without a break since the call that handed it out. Else
  (this process or Redis stalled meanwhile) the jobs handed to the workers
  are confirmed first, in one heartbeat that returns those taken over
  meanwhile; those are dropped, never started.

The margins: with ``T = dead_worker_timeout`` and ``i = heartbeat_interval``
(``T >= 4 i``), a gap over ``(T - i) / 2`` breaks the run. A stall shorter
than that leaves a live worker's last heartbeat at most ``i + (T - i) / 2``
old, still under ``T`` with ``(T - i) / 2`` to spare for delays.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Collection

from .brokers.base import Broker, Heartbeat
from .job import Job
from .worker import Workers

__all__ = ["Liveness"]

logger = logging.getLogger("spinach.engine")

#: Longest wait between two tries to confirm the jobs held while the broker is out of reach.
_CONFIRM_RETRY = 1.0


class Liveness:
    """The heartbeats of one start of an engine's workers.

    Args:
        broker: the engine's broker.
        heartbeat_interval: seconds between two heartbeats.
        dead_worker_timeout: seconds of silence after which a worker is dead.
        stopping: set when the engine stops: jobs that cannot be confirmed
            are then given up instead of waited for.
    """

    def __init__(
        self,
        broker: Broker,
        heartbeat_interval: float,
        dead_worker_timeout: float,
        stopping: threading.Event,
    ) -> None:
        self._broker = broker
        self._timeout = dead_worker_timeout
        self._stopping = stopping
        #: Longest gap between two heartbeats recorded that is not a stall.
        self.max_gap = (dead_worker_timeout - heartbeat_interval) / 2
        self._lock = threading.Lock()
        self._confirming = threading.Lock()
        # Broker times of the last heartbeat recorded and of the first of the
        # run of heartbeats on schedule that it ends; None after a failure.
        self._last: float | None = None
        self._run_start = 0.0
        # The lease, in time.monotonic(): since when it has held without a
        # break, and until when it holds. One tuple, read without the lock.
        self._lease = (math.inf, -math.inf)

    def heartbeat(self, held: Collection[Job] = ()) -> Heartbeat:
        """Heartbeat through the broker, and count it as evidence and lease.

        Raises:
            Exception: what the broker raised; the run of heartbeats is then broken.
        """
        return self._heartbeat(held)[0]

    def _heartbeat(self, held: Collection[Job]) -> tuple[Heartbeat, float]:
        """:meth:`heartbeat`, and the time.monotonic() at which it was known recorded."""
        sent = time.monotonic()
        try:
            beat = self._broker.heartbeat(held)
        except Exception:
            with self._lock:
                self._last = None
            raise
        done = time.monotonic()
        with self._lock:
            if self._last is None or beat.at - self._last > self.max_gap:
                self._run_start = beat.at  # a stall, or the first heartbeat
            # A heartbeat recorded before the last one (two threads
            # heartbeating at once) neither breaks nor extends the run.
            self._last = beat.at if self._last is None else max(self._last, beat.at)
            # Recorded once sent: no one can declare this worker dead before
            # ``sent + T``; half of that leaves room for delays. A worker may
            # have been declared dead before it was recorded, though: if the
            # lease had run out by then, it holds again only from now on.
            since, end = self._lease
            if done >= end:
                since = done
            self._lease = (since, max(end, sent + self._timeout / 2))
        return beat, done

    def dead_before(self) -> float | None:
        """The ``silent_since`` of :meth:`Broker.adopt_jobs_of_dead_workers`: workers
        silent since before it are dead. None while this engine has not heartbeated
        on schedule for a whole ``dead_worker_timeout``: it has no evidence yet."""
        with self._lock:
            if self._last is None or self._last - self._run_start < self._timeout:
                return None
            return self._last - self._timeout

    def is_open(self, handed_out: float) -> bool:
        """Whether a job handed out at ``handed_out`` (time.monotonic() before the
        call that handed it out) may start without being confirmed: the lease
        holds, and has held without a break since then. No I/O."""
        since, end = self._lease
        return since <= handed_out and time.monotonic() < end

    def confirm(self, workers: Workers) -> None:
        """Confirm, in one heartbeat, that the jobs handed to ``workers`` and not
        started are still this worker's; drop the others, never to start.

        Called by a worker about to start a job that :meth:`is_open` does not
        let through; other workers calling meanwhile wait for the same
        confirmation. While the broker is out of reach it tries again; when the
        engine is stopping it gives the jobs up instead (they stay running
        under this worker in the broker, and are taken over like those of a
        dead worker).
        """
        with self._confirming:
            held = workers.waiting_jobs()
            answer = self._ask(held)
            if answer is None:
                workers.drop(held)
                return
            beat, done = answer
            if beat.lost:
                logger.warning(
                    "%d job(s) handed to this worker were taken over while it was "
                    "unresponsive (a stall of this process or of the broker): not "
                    "started here",
                    len(beat.lost),
                )
                workers.drop(beat.lost)
            # Still this worker's when the heartbeat was recorded, and so until
            # the lease runs out.
            workers.confirmed(held, done)

    def still_ours(self, job: Job) -> bool:
        """Whether ``job``, taken through the gate, may still run although the
        lease broke before its task was called: one heartbeat asks, tried
        again while the broker is out of reach. False when the job was taken
        over, or when the engine stops before the broker answers (the job is
        then taken over like a dead worker's)."""
        answer = self._ask([job])
        return answer is not None and not answer[0].lost

    def _ask(self, held: Collection[Job]) -> tuple[Heartbeat, float] | None:
        """A heartbeat carrying ``held`` (see :meth:`_heartbeat`), tried again while
        the broker is out of reach; None when the engine stops first."""
        while True:
            try:
                return self._heartbeat(held)
            except Exception as e:
                if self._stopping.is_set():
                    logger.warning(
                        "Could not confirm %d job(s) handed to the workers (%s) while "
                        "stopping: not started; they will be taken over as a dead "
                        "worker's",
                        len(held),
                        e,
                    )
                    return None
                logger.warning(
                    "Could not confirm the jobs handed to the workers (%s); jobs wait", e
                )
                self._stopping.wait(_CONFIRM_RETRY)
