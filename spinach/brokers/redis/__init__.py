"""The Redis broker: each atomic operation is one Lua script of ``lua/``.

The package holds the broker (:mod:`.broker`) and what only it uses: its
errors (:mod:`.errors`), the key layout of a namespace (:mod:`.keys`, shared
with ``spinach doctor``), the stored form of a job (:mod:`.payload`), the
script loader (:mod:`.scripts`), the clients built from URLs (:mod:`.url`),
the server clock (:mod:`.clock`) and the notification listener
(:mod:`.listener`).
"""

from __future__ import annotations

from .broker import RedisBroker, RedisClient

__all__ = ["RedisBroker", "RedisClient"]
