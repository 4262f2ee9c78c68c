"""The Datadog integration with the real ddtrace tracer, on the MemoryBroker with real workers.

Finished traces go through a ``TraceFilter`` that records their spans and drops
them, so that none reaches the trace writer (and no agent is needed).
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Callable

import pytest

from spinach import AsyncioWorkers, Engine, MemoryBroker
from spinach.clock import ManualClock
from spinach.contrib.datadog import register_datadog
from spinach.job import Job

with warnings.catch_warnings():
    # ddtrace warns on import under Python 3.9, whose support it deprecates.
    warnings.filterwarnings(
        "ignore", message="Support for ddtrace with Python version", category=DeprecationWarning
    )
    from ddtrace.trace import Span, TraceFilter, Tracer, tracer

pytestmark = pytest.mark.usefixtures("no_receiver_errors")


class SpanRecorder(TraceFilter):
    """Keeps the spans of every finished trace, and drops the trace."""

    def __init__(self) -> None:
        self.spans: list[Span] = []
        self.lock = threading.Lock()

    def process_trace(self, trace: list[Span]) -> list[Span] | None:
        with self.lock:
            self.spans.extend(trace)
        return None

    def named(self, name: str) -> list[Span]:
        with self.lock:
            return [s for s in self.spans if s.name == name]

    def by_job_id(self) -> dict[str, Span]:
        return {str(s.get_tag("spinach.job_id")): s for s in self.named("spinach.task")}


@pytest.fixture
def recorder() -> Iterator[SpanRecorder]:
    recorder = SpanRecorder()
    tracer.configure(trace_processors=[recorder])
    yield recorder
    tracer.configure(trace_processors=[])


Register = Callable[..., Callable[[], None]]


@pytest.fixture
def register() -> Iterator[Register]:
    """register_datadog, with every registration undone after the test."""
    disconnects: list[Callable[[], None]] = []

    def register(
        tracer: Tracer | None = tracer, namespace: str | None = None, service: str = "spinach"
    ) -> Callable[[], None]:
        disconnect = register_datadog(tracer, namespace=namespace, service=service)
        disconnects.append(disconnect)
        return disconnect

    yield register
    for disconnect in disconnects:
        disconnect()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def broker(clock: ManualClock) -> MemoryBroker:
    return MemoryBroker(clock)


@pytest.fixture
def make_engine(clock: ManualClock) -> Iterator[Callable[..., Engine]]:
    """Build engines, each with a namespace and (unless given) a broker of its own."""
    engines: list[Engine] = []

    def make(broker: MemoryBroker | None = None) -> Engine:
        engine = Engine(
            MemoryBroker(clock) if broker is None else broker,
            f"test-{uuid.uuid4().hex[:8]}",
            heartbeat_interval=0.05,
            dead_worker_timeout=10,
        )
        engines.append(engine)
        return engine

    yield make
    for engine in engines:
        engine.stop_workers()


@pytest.fixture
def engine(make_engine: Callable[..., Engine], broker: MemoryBroker) -> Engine:
    return make_engine(broker)


def test_one_span_per_job(recorder: SpanRecorder, register: Register, engine: Engine) -> None:
    """Each job run is one root span, named after Spinach, with the task as resource and tags."""
    register(service="jobs")

    @engine.task(name="add")
    def add(a: int, b: int) -> int:
        with tracer.trace("inner"):
            return a + b

    @engine.task(name="noop", max_retries=2)
    def noop() -> None:
        pass

    jobs = [engine.schedule(add, 1, 2), engine.schedule(add, 3, 4), engine.schedule(noop)]
    engine.start_workers(number=2, stop_when_queue_empty=True)
    spans = recorder.by_job_id()
    assert set(spans) == {str(job.id) for job in jobs}
    for job in jobs:
        span = spans[str(job.id)]
        assert (span.service, span.resource, span.span_type) == ("jobs", job.task_name, "worker")
        assert span.parent_id is None
        assert span.error == 0
        assert span.get_tag("spinach.queue") == job.queue
        assert span.get_tag("spinach.namespace") == engine.namespace
        assert span.get_tag("spinach.status") == "SUCCEEDED"
        assert span.get_metric("spinach.retries") == 0
        assert span.get_metric("spinach.max_retries") == job.max_retries
    assert len({s.trace_id for s in spans.values()}) == 3
    inner = recorder.named("inner")
    assert {s.parent_id for s in inner} == {spans[str(job.id)].span_id for job in jobs[:2]}


def test_failed_job_span_has_the_error(
    recorder: SpanRecorder, register: Register, engine: Engine
) -> None:
    """The span of a run that raised carries the exception type, message and traceback."""
    register()

    @engine.task(name="boom")
    def boom() -> None:
        raise ValueError("it broke")

    engine.schedule(boom)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    [span] = recorder.named("spinach.task")
    assert span.error == 1
    assert span.get_tag("error.type") == "builtins.ValueError"
    assert span.get_tag("error.message") == "it broke"
    stack = span.get_tag("error.stack")
    assert stack is not None
    assert "in boom" in stack
    assert "ValueError: it broke" in stack
    assert span.get_tag("spinach.status") == "FAILED"


def test_retried_runs_have_the_error(
    recorder: SpanRecorder, register: Register, engine: Engine, clock: ManualClock
) -> None:
    """A run that will be retried is marked with its error too, and each run has its span."""
    register()

    @engine.task(name="flaky", max_retries=1)
    def flaky() -> None:
        raise ValueError("flaky")

    engine.schedule(flaky)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    clock.advance(3600)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    spans = recorder.named("spinach.task")
    assert [(s.error, s.get_tag("error.type")) for s in spans] == [(1, "builtins.ValueError")] * 2
    assert [s.get_metric("spinach.retries") for s in spans] == [0, 1]
    assert [s.get_tag("spinach.status") for s in spans] == ["WAITING", "FAILED"]


def test_job_that_could_not_run_gets_an_error_span(
    recorder: SpanRecorder,
    register: Register,
    engine: Engine,
    broker: MemoryBroker,
    clock: ManualClock,
) -> None:
    """A job the engine failed without running it (unknown task) gets a span with the error."""
    register()
    job = Job("nobody-registered-this", "spinach", clock.now(), max_retries=0)
    broker.enqueue_jobs([job])
    engine.start_workers(number=1, stop_when_queue_empty=True)
    [span] = recorder.named("spinach.task")
    assert span.resource == "nobody-registered-this"
    assert span.get_tag("spinach.job_id") == str(job.id)
    assert span.error == 1
    assert span.get_tag("error.type") == "spinach.exc.UnknownTask"
    assert "nobody-registered-this" in str(span.get_tag("error.message"))


def test_namespace_filter_and_default_tracer(
    recorder: SpanRecorder, register: Register, make_engine: Callable[..., Engine]
) -> None:
    """With a namespace, only that engine's jobs are traced, by ddtrace's global tracer."""
    traced, other = make_engine(), make_engine()
    register(tracer=None, namespace=traced.namespace)
    for engine in (traced, other):

        @engine.task(name="noop")
        def noop() -> None:
            pass

        engine.schedule(noop)
        engine.start_workers(number=1, stop_when_queue_empty=True)
    [span] = recorder.named("spinach.task")
    assert span.get_tag("spinach.namespace") == traced.namespace


def test_disconnect_stops_tracing(
    recorder: SpanRecorder, register: Register, engine: Engine
) -> None:
    """Once the function register_datadog returned is called, jobs are not traced anymore."""
    disconnect = register()

    @engine.task(name="noop")
    def noop() -> None:
        pass

    engine.schedule(noop)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    disconnect()
    engine.schedule(noop)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    assert len(recorder.named("spinach.task")) == 1


def test_concurrent_asyncio_jobs_get_separate_spans(
    recorder: SpanRecorder, register: Register, engine: Engine
) -> None:
    """Two async jobs running at once on one thread get a span each, parent of their own work."""
    register()
    started: list[int] = []

    @engine.task(name="overlap")
    async def overlap(i: int) -> None:
        started.append(i)
        deadline = time.monotonic() + 10
        # Both jobs are in flight at once before either traces anything.
        while len(started) < 2:
            assert time.monotonic() < deadline, "the other job never started"
            await asyncio.sleep(0.001)
        with tracer.trace("inner", resource=str(i)):
            await asyncio.sleep(0)
        if i == 1:
            raise ValueError("second one fails")

    jobs = [engine.schedule(overlap, i) for i in range(2)]
    engine.start_workers(number=2, workers_class=AsyncioWorkers, stop_when_queue_empty=True)
    spans = [recorder.by_job_id()[str(job.id)] for job in jobs]
    assert [s.error for s in spans] == [0, 1]
    assert spans[0].trace_id != spans[1].trace_id
    inner = {s.resource: s for s in recorder.named("inner")}
    for i, span in enumerate(spans):
        assert inner[str(i)].parent_id == span.span_id
        assert inner[str(i)].trace_id == span.trace_id
