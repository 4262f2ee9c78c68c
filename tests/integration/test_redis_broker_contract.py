"""The broker contract, bound to the RedisBroker on a real redis-server."""

from __future__ import annotations

from datetime import timedelta

import pytest
import redis
import redis.asyncio

from spinach.brokers.base import Broker
from spinach.brokers.redis import RedisBroker
from spinach.brokers.redis.keys import Keys
from spinach.clock import ManualClock
from spinach.job import Job
from spinach.testing.contract import BrokerContract, MakeBroker


class TestRedisBroker(BrokerContract):
    @pytest.fixture
    def make_broker(
        self, clock: ManualClock, redis_client: redis.Redis, redis_url: str
    ) -> MakeBroker:
        decode = redis_client.get_encoder().decode_responses

        def make(namespace: str) -> Broker:
            broker = RedisBroker(
                redis_client,
                clock=clock,
                sync_clock=False,
                async_redis=lambda: redis.asyncio.Redis.from_url(
                    redis_url, decode_responses=decode
                ),
            )
            broker.namespace = namespace
            return broker

        return make


def test_the_activity_hash_stays_small(redis_client: redis.Redis, namespace: str) -> None:
    """Five hours of a job a minute keep at most 240 fields (past that, the
    fields over an hour old go), and the last hour intact."""
    clock = ManualClock(1_790_000_040.0)
    broker = RedisBroker(redis_client, clock=clock, sync_clock=False)
    broker.namespace = namespace
    try:
        sizes = []
        for _ in range(300):
            broker.enqueue_jobs([Job("task", "q", clock.now(), 0)])
            assert len(broker.get_jobs_from_queue("q", 1)) == 1
            sizes.append(redis_client.hlen(Keys.of(namespace).activity))
            clock.advance(60)
        assert max(sizes) == 240
        assert sizes[240] == 61  # trimmed to the last hour and the current minute
        assert [m.started for m in broker.job_activity(60)] == [1] * 59 + [0]
    finally:
        broker.flush()


def test_future_jobs_stored_without_counts_are_still_counted(
    redis_client: redis.Redis, namespace: str
) -> None:
    """Future jobs an older Spinach stored (in the future set, not in its counts)
    are found by inspect reading the set itself."""
    clock = ManualClock(1_790_000_000.0)
    broker = RedisBroker(redis_client, clock=clock, sync_clock=False)
    broker.namespace = namespace
    keys = Keys.of(namespace)
    try:
        later = clock.now() + timedelta(minutes=5)
        broker.enqueue_jobs([Job("task", "a", later, 0), Job("task", "b", later, 0)])
        redis_client.hdel(keys.future_counts, "a")  # as if an older Spinach had stored it
        assert {q: s.future for q, s in broker.inspect().queues.items()} == {"a": 1, "b": 1}
        clock.advance(301)
        broker.move_future_jobs()
        assert redis_client.exists(keys.future_counts) == 0
        assert {q: s.ready for q, s in broker.inspect().queues.items()} == {"a": 1, "b": 1}
    finally:
        broker.flush()
