"""Workers waiting for jobs, which enqueue_jobs hands straight to them.

An engine whose fetch found no job registers a wait (``lua/wait_for_jobs.lua``)
and blocks in ``BLPOP`` on its inbox. A producer's ``enqueue_jobs`` script hands
the new jobs out to the last wait registered, as that worker's fetch would, and
puts them in its inbox: the worker has them as soon as the producer has its
reply, without a notification and a fetch in between. What makes it safe:

- A wait is live while the worker's record in ``calls`` names it: the worker's
  next fetch, its end, and its takeover as a dead worker all replace that record,
  so no job is handed out to a wait its worker gave up.
- The worker's next fetch asks for the jobs of its last wait (same token prefix):
  jobs whose ``BLPOP`` reply was lost, or that came after the wait ended, are
  returned then (see get_jobs_from_queue); when it stops instead, they go back
  to the head of their queue (requeue_lost_handouts).
- A wait is over :data:`WAIT_SECONDS` after it was registered, though the worker
  blocks only until its next look at future jobs (every 50 ms when idle, which
  Redis rounds up to its next tick, 100 ms by default), and then registers a
  new one. A hand-out ends a wait: a worker that died waiting gets the jobs of
  one scheduling call at most, and they are taken over with its other jobs.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

import attrs

logger = logging.getLogger(__name__)

__all__ = ["INBOX_MS", "WAIT_SECONDS", "Wait", "Waiter", "can_block"]

#: Seconds a wait lasts at most, by the broker's clock (the worker waits again after).
WAIT_SECONDS = 0.5
#: Milliseconds a worker's inbox is kept after a wake-up is put in it (as enqueue_jobs does).
INBOX_MS = 30_000


def can_block(client: Any) -> bool:
    """Whether ``client`` can block a connection in ``BLPOP`` for a wait.

    Not a client of one connection (every other call would wait for the
    block to end), nor one whose connections time out reading before a wait is over.
    """
    if getattr(client, "connection", None) is not None:
        return False
    pool = getattr(client, "connection_pool", None)
    if pool is not None:
        kwargs = pool.connection_kwargs
    else:  # a RedisCluster
        kwargs = getattr(getattr(client, "nodes_manager", None), "connection_kwargs", {})
    timeout = kwargs.get("socket_timeout")
    # Redis ends a blocked command at its next tick (10 per second by default)
    # after its timeout.
    return timeout is None or timeout >= WAIT_SECONDS + 1


@attrs.frozen
class Wait:
    """One wait of a worker for jobs of ``queue``, under a token prefix of its own."""

    queue: str
    prefix: str
    max_jobs: int

    @property
    def member(self) -> str:
        """Its member in the queue's sorted set of waits."""
        return f"{self.prefix}{self.max_jobs}"


class Waiter:
    """The waits of one worker: the last one whose jobs did not come, and
    whether it blocks now, for :meth:`wake`.

    A wake-up is sent by a thread of its own (started with the first block):
    :meth:`wake` is called from worker threads, the notification listener
    and signal handlers, which must not wait for Redis, nor fail with it.
    """

    def __init__(self, client: Any) -> None:
        self._client = client
        #: The inbox of the worker (set by each wait: the namespace may change).
        self.inbox = ""
        #: The last wait registered whose jobs did not come: the worker's next
        #: fetch of its queue asks for them, its end puts them back.
        self.pending: Wait | None = None
        #: A wait registered, then given up: its member goes at the next wait.
        self.stale: Wait | None = None
        #: Set when Redis refused BLPOP (an ACL without it): waits are the plain ones.
        self.refused = False
        self._blocked = False
        self._wake_sent = False
        self._stopping = False
        self._lock = threading.Lock()
        self._kick = threading.Event()
        self._waker: threading.Thread | None = None

    def settle(self, queue: str) -> str | None:
        """The token prefix that the fetch of ``queue`` about to be made asks
        for: the pending wait's, when it was on ``queue`` (then it is settled);
        None otherwise."""
        wait = self.pending
        if wait is None or wait.queue != queue:
            return None
        self.pending = None
        self.stale = wait
        return wait.prefix

    def give_up(self) -> Wait | None:
        """The pending wait, given up: its jobs (if any came) are to be put back."""
        wait, self.pending = self.pending, None
        if wait is not None:
            self.stale = wait
        return wait

    def begin_block(self) -> None:
        with self._lock:
            self._blocked = True
            self._stopping = False
            if self._waker is None:
                self._waker = threading.Thread(
                    target=self._send_wake_ups, name="spinach-wait-waker", daemon=True
                )
                self._waker.start()

    def end_block(self) -> None:
        with self._lock:
            self._blocked = False
            self._wake_sent = False

    def wake(self) -> None:
        """End the block in progress, if any: the waker thread puts an empty
        entry in the inbox. Takes no lock of its own (signal handlers call
        it); two wake-ups at once may send two entries, which is harmless."""
        if not self._blocked or self._wake_sent:
            return
        self._wake_sent = True
        self._kick.set()

    def stop(self) -> None:
        """End the waker thread (a later block starts another)."""
        with self._lock:
            self._stopping = True
        self._kick.set()

    def _send_wake_ups(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            with self._lock:
                if self._stopping:
                    # Under the lock: a block starting after this starts another.
                    self._waker = None
                    return
                inbox = self.inbox
            try:
                pipe = self._client.pipeline(transaction=False)
                pipe.lpush(inbox, b"")
                pipe.pexpire(inbox, INBOX_MS)
                pipe.execute()
            except Exception as e:  # a cluster's errors are no RedisError
                # The block ends on its own, at the engine's next look.
                logger.debug("Could not wake up the worker's wait for jobs: %s", e)
