"""An engine's own heartbeats: the evidence to declare others dead, and the lease to start jobs.

Two promises rest on them (see ``docs/guarantees.md``):

* **Death needs evidence.** An engine declares another worker dead only
  after its own heartbeats were recorded on schedule, with no gap longer than
  :attr:`Liveness.max_gap`, for a whole ``dead_worker_timeout``, and only
  workers silent for ``dead_worker_timeout`` before its *last* heartbeat,
  by the broker's clock. A stall of Redis, of the network or of this process
  breaks the run of heartbeats, so after any of them every other worker gets
  a fresh ``dead_worker_timeout`` to heartbeat again.
* **A worker never starts a job that is no longer its own.** While the last
  heartbeat recorded was sent less than ``dead_worker_timeout / 2`` ago, no
  other worker can have declared this one dead, and jobs start without a
  round trip. Past that (this process or Redis stalled), the jobs handed to
  the workers are confirmed first, in one heartbeat that returns those taken
  over meanwhile; those are dropped, never started.

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
        # time.monotonic() until which jobs start without being confirmed.
        self._lease_end = -math.inf

    def heartbeat(self, held: Collection[Job] = ()) -> Heartbeat:
        """Heartbeat through the broker, and count it as evidence and lease.

        Raises:
            Exception: what the broker raised; the run of heartbeats is then broken.
        """
        sent = time.monotonic()
        try:
            beat = self._broker.heartbeat(held)
        except Exception:
            with self._lock:
                self._last = None
            raise
        with self._lock:
            if self._last is None or beat.at - self._last > self.max_gap:
                self._run_start = beat.at  # a stall, or the first heartbeat
            # A heartbeat recorded before the last one (two threads
            # heartbeating at once) neither breaks nor extends the run.
            self._last = beat.at if self._last is None else max(self._last, beat.at)
            # Recorded after it was sent: no one can declare this worker dead
            # before ``sent + T``; half of that leaves room for delays.
            self._lease_end = max(self._lease_end, sent + self._timeout / 2)
        return beat

    def dead_before(self) -> float | None:
        """The ``silent_since`` of :meth:`Broker.adopt_jobs_of_dead_workers`: workers
        silent since before it are dead. None while this engine has not heartbeated
        on schedule for a whole ``dead_worker_timeout``: it has no evidence yet."""
        with self._lock:
            if self._last is None or self._last - self._run_start < self._timeout:
                return None
            return self._last - self._timeout

    def is_open(self) -> bool:
        """Whether jobs may start without being confirmed (no I/O)."""
        return time.monotonic() < self._lease_end

    def confirm(self, workers: Workers) -> None:
        """Confirm that the jobs handed to ``workers`` and not started are still
        this worker's, dropping the others, before any of them starts.

        Called by a worker about to start a job while :meth:`is_open` is false;
        other workers calling meanwhile wait for the same confirmation. While
        the broker is out of reach it tries again; when the engine is stopping
        it gives the jobs up instead (they stay running under this worker in
        the broker, and are taken over like those of a dead worker).
        """
        with self._confirming:
            while not self.is_open():
                held = workers.waiting_jobs()
                try:
                    beat = self.heartbeat(held)
                except Exception as e:
                    if self._stopping.is_set():
                        logger.warning(
                            "Could not confirm %d job(s) handed to the workers (%s) while "
                            "stopping: not started; they will be taken over as a dead "
                            "worker's",
                            len(held),
                            e,
                        )
                        workers.drop(held)
                        return
                    logger.warning(
                        "Could not confirm the jobs handed to the workers (%s); jobs wait", e
                    )
                    self._stopping.wait(_CONFIRM_RETRY)
                    continue
                if beat.lost:
                    logger.warning(
                        "%d job(s) handed to this worker were taken over while it was "
                        "unresponsive (a stall of this process or of the broker): not "
                        "started here",
                        len(beat.lost),
                    )
                    workers.drop(beat.lost)
