"""Fixtures for engine and worker tests on the MemoryBroker."""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import attrs
import pytest

from spinach import Engine, MemoryBroker, signals
from spinach.brokers.memory import MemoryStore
from spinach.clock import ManualClock
from spinach.job import Job
from spinach.testing import wait_for

SIGNALS = [
    signals.job_started,
    signals.job_schedule_retry,
    signals.job_failed,
    signals.job_finished,
]


@attrs.frozen
class Event:
    signal: str
    job_id: uuid.UUID
    retries: int
    err: BaseException | None


class Recorder:
    """Records the job signals sent for one namespace, in order."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self.events: list[Event] = []
        self.lock = threading.Lock()
        self._receivers: list[tuple[Any, Callable[..., None]]] = []
        for signal in SIGNALS:
            receiver = self._receiver(signal.name)
            signal.connect(receiver, sender=namespace, weak=False)
            self._receivers.append((signal, receiver))

    def _receiver(self, name: str) -> Callable[..., None]:
        def receive(sender: str, job: Job, err: BaseException | None = None) -> None:
            with self.lock:
                self.events.append(Event(name, job.id, job.retries, err))

        return receive

    def of(self, job_id: uuid.UUID) -> list[str]:
        with self.lock:
            return [e.signal for e in self.events if e.job_id == job_id]

    def named(self, name: str) -> list[Event]:
        with self.lock:
            return [e for e in self.events if e.signal == name]

    def close(self) -> None:
        for signal, receiver in self._receivers:
            signal.disconnect(receiver, sender=self.namespace)


@pytest.fixture
def namespace() -> str:
    return f"test-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def store() -> MemoryStore:
    return MemoryStore()


@pytest.fixture
def broker(clock: ManualClock, store: MemoryStore) -> MemoryBroker:
    return MemoryBroker(clock, store=store)


@pytest.fixture
def engine(broker: MemoryBroker, namespace: str) -> Iterator[Engine]:
    engine = Engine(broker, namespace, heartbeat_interval=0.05, dead_worker_timeout=10)
    yield engine
    engine.stop_workers()


@pytest.fixture
def recorder(namespace: str) -> Iterator[Recorder]:
    recorder = Recorder(namespace)
    yield recorder
    recorder.close()


def all_done(broker: MemoryBroker) -> bool:
    """Whether ``broker`` holds no queued, future or running job."""
    counts = broker.count_jobs()
    return not counts.queued and not counts.future and not counts.running


def advance(clock: ManualClock, broker: MemoryBroker, seconds: float) -> None:
    clock.advance(seconds)
    broker.wake_up()


def advance_beating(clock: ManualClock, broker: MemoryBroker, seconds: float) -> None:
    """Advance the clock in steps that the engine of ``broker`` heartbeats through on
    schedule, as a live engine does: its heartbeats are its evidence to adopt jobs."""
    workers = broker.store.namespace(broker.namespace).workers
    for _ in range(int(seconds // 2)):
        advance(clock, broker, 2)
        # Broker times have microsecond precision.
        wait_for(lambda: workers.get(broker.worker_id, 0.0) >= clock.time() - 1e-3)
    advance(clock, broker, seconds % 2)


@contextlib.contextmanager
def threads_switching_all_the_time() -> Iterator[None]:
    """Threads switch every bytecode or so inside, without the garbage collector:
    objects of earlier tests collected meanwhile would run their finalizers (or
    weakref callbacks) in the threads under test, where an interrupt may land
    and be swallowed, as the docs say."""
    interval = sys.getswitchinterval()
    gc.collect()
    gc.disable()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(interval)
        gc.enable()
