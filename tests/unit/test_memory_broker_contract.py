"""The broker contract, bound to the MemoryBroker."""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Any

import pytest

from spinach.brokers.base import Broker
from spinach.brokers.memory import MemoryBroker, MemoryStore
from spinach.clock import ManualClock
from spinach.testing.contract import AsyncVariantsContract, BrokerContract, MakeBroker


class TestMemoryBroker(BrokerContract):
    @pytest.fixture
    def make_broker(self, clock: ManualClock) -> MakeBroker:
        store = MemoryStore()

        def make(namespace: str) -> Broker:
            broker = MemoryBroker(clock, store=store)
            broker.namespace = namespace
            return broker

        return make


class _ThreadedAsyncMemoryBroker(MemoryBroker):
    """A MemoryBroker whose asyncio variants are the Broker defaults, as a broker
    written without them has: each runs the blocking operation in a thread."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.threads: set[str] = set()

    def now(self) -> datetime:
        self.threads.add(threading.current_thread().name)
        return super().now()

    now_async = Broker.now_async
    enqueue_jobs_async = Broker.enqueue_jobs_async
    get_job_async = Broker.get_job_async


class TestBrokerDefaultsOfTheAsyncVariants(AsyncVariantsContract):
    @pytest.fixture
    def make_broker(self, clock: ManualClock) -> MakeBroker:
        store = MemoryStore()

        def make(namespace: str) -> Broker:
            broker = _ThreadedAsyncMemoryBroker(clock, store=store)
            broker.namespace = namespace
            return broker

        return make

    def test_the_blocking_calls_run_in_a_thread(self, broker: Broker) -> None:
        assert isinstance(broker, _ThreadedAsyncMemoryBroker)
        self.run(broker, broker.now_async)
        assert threading.current_thread().name not in broker.threads
        assert broker.threads
