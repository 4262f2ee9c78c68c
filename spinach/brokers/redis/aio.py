"""The ``redis.asyncio`` clients of a RedisBroker's asyncio side, one per event loop.

A ``redis.asyncio`` connection belongs to the event loop it was opened in, so
each loop that calls the broker gets a client of its own, made on its first
call. Clients of loops that have since closed are forgotten.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any, Callable

from redis.commands.core import AsyncScript

from .errors import refused_clearly
from .scripts import read_script

if TYPE_CHECKING:
    from typing_extensions import TypeAlias

    from .clock import AsyncRedisClient

    #: A loop's client, and its scripts by name.
    _Made: TypeAlias = tuple[AsyncRedisClient, dict[str, AsyncScript]]

__all__ = ["AsyncClients"]


class AsyncClients:
    """The client made by ``factory`` for each running event loop, with the
    scripts ``names`` registered on it."""

    def __init__(self, factory: Callable[[], AsyncRedisClient], names: Iterable[str]) -> None:
        self._factory = factory
        self._names = tuple(names)
        self._lock = threading.Lock()  # loops may run in several threads
        self._by_loop: dict[asyncio.AbstractEventLoop, _Made] = {}

    def _of_this_loop(self) -> _Made:
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._by_loop.get(loop)
            if made is None:
                # A closed loop's connections can no longer be used, nor closed.
                for old in [old for old in self._by_loop if old.is_closed()]:
                    del self._by_loop[old]
                client = self._factory()
                scripts = {name: client.register_script(read_script(name)) for name in self._names}
                made = self._by_loop[loop] = (client, scripts)
            return made

    def client(self) -> AsyncRedisClient:
        """The client of the running loop."""
        return self._of_this_loop()[0]

    async def run(self, script: str, keys: Sequence[str | bytes], args: Sequence[Any]) -> Any:
        """Run ``script`` with the running loop's client.

        Raises:
            redis.ConnectionError: also when a cluster client reaches no node
                (it learns the cluster's nodes on its first command, in each loop).
        """
        run = self._of_this_loop()[1][script]
        with refused_clearly():
            return await run(keys=keys, args=args)

    async def close(self) -> None:
        """Close the running loop's client, if it has one."""
        loop = asyncio.get_running_loop()
        with self._lock:
            made = self._by_loop.pop(loop, None)
        if made is not None:
            await made[0].aclose()
