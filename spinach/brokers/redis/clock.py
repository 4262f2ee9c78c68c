"""The Redis server's clock, as seen from this host."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Union

import redis as redis_py
from redis.exceptions import RedisClusterException
from typing_extensions import override

from ...clock import Clock

if TYPE_CHECKING:
    import redis.asyncio as redis_asyncio
    from typing_extensions import TypeAlias

    #: The ``redis.asyncio`` clients of the asyncio side of a RedisBroker.
    AsyncRedisClient: TypeAlias = Union[redis_asyncio.Redis, redis_asyncio.RedisCluster]

__all__ = ["ServerClock"]

logger = logging.getLogger("spinach.brokers.redis")

#: Seconds between two measures of the offset between this host's clock and Redis'.
_CLOCK_SYNC_INTERVAL = 30.0
#: Longest round trip of a measure that is kept: a longer one (Redis, or this
#: process, stalled meanwhile) could put the offset off by half of it.
_MAX_ROUND_TRIP = 0.5
#: Seconds before measuring again after a measure was not kept.
_RETRY_AFTER = 1.0


class ServerClock(Clock):
    """This host's clock corrected by its offset to the Redis server's clock.

    On a Redis Cluster it reads the clock of the client's default node: the
    nodes of a cluster are expected to keep their clocks in sync (NTP).
    """

    def __init__(self, local: Clock, client: redis_py.Redis | redis_py.RedisCluster) -> None:
        self._local = local
        self._client = client
        self._offset = 0.0
        self._measured = False
        self._synced_at: float | None = None

    @override
    def time(self) -> float:
        if self.due():
            self.sync()
        return self.read()

    def read(self) -> float:
        """The time by the last offset measured, measuring nothing (see :meth:`due`)."""
        return self._local.time() + self._offset

    def due(self) -> bool:
        """Whether the offset is to be measured again before the next reading."""
        return self._synced_at is None or time.monotonic() - self._synced_at > _CLOCK_SYNC_INTERVAL

    def sync(self) -> bool:
        """Measure the offset again (one round trip); keep the last one if Redis
        is out of reach, or if the round trip took too long to measure well.

        Returns whether the offset was measured.
        """
        started = self._synced_at = time.monotonic()
        try:
            before = self._local.time()
            server_time = self._client.time()
            after = self._local.time()
        except (redis_py.RedisError, RedisClusterException) as e:
            # A cluster client raises RedisClusterException when it reaches no node.
            return self._unread(e)
        return self._measured_by(started, before, server_time, after)

    async def sync_async(self, client: AsyncRedisClient) -> bool:
        """:meth:`sync` for asyncio code, through ``client`` (a ``redis.asyncio``
        client of the same server)."""
        started = self._synced_at = time.monotonic()
        try:
            before = self._local.time()
            server_time = await client.time()
            after = self._local.time()
        except (redis_py.RedisError, RedisClusterException) as e:
            # An asyncio cluster client learns its nodes on its first command,
            # and raises RedisClusterException when it reaches none.
            return self._unread(e)
        return self._measured_by(started, before, server_time, after)

    def _unread(self, error: Exception) -> bool:
        logger.warning("Could not read the Redis server's clock (%s); using the last offset", error)
        return False

    def _measured_by(
        self, started: float, before: float, server_time: tuple[int, int], after: float
    ) -> bool:
        """Keep the offset that a reading of the server's clock (TIME's reply,
        between ``before`` and ``after`` on this host's clock) gives, unless
        the round trip begun at ``started`` (time.monotonic()) took too long."""
        round_trip = time.monotonic() - started
        if round_trip > _MAX_ROUND_TRIP and self._measured:
            logger.info(
                "Reading the Redis server's clock took %.1f s; keeping the last offset", round_trip
            )
            self._synced_at = started - _CLOCK_SYNC_INTERVAL + _RETRY_AFTER
            return False
        seconds, microseconds = server_time
        self._offset = seconds + microseconds / 1e6 - (before + after) / 2
        self._measured = True
        return True
