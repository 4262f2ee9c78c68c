"""The broker contract, bound to the MemoryBroker."""

from __future__ import annotations

import pytest

from spinach.brokers.base import Broker
from spinach.brokers.memory import MemoryBroker, MemoryStore
from spinach.clock import ManualClock
from spinach.testing.contract import BrokerContract, MakeBroker


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, clock: ManualClock) -> MakeBroker:
        store = MemoryStore()

        def make(namespace: str) -> Broker:
            broker = MemoryBroker(clock, store=store)
            broker.namespace = namespace
            return broker

        return make
