"""The Redis broker: each atomic operation is one Lua script of ``lua/``.

Every key of a namespace carries the hash tag ``{namespace}``, so that a
namespace lives in one Redis Cluster slot: on a cluster, every script of a
namespace runs on the node serving that slot. Payloads are stored and handed
back byte for byte; scripts never decode or re-encode them. The layout of the
keys is described in ``docs/redis.md``; clusters and Sentinel in
``docs/scaling.md``.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Callable, Union, cast

import redis as redis_py
from redis.commands.core import Script
from redis.exceptions import RedisClusterException
from typing_extensions import override

from ..._backoff import backoff
from ..._ended import keeps_record, outcome_of
from ...clock import Clock, SystemClock
from ...const import DEFAULT_ENQUEUE_JOB_RETRIES
from ...exc import ConfigurationError
from ...job import Job, JobInfo, JobStatus
from ..base import (
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
    runs_again,
)
from .aio import AsyncClients
from .clock import ServerClock
from .direct import evalsha
from .errors import (
    ENQUEUE_WINDOW,
    full,
    is_full,
    refused_clearly,
    too_late,
    translated,
    unreachable,
)
from .keys import Keys
from .listener import Listener
from .payload import pack, salvage, unpack
from .records import JobRecords, _text
from .scripts import read_script
from .steps import Call, Pause, Resync, Step, Steps, drive, drive_async
from .url import CLIENT_DEFAULTS, async_client_from_url, client_from_url
from .waits import WAIT_SECONDS, Wait, Waiter, can_block

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

    from ...task import Task
    from .clock import AsyncRedisClient

#: The clients a RedisBroker accepts: a plain (or Sentinel) client, or a cluster client.
RedisClient: TypeAlias = Union[redis_py.Redis, redis_py.RedisCluster]

__all__ = ["RedisBroker"]

logger = logging.getLogger(__name__)

_SCRIPTS = (
    "enqueue_jobs",
    "get_jobs_from_queue",
    "record_outcomes",
    "move_future_jobs",
    "register_periodic_tasks",
    "set_concurrency_limits",
    "set_rate_limits",
    "heartbeat",
    "adopt_jobs_of_dead_workers",
    "requeue_lost_handouts",
    "wait_for_jobs",
    "get_job",
    "failed_jobs",
    "requeue_failed",
    "purge_failed",
    "cancel_job",
    "inspect",
    "job_activity",
)
#: Seconds a marker is kept: a little longer than the window of its call.
_ENQUEUE_MARKER_SECONDS = ENQUEUE_WINDOW + 5
#: The states of the record_outcomes script's digits.
_STATES = {str(int(state)): state for state in RunningJobState}
#: The status a job had when cancel_job cancelled it, by the script's number.
_CANCELLED_FROM = {1: JobStatus.WAITING, 2: JobStatus.QUEUED, 3: JobStatus.RUNNING}
#: Most bytes of jobs packed in one argument of the enqueue_jobs script.
_PART_BYTES = 64 * 1024 * 1024
#: Tries of a script whose queue list turned out stale before giving up for this round.
_QUEUE_REFRESHES = 3
#: The scripts of the operations that asyncio code calls (see Broker.enqueue_jobs_async).
_ASYNC_SCRIPTS = ("enqueue_jobs", "get_job")


@functools.lru_cache(maxsize=1024)
def _utf8(text: str) -> bytes:
    return text.encode()


#: How the record_outcomes script takes each job: ended keeping nothing, ended
#: keeping a record, to run again; in that order.
_DONE, _KEPT, _AGAIN = 0, 1, 2


def _outcome_kinds(jobs: Sequence[Job], again: Sequence[bool]) -> list[int]:
    kinds = []
    for job, a in zip(jobs, again):
        if a:
            kinds.append(_AGAIN)
        elif job.result_json is None and job.status is not JobStatus.FAILED:
            kinds.append(_DONE)  # what most jobs are, decided without a call
        else:
            kinds.append(_KEPT if keeps_record(job) else _DONE)
    return kinds


def _merge_states(kinds: Sequence[int], reply: bytes | str) -> list[RunningJobState]:
    """The states of the record_outcomes script (one digit per job, by kind) in
    the order of ``kinds``."""
    states = [_STATES[digit] for digit in _text(reply)]
    counts = [kinds.count(kind) for kind in (_DONE, _KEPT)]
    by_kind = [
        iter(states[: counts[0]]),
        iter(states[counts[0] : counts[0] + counts[1]]),
        iter(states[counts[0] + counts[1] :]),
    ]
    return [next(by_kind[kind]) for kind in kinds]


class RedisBroker(JobRecords, Broker):
    """A broker storing jobs in Redis.

    Args:
        redis: a redis-py client, decoding responses or not: a
            :class:`redis.Redis` (also the one of
            ``redis.sentinel.Sentinel.master_for``) or a
            :class:`redis.cluster.RedisCluster`; by default one connected to
            localhost:6379 with keepalive and timeouts.
        enqueue_job_max_retries: how many times scheduling retries when Redis
            cannot be reached, before raising :class:`BrokerConnectionError`.
        clock: this host's clock; the system clock by default.
        sync_clock: decide times on the Redis server's clock (this host's
            clock corrected by its measured offset). Turn it off only to
            drive time with a manual clock in tests.
        async_redis: makes a ``redis.asyncio`` client of the same server
            (``redis.asyncio.Redis`` or ``RedisCluster``), called once per
            event loop that schedules jobs or reads them (``schedule_async``,
            ``get_result_async``...). Without it those calls run the blocking
            ones in a thread; :meth:`from_url`, and a broker made without
            ``redis``, make it themselves.
    """

    def __init__(
        self,
        redis: RedisClient | None = None,
        enqueue_job_max_retries: int = DEFAULT_ENQUEUE_JOB_RETRIES,
        *,
        clock: Clock | None = None,
        sync_clock: bool = True,
        async_redis: Callable[[], AsyncRedisClient] | None = None,
    ) -> None:
        if redis is None:
            redis = redis_py.Redis(host="localhost", port=6379, **CLIENT_DEFAULTS)
            if async_redis is None:
                async_redis = functools.partial(
                    async_client_from_url, "redis://localhost:6379", **CLIENT_DEFAULTS
                )
        local = clock if clock is not None else SystemClock()
        super().__init__(ServerClock(local, redis) if sync_clock else local)
        # Heartbeats take the time of the Redis server itself, unless a test
        # drives time with a clock of its own.
        self._heartbeat_time = "" if sync_clock else None
        self._redis = redis
        self._enqueue_job_max_retries = enqueue_job_max_retries
        self._scripts: dict[str, Script] = {
            name: redis.register_script(read_script(name)) for name in _SCRIPTS
        }
        self._shas = {name: script.sha for name, script in self._scripts.items()}
        self._calls = itertools.count(1)
        self._queues: list[str] | None = None
        # (queue, token prefix, False) of fetches whose reply was lost, (queue,
        # token prefix, True) of waits for jobs given up (their jobs go back the
        # same way, but were not lost), and token prefixes of adoptions whose
        # reply was lost: repaired on the next call.
        self._lost_fetches: list[tuple[str, str, bool]] = []
        self._lost_adoptions: list[str] = []
        self._keys_cache: Keys | None = None
        # The keys of get_jobs_from_queue for each queue, with the Keys they come from.
        self._fetch_keys_made: dict[str, tuple[Keys, list[bytes]]] = {}
        # The keys of every enqueue_jobs call, but the marker and the queues',
        # for the namespace of the Keys they come with.
        self._enqueue_keys: tuple[Keys, list[bytes], list[bytes]] | None = None
        # The listeners of the engine's events, and of job ends (for get_result).
        self._listeners: dict[str, Listener] = {}
        self._listener_lock = threading.Lock()
        self._async = None if async_redis is None else AsyncClients(async_redis, _ASYNC_SCRIPTS)
        # Waits for jobs (see wait_for_jobs), when the client can block for them.
        self._waiter = Waiter(redis) if can_block(redis) else None

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        enqueue_job_max_retries: int = DEFAULT_ENQUEUE_JOB_RETRIES,
        clock: Clock | None = None,
        sync_clock: bool = True,
        **redis_kwargs: Any,
    ) -> RedisBroker:
        """A broker for a ``redis://`` or ``rediss://`` (TLS) URL, with user,
        password and database as the URL gives them (``unix://`` for a socket).

        ``redis+cluster://host:port`` (``rediss+cluster://`` for TLS) connects
        to a Redis Cluster through that node, which serves to discover the others.

        ``redis+sentinel://host1:26379,host2:26379/service[/db]``
        (``rediss+sentinel://`` for TLS) connects to the master that these
        sentinels monitor under that service name, following failovers; the
        URL's password is the master's, ``?sentinel_password=...`` the
        sentinels'. The forms are described in ``docs/scaling.md``.

        Raises:
            ConfigurationError: the URL has none of these forms, or is malformed.
        """
        kwargs = {**CLIENT_DEFAULTS, **redis_kwargs}
        client = client_from_url(url, **kwargs)
        return cls(
            client,
            enqueue_job_max_retries=enqueue_job_max_retries,
            clock=clock,
            sync_clock=sync_clock,
            async_redis=functools.partial(async_client_from_url, url, **kwargs),
        )

    @property
    def redis(self) -> redis_py.Redis:
        """The redis-py client of this broker (a ``RedisCluster`` on a cluster)."""
        # Typed as a plain client, as it was before clusters: the commands most
        # callers run are there on a RedisCluster too.
        return cast(redis_py.Redis, self._redis)

    @override
    def _check_namespace(self, namespace: str) -> None:
        Keys.of(namespace)

    @property
    def _keys(self) -> Keys:
        keys = self._keys_cache
        if keys is None or keys.namespace != self.namespace:
            keys = self._keys_cache = Keys.of(self.namespace)
        return keys

    def _now(self) -> float:
        # Through a datetime, so that it compares exactly with job times.
        return self.now().timestamp()

    def _run(self, script: str, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        # EVALSHA itself, not through redis-py's Script object, which costs more
        # than a microsecond per call; it loads the script when Redis lacks it.
        try:
            return evalsha(self._redis, self._shas[script], keys, args)
        except redis_py.exceptions.NoScriptError:
            with refused_clearly():
                return self._scripts[script](keys=keys, args=args)
        except (redis_py.ConnectionError, RedisClusterException) as e:
            better = translated(e)
            if better is None:
                raise
            raise better from e

    def _token_prefix(self) -> str:
        return f"{self.worker_id}:{next(self._calls)}:"

    def _known_queues(self, refresh: bool) -> list[str]:
        if refresh or self._queues is None:
            with refused_clearly():
                members = self._redis.smembers(self._keys.queues)
            self._queues = sorted(_text(q) for q in members)
        return self._queues

    def _run_on_all_queues(
        self, script: str, keys: list[str], head: list[Any], tail: list[Any], kinds: Sequence[str]
    ) -> Any:
        """Run a script that needs the keys of every queue, refreshing a stale queue list.

        Its arguments are ``head``, the number of queues, their names, then ``tail``;
        None means the queue list kept changing.
        """
        k = self._keys
        for attempt in range(_QUEUE_REFRESHES):
            queues = self._known_queues(refresh=attempt > 0)
            queue_keys = [getattr(k, kind)(q) for q in queues for kind in kinds]
            result = self._run(script, keys + queue_keys, [*head, len(queues), *queues, *tail])
            if result not in (-1, [-1]):
                return result
        return None

    # -- atomic operations ----------------------------------------------------

    def _queues_of(self, jobs: Sequence[Job]) -> tuple[list[str], dict[str, int], list[str]]:
        """The queues of ``jobs`` in order, their numbers (from 1), and the ready
        list of each, the keys that the scripts storing jobs take."""
        queues = list(dict.fromkeys(job.queue for job in jobs))
        keys = [self._keys.ready(queue) for queue in queues]
        return queues, {queue: i for i, queue in enumerate(queues, 1)}, keys

    def _enqueue_arguments(
        self, jobs: Sequence[Job], call_id: str
    ) -> tuple[list[bytes], list[bytes]]:
        """The keys and arguments of the enqueue_jobs script storing ``jobs``.

        All bytes: redis-py sends bytes as they are, where it checks and
        encodes every other argument (some 0.4 µs each, and a call has 15 or more).
        """
        k = self._keys
        fixed = self._enqueue_keys
        if fixed is None or fixed[0] is not k:
            fixed = self._enqueue_keys = (
                k,
                [_utf8(k.payloads), _utf8(k.seq), _utf8(k.queues)],
                [_utf8(k.future), _utf8(k.unique), _utf8(k.running), _utf8(k.future_counts)],
            )
        # Each queue's number (from 1) in this call, in the order first met.
        numbers: dict[str, int] = {}
        at_most_once = False
        # Jobs packed in parts of at most _PART_BYTES (and whole jobs): Redis
        # refuses an argument over proto-max-bulk-len (512 MB by default).
        parts: list[bytes] = []
        packed: list[bytes] = []
        size = 0
        for job in jobs:
            queue_number = numbers.setdefault(job.queue, len(numbers) + 1)
            at_most_once = at_most_once or job.max_retries == 0
            name, payload = _utf8(job.task_name), pack(job)
            unique = "" if job.unique_key is None else f" {job.unique_key}"
            header = (
                f"{job.id_text}{queue_number} {job.at.timestamp()!r} {len(name)} "
                f"{len(payload)}{unique}\n"
            ).encode()
            job_size = len(header) + len(name) + len(payload)
            if packed and size + job_size > _PART_BYTES:
                parts.append(b"".join(packed))
                packed, size = [], 0
            packed += [header, name, payload]
            size += job_size
        parts.append(b"".join(packed))
        queues = [_utf8(queue) for queue in numbers]
        keys = [
            *fixed[1],
            k.enqueue_marker(call_id).encode(),  # one per call: not cached
            *fixed[2],
            *[_utf8(k.ready(queue)) for queue in numbers],
        ]
        # At-most-once jobs must not be stored again by a call sent twice after
        # their first run: such calls leave a marker for a while.
        marker_seconds = _ENQUEUE_MARKER_SECONDS if at_most_once else 0
        # A late run is told apart on the server's clock, which a test clock is not.
        late_after = ENQUEUE_WINDOW if isinstance(self._clock, ServerClock) else ""
        # The time last, once the jobs are packed: a call's window starts here.
        # Read without measuring the clock offset: the steps of enqueue_jobs do
        # that, blocking or not, before they get here.
        head = f"{self._read_now()!r}\n{marker_seconds}\n{late_after}\n{len(queues)}\n{k.prefix}"
        return keys, [head.encode(), _utf8(k.channel), *queues, *parts]

    @override
    def enqueue_jobs(self, jobs: Sequence[Job]) -> None:
        if jobs:
            drive(self._enqueue_steps(jobs), self._carry_out)

    @override
    async def enqueue_jobs_async(self, jobs: Sequence[Job]) -> None:
        if self._async is None:
            await super().enqueue_jobs_async(jobs)
        elif jobs:
            await drive_async(self._enqueue_steps(jobs), self._carry_out_async)

    def _enqueue_steps(self, jobs: Sequence[Job]) -> Steps[None]:
        """Storing ``jobs``, as steps (see :mod:`.steps`) that a blocking or an
        asyncio caller carries out."""
        if self._clock_due():
            yield Resync()
        call_id = os.urandom(16).hex()  # a uuid4's randomness, for less
        keys, args = self._enqueue_arguments(jobs, call_id)
        # Only a call leaving a marker has a window (see ENQUEUE_WINDOW).
        windowed = isinstance(self._clock, ServerClock) and any(j.max_retries == 0 for j in jobs)
        first_try = time.monotonic()
        resynced = False
        for attempt in itertools.count():
            try:
                reply = yield Call(keys, args)
                if isinstance(reply, list):
                    # Unique jobs not stored: each takes the id of the job holding its key.
                    for i in range(1, len(reply), 2):
                        jobs[int(reply[i]) - 1].id = uuid.UUID(_text(reply[i + 1]))
                    return
                if reply != -1:
                    return
                # Refused as late on the first try, well within its window by this
                # host's clock: the clock offset was off, and nothing was stored. So
                # measure it again and send the same call (same marker). Not after a
                # lost reply: an earlier run may have stored the jobs, and its
                # marker, counted from the bad time, may be gone.
                if resynced or attempt > 0 or time.monotonic() - first_try >= ENQUEUE_WINDOW:
                    raise too_late(jobs, "Redis ran it")
                yield Resync()
                resynced = True
                keys, args = self._enqueue_arguments(jobs, call_id)
            except redis_py.ResponseError as e:
                if not is_full(e):
                    raise
                raise full(jobs) from e
            except (redis_py.ConnectionError, redis_py.TimeoutError) as e:
                if attempt >= self._enqueue_job_max_retries:
                    raise unreachable(jobs, attempt + 1, e) from e
                wait = backoff(attempt, base=0.2, cap=10.0)
                if windowed and time.monotonic() + wait - first_try > ENQUEUE_WINDOW:
                    raise too_late(jobs, "it could be sent again") from e
                logger.warning(
                    "Redis unreachable while scheduling (%s), retrying in %.2f s", e, wait
                )
                yield Pause(wait)

    def _clock_due(self) -> bool:
        return isinstance(self._clock, ServerClock) and self._clock.due()

    def _unmeasured_now(self) -> datetime:
        """:meth:`now`, but a server clock is read with the offset it has, even
        when due to be measured again: no round trip to Redis."""
        if isinstance(self._clock, ServerClock):
            return datetime.fromtimestamp(self._clock.read(), tz=timezone.utc)
        return self.now()

    def _read_now(self) -> float:
        """:meth:`_now` without measuring the clock offset (see :meth:`_unmeasured_now`)."""
        return self._unmeasured_now().timestamp()

    def _carry_out(self, step: Step) -> Any:
        if isinstance(step, Call):
            return self._run("enqueue_jobs", step.keys, step.args)
        if isinstance(step, Pause):
            time.sleep(step.seconds)
        elif isinstance(self._clock, ServerClock):
            self._clock.sync()
        return None

    async def _carry_out_async(self, step: Step) -> Any:
        assert self._async is not None
        if isinstance(step, Call):
            return await self._async.run("enqueue_jobs", step.keys, step.args)
        if isinstance(step, Pause):
            await asyncio.sleep(step.seconds)
        elif isinstance(self._clock, ServerClock):
            await self._clock.sync_async(self._async.client())
        return None

    @override
    async def now_async(self) -> datetime:
        if self._async is None:
            return await super().now_async()
        if self._clock_due():
            assert isinstance(self._clock, ServerClock)
            await self._clock.sync_async(self._async.client())
        return self._unmeasured_now()

    @override
    async def get_job_async(self, job_id: str) -> JobInfo | None:
        if self._async is None:
            return await super().get_job_async(job_id)
        keys, args = self._get_job_call(job_id)
        reply = await self._async.run("get_job", keys, args)
        now = await self.now_async()
        return self._job_info(job_id, reply, lambda: now)

    @override
    async def close_async(self) -> None:
        if self._async is not None:
            await self._async.close()

    @override
    def get_jobs_from_queue(self, queue: str, max_jobs: int) -> list[Job]:
        if max_jobs <= 0:
            return []
        prefix, of_wait = self._fetch_prefix(queue)
        jobs: list[Job] = []
        # The token prefix of each call, from before the first: a wait's
        # jobs are put back should anything fail.
        prefixes = [prefix]
        try:
            self._requeue_lost_handouts()
            keys = self._fetch_keys(queue)
            while True:
                reply = self._run(
                    "get_jobs_from_queue",
                    keys,
                    self._fetch_args(max_jobs - len(jobs), prefix, of_wait and len(prefixes) == 1),
                )
                jobs += self._jobs_of(queue, prefix, reply)
                # 1: stopped at its parking budget; 2: the wait's prefix is not
                # to be used (see the script): call again, with a new one.
                if int(reply[0]) == 0 or len(jobs) >= max_jobs:
                    return jobs
                prefix = self._token_prefix()
                prefixes.append(prefix)
        except Exception:
            # The jobs handed out by this call (even a call whose reply was lost)
            # are running under this worker, known to no one: put them back.
            self._lost_fetches += [(queue, p, False) for p in prefixes]
            raise

    def _fetch_keys(self, queue: str) -> list[bytes]:
        """The keys of the get_jobs_from_queue script for ``queue``, as bytes (see
        :meth:`_enqueue_arguments`), made once per queue and namespace."""
        k = self._keys
        made = self._fetch_keys_made.get(queue)
        if made is None or made[0] is not k:
            keys = [
                k.ready(queue),
                k.parked(queue),
                k.payloads,
                k.running,
                k.limits,
                k.in_flight,
                k.failed,
                k.calls,
                k.cancelled(queue),
                k.unique,
                k.rate_limits,
                k.rate_wake,
                k.activity,
            ]
            made = self._fetch_keys_made[queue] = (k, [key.encode() for key in keys])
        return made[1]

    def _fetch_args(self, max_jobs: int, token_prefix: str, of_wait: bool = False) -> list[bytes]:
        return [
            b"%d" % max_jobs,
            token_prefix.encode(),
            repr(self._now()).encode(),
            _utf8(self._keys.prefix),
            b"w" if of_wait else b"",
        ]

    @override
    def record_outcomes_and_get_jobs(
        self, jobs: Sequence[Job], queue: str, max_jobs: int
    ) -> tuple[list[RunningJobState], list[Job]]:
        if not jobs or max_jobs <= 0 or isinstance(self._redis, redis_py.RedisCluster):
            # A cluster pipeline cannot route scripts: two calls.
            return super().record_outcomes_and_get_jobs(jobs, queue, max_jobs)
        prefix, of_wait = self._fetch_prefix(queue)
        try:
            self._requeue_lost_handouts()
            kinds = _outcome_kinds(jobs, [runs_again(job) for job in jobs])
            record_keys, record_args = self._record_arguments(jobs, kinds)
            fetch_keys = self._fetch_keys(queue)
            fetch_args = self._fetch_args(max_jobs, prefix, of_wait)
        except Exception:
            # The jobs handed out to the wait, if any, go back.
            self._lost_fetches.append((queue, prefix, False))
            raise
        # Both scripts in one round trip. A script the server lost (a restart
        # without persistence) did not run: it runs again the usual way, which loads it.
        pipe = self._redis.pipeline(transaction=False)
        for script, keys, args in (
            ("record_outcomes", record_keys, record_args),
            ("get_jobs_from_queue", fetch_keys, fetch_args),
        ):
            pipe.evalsha(self._scripts[script].sha, len(keys), *keys, *args)
        try:
            with refused_clearly():
                recorded, fetched = pipe.execute(raise_on_error=False)
            if isinstance(fetched, redis_py.exceptions.NoScriptError):
                fetched = self._run("get_jobs_from_queue", fetch_keys, fetch_args)
            if isinstance(fetched, Exception):
                raise fetched
            if isinstance(recorded, redis_py.exceptions.NoScriptError):
                recorded = self._run("record_outcomes", record_keys, record_args)
            if isinstance(recorded, Exception):
                raise recorded
            handed = self._jobs_of(queue, prefix, fetched)
        except Exception:
            # Jobs handed out by the fetch, if it ran, are known to no one: put them back.
            self._lost_fetches.append((queue, prefix, False))
            raise
        if int(fetched[0]) != 0 and len(handed) < max_jobs:
            # Stopped at its parking budget, or to be called with a new token
            # prefix: the usual fetch goes on.
            try:
                handed += self.get_jobs_from_queue(queue, max_jobs - len(handed))
            except Exception:
                self._lost_fetches.append((queue, prefix, False))
                raise
        return _merge_states(kinds, recorded), handed

    def _fetch_prefix(self, queue: str) -> tuple[str, bool]:
        """The token prefix of the next fetch of ``queue``, and whether it is
        that of the last wait for its jobs: then the fetch returns the jobs
        handed out to the wait (see wait_for_jobs), if any. A last wait on
        another queue is given up: its jobs, if any, go back (see
        _requeue_lost_handouts)."""
        waiter = self._waiter
        if waiter is not None:
            pending = waiter.pending
            if pending is not None and pending.queue != queue:
                self._give_up_wait()
            prefix = waiter.settle(queue)
            if prefix is not None:
                return prefix, True
        return self._token_prefix(), False

    def _give_up_wait(self) -> None:
        """Have the jobs handed out to the pending wait, if any, put back."""
        wait = None if self._waiter is None else self._waiter.give_up()
        if wait is not None:
            self._lost_fetches.append((wait.queue, wait.prefix, True))

    @override
    def wait_for_jobs(self, queue: str, max_jobs: int, timeout: float) -> list[Job]:
        waiter = self._waiter
        if (
            waiter is None
            or waiter.refused
            or max_jobs <= 0
            or timeout <= 0
            or waiter.pending is not None
        ):
            # A pending wait's jobs are asked for by the next fetch, first.
            return super().wait_for_jobs(queue, max_jobs, timeout)
        if self._something_happened.is_set():
            self._something_happened.clear()
            return []
        k = self._keys
        waiter.inbox = k.inbox(self.worker_id)
        wait = Wait(queue, self._token_prefix(), max_jobs)
        stale = waiter.stale
        waiter.stale = None
        now = self._now()
        # Pending from here: a call whose reply is lost may have registered it.
        waiter.pending = wait
        registered = self._run(
            "wait_for_jobs",
            [k.ready(queue), k.waiting(queue), k.calls, waiter.inbox],
            [
                wait.prefix,
                wait.max_jobs,
                repr(now),
                # Over later than the block ends: jobs handed out between the
                # block's end and the next fetch come with that fetch.
                repr(now + WAIT_SECONDS),
                stale.member if stale is not None and stale.queue == queue else "",
            ],
        )
        if not int(registered):
            # Jobs are in line: fetch them.
            waiter.pending = None
            return []
        waiter.begin_block()
        try:
            if self._something_happened.is_set():
                reply = None
            else:
                reply = self._redis.blpop([waiter.inbox], timeout=min(timeout, WAIT_SECONDS))
        except (redis_py.ConnectionError, redis_py.TimeoutError) as e:
            # The next fetch asks for what the wait was handed, if anything.
            logger.warning("Lost the connection while waiting for jobs: %s", e)
            reply = None
        except redis_py.exceptions.NoPermissionError as e:
            waiter.refused = True
            logger.warning(
                "Redis refused BLPOP (%s): idle workers wait for notifications, and fetch, "
                "instead of having jobs handed to them; allow the command to the user "
                "(+blpop, see docs/production.md)",
                e,
            )
            reply = None
        except redis_py.ResponseError as e:
            # READONLY after a failover, BUSY, ...: the next fetch says it again.
            logger.warning("Redis refused the wait for jobs: %s", e)
            reply = None
        finally:
            waiter.end_block()
        self._something_happened.clear()
        entry = b"" if reply is None else reply[1]
        if isinstance(entry, str):  # a client decoding responses
            entry = entry.encode()
        head = wait.prefix.encode() + b"\n"
        if not entry.startswith(head):
            # A wake-up or the end of the wait: the jobs handed out to it
            # meanwhile, if any, are the next fetch's.
            return []
        rest = entry[len(head) :]
        jobs = self._jobs_of(queue, wait.prefix, [rest[:1], rest[1:]])
        # Only now: should reading them fail, the next fetch asks for them again.
        waiter.pending = None
        return jobs

    @override
    def wake_up(self) -> None:
        super().wake_up()
        if self._waiter is not None:
            self._waiter.wake()

    def _requeue_lost_handouts(self) -> None:
        k = self._keys
        while self._lost_fetches:
            queue, prefix, given_up = self._lost_fetches[0]
            count = self._run(
                "requeue_lost_handouts",
                [k.running, k.in_flight, k.ready(queue), k.calls],
                [prefix],
            )
            self._lost_fetches.pop(0)
            if given_up:
                if count:
                    logger.info("Put back %d job(s) handed out to a wait given up", count)
            elif count:
                logger.warning("Put back %d job(s) of a fetch whose reply was lost", count)

    def _jobs_of(self, queue: str, prefix: str, reply: list[Any]) -> list[Job]:
        """The jobs of a fetch's reply, logging the entries that were not jobs."""
        for entry in reply[2:]:
            logger.error(
                "Entry %r of queue %r is not a Spinach job; moved to %s",
                _text(entry),
                queue,
                self._keys.failed,
            )
        packed = reply[1]
        if isinstance(packed, str):  # a client decoding responses: back to the bytes Lua counted
            packed = packed.encode()
        jobs = []
        start, handed = 0, 0
        while start < len(packed):
            colon = packed.index(b":", start + 36)
            end = colon + 1 + int(packed[start + 36 : colon])
            handed += 1
            job_id = packed[start : start + 36].decode()
            job = self._job_from(job_id, f"{prefix}{handed}", packed[colon + 1 : end])
            if job is not None:
                job.queue = job.queue or queue  # a stand-in whose queue could not be read
                jobs.append(job)
            start = end
        return jobs

    def _job_from(self, job_id: str, token: str, payload: Any) -> Job | None:
        """The job of a payload handed out under ``token``; for a payload that
        cannot be read, a stand-in (see :meth:`Job.could_not_read`)."""
        try:
            job = unpack(job_id, payload)
        except ValueError as e:
            unreadable = self._set_aside(job_id, token, payload, e)
            if unreadable is None:
                return None
            job = unreadable
        job.status = JobStatus.RUNNING
        job.handout_token = token
        return job

    def _set_aside(self, job_id: str, token: str, payload: Any, error: ValueError) -> Job | None:
        """The stand-in that the engine fails for an unreadable payload (which
        goes to the failed store as it is); None when even the id is not a
        job's: then the payload is copied to the failed list, and removed."""
        task_name, queue = salvage(payload)
        try:
            why = f"{error}; its payload goes to the failed store as it is"
            return Job.could_not_read(job_id, why, self.now(), task_name, queue)
        except ValueError:
            pass
        failed = self._keys.failed
        try:
            self._redis.rpush(failed, payload)
            kept = f"its payload was copied to {failed}"
        except redis_py.RedisError as e:
            kept = f"its payload could not be copied aside ({e})"
        logger.error("Entry %r is not a Spinach job (%s); %s", job_id, error, kept)
        keys, args = self._record_arguments([], [])
        args[-2:] = [1, job_id, token, 0]  # one job ending, keeping nothing
        self._run("record_outcomes", keys, args)
        return None

    def _record_arguments(
        self, jobs: Sequence[Job], kinds: Sequence[int]
    ) -> tuple[list[str], list[Any]]:
        """The keys and arguments of the record_outcomes script recording ``jobs``,
        each of the kind given (see :func:`_outcome_kinds`)."""
        k = self._keys
        done: list[Any] = []
        kept: list[Job] = []
        again: list[Job] = []
        for job, kind in zip(jobs, kinds):
            if kind == _DONE:
                done += (job.id_text, job.handout_token or "")
            elif kind == _KEPT:
                kept.append(job)
            else:
                again.append(job)
        queues, number, queue_keys = self._queues_of(again)
        keys = [k.running, k.payloads, k.in_flight, k.seq, k.queues, k.future]
        keys += [k.failed_jobs, k.failed_index, k.failed_dropped, k.activity, k.future_counts]
        keys += queue_keys
        max_failed = "" if self.max_failed is None else self.max_failed
        args: list[Any] = [self._now(), k.channel, k.ended_channel, max_failed]
        args += [len(queues), *queues]
        args += [len(done) // 2, *done, len(kept)]
        for job in kept:
            keep_ms = 0
            if job.status is not JobStatus.FAILED:
                keep_ms = max(1, round((job.keep_result or 0.0) * 1000))
                keys.append(k.result(str(job.id)))
            args += [str(job.id), job.handout_token or "", keep_ms, outcome_of(job)]
        for job in again:
            args += [
                str(job.id),
                job.handout_token or "",
                number[job.queue],
                job.at.timestamp(),
                job.task_name,
                pack(job),
            ]
        return keys, args

    @override
    def _record_outcomes(self, jobs: Sequence[Job], again: Sequence[bool]) -> list[RunningJobState]:
        if not jobs:
            return []
        kinds = _outcome_kinds(jobs, again)
        keys, args = self._record_arguments(jobs, kinds)
        return _merge_states(kinds, self._run("record_outcomes", keys, args))

    @override
    def move_future_jobs(self) -> float | None:
        k = self._keys
        keys = [k.payloads, k.seq, k.periodic, k.periodic_next, k.queues, k.future]
        keys += [k.failed, k.rate_wake, k.future_counts]
        result = self._run(
            "move_future_jobs", keys, [self._now(), k.channel, self.namespace, k.prefix]
        )
        for problem in result[1:]:
            logger.error("Moving future jobs: %s", _text(problem))
        delay = _text(result[0])
        return float(delay) if delay else None

    @override
    def register_periodic_tasks(self, tasks: Collection[Task]) -> None:
        k = self._keys
        args: list[Any] = [self._now()]
        for task in tasks:
            period = 0.0 if task.periodicity is None else task.periodicity.total_seconds()
            args += [task.name, period, task.queue, task.max_retries]
        self._run("register_periodic_tasks", [k.periodic, k.periodic_next, k.queues], args)
        self._queues = None

    @override
    def set_concurrency_limits(self, tasks: Collection[Task]) -> None:
        k = self._keys
        limits: list[Any] = []
        for task in tasks:
            limits += [task.name, task.max_concurrency or 0]
        result = self._run_on_all_queues(
            "set_concurrency_limits",
            [k.limits, k.in_flight, k.running, k.queues, k.rate_limits],
            [],
            limits,
            ("ready", "parked"),
        )
        if result is None:
            raise ConfigurationError(
                "Could not set the concurrency limits: queues kept being created meanwhile; "
                "start the workers again"
            )

    @override
    def set_rate_limits(self, tasks: Collection[Task]) -> None:
        k = self._keys
        limits: list[Any] = []
        for task in tasks:
            rate = task.rate_limit
            limits += [task.name, "" if rate is None else f"{rate[0]} {rate[1].total_seconds()!r}"]
        result = self._run_on_all_queues(
            "set_rate_limits",
            [k.rate_limits, k.limits, k.queues, k.rate_wake],
            [k.prefix],
            limits,
            ("ready", "parked"),
        )
        if result is None:
            raise ConfigurationError(
                "Could not set the rate limits: queues kept being created meanwhile; "
                "start the workers again"
            )

    @override
    def heartbeat(self, held: Collection[Job] = ()) -> Heartbeat:
        k = self._keys
        now = self._now() if self._heartbeat_time is None else self._heartbeat_time
        args: list[Any] = [self.worker_id, now, describe_this_process()]
        for job in held:
            args += [str(job.id), job.handout_token or ""]
        reply = self._run("heartbeat", [k.workers, k.running, k.workers_info], args)
        lost = {_text(job_id) for job_id in reply[1:]}
        return Heartbeat(float(reply[0]), tuple(job for job in held if str(job.id) in lost))

    @override
    def deregister_worker(self) -> None:
        # Jobs handed out to the last wait after it ended go back in line.
        self._give_up_wait()
        self._requeue_lost_handouts()
        # Not a MULTI: a full Redis (noeviction) refuses every command queued in
        # one, while it runs these removals one by one.
        pipe = self._redis.pipeline(transaction=False)
        pipe.zrem(self._keys.workers, self.worker_id)
        pipe.hdel(self._keys.calls, self.worker_id)
        pipe.hdel(self._keys.workers_info, self.worker_id)
        if self._waiter is not None:
            stale, self._waiter.stale = self._waiter.stale, None
            if stale is not None:
                pipe.zrem(self._keys.waiting(stale.queue), stale.member)
            pipe.delete(self._keys.inbox(self.worker_id))
        pipe.execute()

    @override
    def adopt_jobs_of_dead_workers(self, silent_since: float) -> list[Job]:
        k = self._keys
        prefix = self._token_prefix()
        try:
            flat = self._run(
                "adopt_jobs_of_dead_workers",
                [k.workers, k.running, k.payloads, k.calls, k.workers_info],
                [repr(silent_since), self.worker_id, prefix, *self._lost_adoptions],
            )
        except (redis_py.ConnectionError, redis_py.TimeoutError):
            # Jobs adopted in a lost reply are adopted again by the next call.
            self._lost_adoptions.append(prefix)
            raise
        self._lost_adoptions.clear()
        jobs = []
        for i in range(0, len(flat), 3):
            job = self._job_from(_text(flat[i + 1]), _text(flat[i]), flat[i + 2])
            if job is not None:
                jobs.append(job)
        return jobs

    @override
    def cancel_job(self, job_id: str, outcome: str, keep: float) -> Job | None:
        k = self._keys
        keys = [k.payloads, k.running, k.in_flight, k.future, k.unique, k.result(job_id)]
        keys.append(k.future_counts)
        args = [job_id, outcome, max(1, round(keep * 1000)), k.channel, k.ended_channel, k.prefix]
        reply = self._run("cancel_job", keys, args)
        if reply is None:
            return None
        status, payload = reply
        try:
            job = unpack(job_id, payload)
        except ValueError:
            task_name, queue = salvage(payload)
            job = Job.could_not_read(job_id, "", self.now(), task_name, queue)
        job.status = _CANCELLED_FROM[int(status)]
        return job

    @override
    def is_queue_empty(self, queue: str) -> bool:
        k = self._keys
        pipe = self._redis.pipeline(transaction=False)
        pipe.llen(k.ready(queue))
        pipe.zcard(k.parked(queue))
        pipe.scard(k.cancelled(queue))
        ready, parked, cancelled = pipe.execute()
        return bool(ready + parked <= cancelled)

    @override
    def count_jobs(self) -> JobCounts:
        k = self._keys
        queues = self._known_queues(refresh=True)

        def read(transaction: bool) -> list[Any]:
            pipe = self._redis.pipeline(transaction=transaction)
            for queue in queues:
                pipe.llen(k.ready(queue))
                pipe.zcard(k.parked(queue))
                pipe.scard(k.cancelled(queue))
            pipe.zcard(k.future)
            pipe.hlen(k.running)
            pipe.zcard(k.failed_index)
            pipe.get(k.failed_dropped)
            return pipe.execute()

        try:
            replies = read(transaction=True)  # one snapshot
        except (redis_py.exceptions.OutOfMemoryError, redis_py.exceptions.ExecAbortError):
            # A full Redis (noeviction) refuses every command of a MULTI, reads
            # included: the counts are read one after the other then.
            replies = read(transaction=False)
        *counts, future, running, failed, dropped = replies
        # Cancelled jobs whose entries are still in line (see lua/cancel_job.lua) are not counted.
        queued = {
            q: max(0, counts[3 * i] + counts[3 * i + 1] - counts[3 * i + 2])
            for i, q in enumerate(queues)
        }
        return JobCounts(
            queued={q: n for q, n in queued.items() if n},
            future=future,
            running=running,
            failed=failed,
            failed_dropped=int(dropped or 0),
        )

    @override
    def inspect(self) -> Inspection:
        k = self._keys
        keys = [k.queues, k.future, k.running, k.payloads, k.workers, k.workers_info]
        keys += [k.failed_index, k.failed_dropped, k.future_counts]
        queues, workers, failed, dropped = self._run("inspect", keys, [k.prefix])
        states = {
            _text(queues[i]): QueueState(*(int(n) for n in queues[i + 1 : i + 5]))
            for i in range(0, len(queues), 5)
        }
        told = [
            WorkerState.told(
                _text(workers[i]), _text(workers[i + 2]), int(workers[i + 3]), float(workers[i + 1])
            )
            for i in range(0, len(workers), 4)
        ]
        return Inspection(
            queues=states,
            workers=tuple(sorted(told, key=lambda w: -w.last_heartbeat)),
            failed=int(failed),
            failed_dropped=int(dropped),
        )

    @override
    def job_activity(self, minutes: int = ACTIVITY_MINUTES) -> list[MinuteActivity]:
        check_activity_minutes(minutes)
        reply = self._run("job_activity", [self._keys.activity], [self._now(), minutes])
        first = int(reply[0]) - minutes + 1
        return [
            MinuteActivity(float((first + i) * 60), int(reply[1 + 2 * i]), int(reply[2 + 2 * i]))
            for i in range(minutes)
        ]

    @override
    def flush(self) -> None:
        k = self._keys
        queues = self._known_queues(refresh=True)
        per_queue = [key for q in queues for key in (k.ready(q), k.parked(q), k.cancelled(q))]
        self._redis.delete(
            k.payloads,
            k.seq,
            k.queues,
            k.running,
            k.limits,
            k.in_flight,
            k.rate_limits,
            k.rate_wake,
            k.failed,
            k.periodic,
            k.periodic_next,
            k.future,
            k.workers,
            k.workers_info,
            k.activity,
            k.future_counts,
            k.calls,
            k.failed_jobs,
            k.failed_index,
            k.failed_dropped,
            k.unique,
            *per_queue,
        )
        # Kept results (one key per job), rate logs (one per task), waits (one
        # per queue waited on, which may hold no job) and inboxes (one per
        # worker) are found by their prefix.
        for head in (k.result(""), k.rate_log(""), k.waiting(""), k.inbox("")):
            batch: list[Any] = []
            for key in self._redis.scan_iter(match=_glob_escape(head) + "*", count=1000):
                batch.append(key)
                if len(batch) == 1000:
                    self._redis.delete(*batch)
                    batch = []
            if batch:
                self._redis.delete(*batch)
        self._queues = None

    def close(self) -> None:
        """Stop listening for notifications and close the client's connections."""
        self._stop_listening("notifications", "job-ends")
        if self._waiter is not None:
            self._waiter.stop()
        if isinstance(self._redis, redis_py.RedisCluster):
            # redis-py's RedisCluster.close() leaves its nodes' pooled sockets open.
            self._redis.disconnect_connection_pools()  # type: ignore[no-untyped-call]
        self._redis.close()

    # -- notifications ----------------------------------------------------------

    @override
    def start(self) -> None:
        if isinstance(self._clock, ServerClock):
            self._clock.sync()
        self._start_listener("notifications", self._keys.channel, self._on_event)

    @override
    def _listen_for_outcomes(self) -> None:
        self._start_listener("job-ends", self._keys.ended_channel, self._on_ended)

    def _start_listener(
        self, kind: str, channel: str, on_message: Callable[[bytes | str | None], None]
    ) -> None:
        with self._listener_lock:
            listener = self._listeners.get(kind)
            if listener is None or not listener.running:
                listener = self._listeners[kind] = Listener(self._redis, channel, on_message)
                listener.start(name=f"{self.namespace}-{kind}")

    def _on_event(self, data: bytes | str | None) -> None:
        self.wake_up()
        if data is not None:
            text = _text(data)
            if text.startswith("cancel "):
                self._jobs_cancelled([text[7:]])

    def _on_ended(self, data: bytes | str | None) -> None:
        # None: (re)subscribed, ends may have been missed meanwhile.
        self._jobs_ended(None if data is None else _text(data).split(","))

    @override
    def stop(self) -> None:
        self._stop_listening("notifications")
        if self._waiter is not None:
            self._waiter.stop()
        # A get_result waiting meanwhile keeps hearing of job ends until close().
        if not self._watching():
            self._stop_listening("job-ends")

    def _stop_listening(self, *kinds: str) -> None:
        with self._listener_lock:
            stopping = [self._listeners.pop(kind, None) for kind in kinds]
        for listener in stopping:
            if listener is not None:
                listener.stop()


def _glob_escape(text: str) -> str:
    """``text`` matched literally by a Redis glob pattern."""
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
