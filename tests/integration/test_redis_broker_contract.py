"""The broker contract, bound to the RedisBroker on a real redis-server."""

from __future__ import annotations

import pytest
import redis

from spinach.brokers.base import Broker
from spinach.brokers.redis import RedisBroker
from spinach.clock import ManualClock
from spinach.testing.contract import BrokerContract, MakeBroker


class TestRedisBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, clock: ManualClock, redis_client: redis.Redis) -> MakeBroker:
        def make(namespace: str) -> Broker:
            broker = RedisBroker(redis_client, clock=clock, sync_clock=False)
            broker.namespace = namespace
            return broker

        return make
