"""What the Redis broker holds of a job by id: reading one, and the failed store.

The operations of :class:`~spinach.brokers.base.Broker` that see and steer
jobs by id (``get_job``, ``failed_jobs``, ``requeue_failed``,
``purge_failed``), each one Lua script of ``lua/``; :class:`RedisBroker`
takes them from :class:`JobRecords`. What a record holds is defined in
:mod:`spinach._ended`.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable

from ..._ended import read_record, split_record
from ...job import Job, JobInfo, JobStatus
from .errors import refused_clearly
from .payload import pack, salvage, unpack

if TYPE_CHECKING:
    import redis as redis_py

    from .keys import Keys

__all__ = ["JobRecords"]

#: Most jobs removed from the failed store per call of purge_failed, or read per
#: call of requeue_failed: no call blocks Redis for long.
_FAILED_CHUNK = 1000


def _text(value: Any) -> str:
    """A reply of Redis as text, from a client decoding responses or not."""
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class JobRecords:
    """The operations of :class:`RedisBroker` on jobs by id and on the failed store."""

    if TYPE_CHECKING:  # what it uses of RedisBroker
        _redis: redis_py.Redis | redis_py.RedisCluster

        @property
        def _keys(self) -> Keys: ...

        def _run(self, script: str, keys: list[str], args: list[Any]) -> Any: ...

        def _now(self) -> float: ...

        def now(self) -> datetime: ...

    def get_job(self, job_id: str) -> JobInfo | None:
        keys, args = self._get_job_call(job_id)
        return self._job_info(job_id, self._run("get_job", keys, args), self.now)

    def _get_job_call(self, job_id: str) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the get_job script reading ``job_id``."""
        k = self._keys
        return [k.running, k.payloads, k.failed_jobs, k.result(job_id)], [job_id]

    def _job_info(self, job_id: str, reply: Any, now: Callable[[], datetime]) -> JobInfo | None:
        """What the get_job script's ``reply`` tells of ``job_id``, with ``now``
        telling a waiting job from a queued one."""
        where = int(reply[0])
        if where in (1, 2):
            try:
                job = unpack(job_id, reply[1])
            except ValueError:
                task_name, queue = salvage(reply[1])
                job = Job.could_not_read(job_id, "", now(), task_name, queue)
            if where == 1:
                started = _started(_text(reply[2]))
                return JobInfo.of_job(job, JobStatus.RUNNING, started)
            status = JobStatus.WAITING if job.at > now() else JobStatus.QUEUED
            return JobInfo.of_job(job, status)
        if where in (3, 4):
            return read_record(job_id, reply[1], unpack, salvage)
        return None

    def failed_jobs(self, limit: int, offset: int = 0) -> list[JobInfo]:
        if limit <= 0:
            return []
        k = self._keys
        flat = self._run("failed_jobs", [k.failed_jobs, k.failed_index], [offset, limit])
        pairs = zip(flat[::2], flat[1::2])
        return [read_record(_text(job_id), record, unpack, salvage) for job_id, record in pairs]

    def requeue_failed(self, job_ids: Collection[str] | None = None) -> int:
        if job_ids is None:
            # The jobs that failed before this call, the oldest first, a chunk at a
            # time: a job requeued here that fails again meanwhile is not requeued
            # again. The jobs of a chunk leave the store, but for those that have
            # no queue to go to: the next chunk starts after them.
            total, offset, until = 0, 0, repr(self._now())
            while True:
                with refused_clearly():
                    members = self._redis.zrangebyscore(
                        self._keys.failed_index, "-inf", until, start=offset, num=_FAILED_CHUNK
                    )
                if not members:
                    return total
                requeued, stay = self._requeue([_text(member) for member in members])
                total += requeued
                offset += stay
        ids = list(dict.fromkeys(job_ids))
        chunks = (ids[i : i + _FAILED_CHUNK] for i in range(0, len(ids), _FAILED_CHUNK))
        return sum(self._requeue(chunk)[0] for chunk in chunks)

    def _requeue(self, job_ids: Sequence[str]) -> tuple[int, int]:
        """Requeue these jobs of the failed store: their payloads are read and reset
        here, then moved by the requeue_failed script if still in the store.

        Returns how many were queued, and how many stay in the store because
        they have no queue to go to (a payload that cannot be read); every
        other one has left the store.
        """
        k = self._keys
        with refused_clearly():
            records = self._redis.hmget(k.failed_jobs, list(job_ids))
        now = self.now()
        moves = [
            _requeued(job_id, record, now)
            for job_id, record in zip(job_ids, records)
            if record is not None
        ]
        strays = [job_id for job_id, record in zip(job_ids, records) if record is None]
        if strays:
            # Purged meanwhile, or an index entry without its record (a hand edit,
            # an evicting maxmemory-policy): either way no longer a failed job.
            with refused_clearly():
                self._redis.zrem(k.failed_index, *strays)
        stay = sum(not queue for _, queue, _, _ in moves)
        moves = [move for move in moves if move[1]]
        if not moves:
            return 0, stay
        queues = list(dict.fromkeys(queue for _, queue, _, _ in moves))
        number = {queue: i for i, queue in enumerate(queues, 1)}
        keys = [k.failed_jobs, k.failed_index, k.payloads, k.seq, k.queues]
        keys += [k.ready(queue) for queue in queues]
        args: list[Any] = [k.channel, len(queues), *queues]
        for job_id, queue, task_name, payload in moves:
            args += [job_id, number[queue], task_name, payload]
        return int(self._run("requeue_failed", keys, args)), stay

    def purge_failed(
        self, job_ids: Collection[str] | None = None, *, failed_before: float | None = None
    ) -> int:
        keys = [self._keys.failed_jobs, self._keys.failed_index]
        if job_ids is not None:
            ids = list(job_ids)
            return sum(
                int(self._run("purge_failed", keys, ["ids", *ids[i : i + _FAILED_CHUNK]]))
                for i in range(0, len(ids), _FAILED_CHUNK)
            )
        if failed_before is None:
            # Every job there when the call starts, not those failing meanwhile.
            failed_before = math.nextafter(self._now(), math.inf)
        args = ["before", repr(failed_before), _FAILED_CHUNK]
        total = 0
        while True:
            removed = int(self._run("purge_failed", keys, args))
            total += removed
            if removed < _FAILED_CHUNK:
                return total


def _started(record: str) -> datetime | None:
    """When a running record says its job was handed out (see lua/include/running_record.lua)."""
    parts = record.split(" ", 2)
    if len(parts) == 3:
        try:
            return datetime.fromtimestamp(float(parts[1]), tz=timezone.utc)
        except (ValueError, OverflowError):
            pass
    return None


def _requeued(job_id: str, record: Any, now: datetime) -> tuple[str, str, str, bytes | str]:
    """(id, queue, task name, payload) to queue a failed job again: its payload with
    retries at 0 and ``at`` now; one that cannot be read goes back as it is, to the
    queue its payload still names ("" when none: it stays in the store)."""
    _, payload = split_record(record)
    try:
        job = unpack(job_id, payload)
    except ValueError:
        task_name, queue = salvage(payload)
        return job_id, queue, task_name, payload
    job.retries, job.at = 0, now
    return job_id, job.queue, job.task_name, pack(job)
