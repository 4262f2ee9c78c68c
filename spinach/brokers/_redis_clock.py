"""The Redis server's clock, as seen from this host."""

from __future__ import annotations

import logging
import time

import redis as redis_py
from typing_extensions import override

from ..clock import Clock

__all__ = ["ServerClock"]

logger = logging.getLogger("spinach.brokers.redis")

#: Seconds between two measures of the offset between this host's clock and Redis'.
_CLOCK_SYNC_INTERVAL = 30.0


class ServerClock(Clock):
    """This host's clock corrected by its offset to the Redis server's clock.

    On a Redis Cluster it reads the clock of the client's default node: the
    nodes of a cluster are expected to keep their clocks in sync (NTP).
    """

    def __init__(self, local: Clock, client: redis_py.Redis | redis_py.RedisCluster) -> None:
        self._local = local
        self._client = client
        self._offset = 0.0
        self._synced_at: float | None = None

    @override
    def time(self) -> float:
        if self._synced_at is None or time.monotonic() - self._synced_at > _CLOCK_SYNC_INTERVAL:
            self.sync()
        return self._local.time() + self._offset

    def sync(self) -> None:
        """Measure the offset again (one round trip); keep the last one if Redis is out of reach."""
        self._synced_at = time.monotonic()
        try:
            before = self._local.time()
            seconds, microseconds = self._client.time()
            after = self._local.time()
        except redis_py.RedisError as e:
            logger.warning("Could not read the Redis server's clock (%s); using the last offset", e)
            return
        self._offset = seconds + microseconds / 1e6 - (before + after) / 2
