"""Redis pub/sub notifications that wake up an idle engine."""

from __future__ import annotations

import logging
import random
import threading
from typing import Callable

import redis as redis_py

from ..._backoff import backoff

__all__ = ["Listener"]

logger = logging.getLogger("spinach.brokers.redis")


class Listener:
    """A thread calling ``on_message`` with each message of a channel (its data,
    bytes or str), reconnecting after errors.

    It also calls ``on_message(None)`` once each (re)subscription is confirmed,
    since messages may have been missed while it was not subscribed.

    On a Redis Cluster, a PUBLISH reaches the subscribers of every node, so the
    listener subscribes on the node of the channel's slot first, and on a node
    picked at random after a failure: it depends on no single node.
    """

    def __init__(
        self,
        client: redis_py.Redis | redis_py.RedisCluster,
        channel: str,
        on_message: Callable[[bytes | str | None], None],
    ) -> None:
        self._client = client
        self._channel = channel
        self._on_message = on_message
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, name: str) -> None:
        self._thread = threading.Thread(target=self._listen, name=name, daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()

    def _listen(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            pubsub = self._pubsub(failures)
            try:
                pubsub.subscribe(self._channel)
                while not self._stopping.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is None:
                        pass
                    elif message["type"] == "subscribe":
                        # Subscribed from now on: what happened before may be missed.
                        self._on_message(None)
                    elif message["type"] == "message":
                        self._on_message(message["data"])
                    failures = 0
            except redis_py.RedisError as e:
                failures += 1
                wait = backoff(failures, base=0.2, cap=30.0)
                logger.warning("Lost the Redis notifications (%s); reconnecting in %.1f s", e, wait)
                self._stopping.wait(wait)
            finally:
                pubsub.close()

    def _pubsub(self, failures: int) -> redis_py.client.PubSub:
        if isinstance(self._client, redis_py.RedisCluster) and failures:
            # redis-py leaves get_nodes() and pubsub() unannotated.
            node = random.choice(self._client.get_nodes())  # type: ignore[no-untyped-call,unused-ignore]
            return self._client.pubsub(node=node)  # type: ignore[no-untyped-call,no-any-return,unused-ignore]
        return self._client.pubsub()  # type: ignore[no-untyped-call,no-any-return,unused-ignore]
