"""The Sentry integration with the real sentry-sdk, on the MemoryBroker with real workers."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any, Callable

import pytest
import sentry_sdk
from sentry_sdk.envelope import Envelope
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.logging import LoggingIntegration
from sentry_sdk.transport import Transport

from spinach import AsyncioWorkers, Engine, MemoryBroker
from spinach.clock import ManualClock
from spinach.contrib import sentry_sdk_spinach
from spinach.contrib.sentry_sdk_spinach import SpinachIntegration
from spinach.job import Job

#: Never contacted: the recording transport replaces the HTTP one.
DSN = "https://public@sentry.example/1"

pytestmark = pytest.mark.usefixtures("no_receiver_errors")


class RecordingTransport(Transport):
    """Keeps the envelopes the client sends, instead of sending them."""

    def __init__(self) -> None:
        super().__init__()
        self.envelopes: list[Envelope] = []
        self.lock = threading.Lock()

    def capture_envelope(self, envelope: Envelope) -> None:
        with self.lock:
            self.envelopes.append(envelope)

    def transactions(self) -> list[dict[str, Any]]:
        with self.lock:
            found = [e.get_transaction_event() for e in self.envelopes]
        return [dict(t) for t in found if t is not None]

    def errors(self) -> list[dict[str, Any]]:
        with self.lock:
            found = [e.get_event() for e in self.envelopes]
        return [dict(e) for e in found if e is not None]


SentryInit = Callable[..., RecordingTransport]


@pytest.fixture
def init_sentry() -> Iterator[SentryInit]:
    """Initialise sentry-sdk with a recording transport; reset it afterwards."""

    def init(*integrations: Integration, **options: Any) -> RecordingTransport:
        sentry_sdk.get_client().close()
        transport = RecordingTransport()
        sentry_sdk.init(
            dsn=DSN,
            transport=transport,
            traces_sample_rate=1.0,
            default_integrations=False,
            integrations=list(integrations),
            **options,
        )
        return transport

    yield init
    sentry_sdk.get_client().close()
    sentry_sdk.get_global_scope().set_client(None)
    assert not sentry_sdk_spinach._runs, "a job run was left open"


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def broker(clock: ManualClock) -> MemoryBroker:
    return MemoryBroker(clock)


@pytest.fixture
def engine(broker: MemoryBroker) -> Iterator[Engine]:
    engine = Engine(
        broker, f"test-{uuid.uuid4().hex[:8]}", heartbeat_interval=0.05, dead_worker_timeout=10
    )
    yield engine
    engine.stop_workers()


def by_job_id(events: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["tags"]["spinach.job_id"]: e for e in events}


def exception_type(event: dict[str, Any]) -> str:
    return str(event["exception"]["values"][-1]["type"])


def test_one_transaction_per_job(init_sentry: SentryInit, engine: Engine) -> None:
    """Each job run is one transaction named after its task, with status ok."""
    transport = init_sentry(SpinachIntegration())

    @engine.task(name="add")
    def add(a: int, b: int) -> int:
        return a + b

    @engine.task(name="noop")
    def noop() -> None:
        pass

    jobs = [engine.schedule(add, 1, 2), engine.schedule(add, 3, 4), engine.schedule(noop)]
    engine.start_workers(number=2, stop_when_queue_empty=True)
    transactions = by_job_id(transport.transactions())
    assert set(transactions) == {str(job.id) for job in jobs}
    for job in jobs:
        transaction = transactions[str(job.id)]
        assert transaction["transaction"] == job.task_name
        assert transaction["transaction_info"] == {"source": "task"}
        trace = transaction["contexts"]["trace"]
        assert (trace["op"], trace["status"]) == ("queue.task.spinach", "ok")
        assert transaction["tags"]["spinach.queue"] == job.queue
        assert transaction["tags"]["spinach.namespace"] == engine.namespace
    assert len({t["contexts"]["trace"]["trace_id"] for t in transactions.values()}) == 3
    assert transport.errors() == []


def test_failed_job_is_captured_in_its_transaction(init_sentry: SentryInit, engine: Engine) -> None:
    """A job failing for good sends its exception, tagged and in the trace of its transaction."""
    transport = init_sentry(SpinachIntegration())

    @engine.task(name="boom")
    def boom() -> None:
        raise ValueError("boom")

    job = engine.schedule(boom)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    [transaction] = transport.transactions()
    [error] = transport.errors()
    assert transaction["contexts"]["trace"]["status"] == "internal_error"
    assert exception_type(error) == "ValueError"
    assert error["exception"]["values"][-1]["mechanism"] == {"type": "spinach", "handled": False}
    assert error["transaction"] == "boom"
    assert error["contexts"]["trace"]["trace_id"] == transaction["contexts"]["trace"]["trace_id"]
    assert error["tags"]["spinach.job_id"] == str(job.id)
    assert error["tags"]["spinach.task"] == "boom"
    assert error["tags"]["spinach.queue"] == job.queue
    assert error["tags"]["spinach.retries"] == "0"
    assert error["contexts"]["spinach"]["max_retries"] == 0


@pytest.mark.parametrize(("send_retries", "captured_retries"), [(False, ["1"]), (True, ["0", "1"])])
def test_retries_are_captured_only_if_asked(
    init_sentry: SentryInit,
    engine: Engine,
    clock: ManualClock,
    send_retries: bool,
    captured_retries: list[str],
) -> None:
    """A run that will be retried is captured only with send_retries=True; the last one always."""
    transport = init_sentry(SpinachIntegration(send_retries=send_retries))

    @engine.task(name="flaky", max_retries=1)
    def flaky() -> None:
        raise ValueError("flaky")

    engine.schedule(flaky)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    clock.advance(3600)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    assert [e["tags"]["spinach.retries"] for e in transport.errors()] == captured_retries
    statuses = [t["contexts"]["trace"]["status"] for t in transport.transactions()]
    assert statuses == ["internal_error", "internal_error"]


def test_failure_logged_by_spinach_is_not_sent_twice(
    init_sentry: SentryInit, engine: Engine
) -> None:
    """With the logging integration on, a failed job still makes one error event."""
    transport = init_sentry(SpinachIntegration(), LoggingIntegration())

    @engine.task(name="boom")
    def boom() -> None:
        raise ValueError("boom")

    engine.schedule(boom)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    [error] = transport.errors()
    assert exception_type(error) == "ValueError"


def test_job_that_could_not_run_is_captured(
    init_sentry: SentryInit, engine: Engine, broker: MemoryBroker, clock: ManualClock
) -> None:
    """A job the engine failed without running it (unknown task) is captured, untraced."""
    transport = init_sentry(SpinachIntegration())
    job = Job("nobody-registered-this", "spinach", clock.now(), max_retries=3)
    broker.enqueue_jobs([job])
    engine.start_workers(number=1, stop_when_queue_empty=True)
    [error] = transport.errors()
    assert exception_type(error) == "UnknownTask"
    assert error["tags"]["spinach.job_id"] == str(job.id)
    assert error["transaction"] == "nobody-registered-this"
    assert transport.transactions() == []


def test_task_code_reports_into_its_job_scope(init_sentry: SentryInit, engine: Engine) -> None:
    """Tags and messages of the task code land in the job's scope and trace, not in others'."""
    transport = init_sentry(SpinachIntegration())
    spans: list[str | None] = []

    @engine.task(name="report")
    def report(i: int) -> None:
        span = sentry_sdk.get_current_span()
        spans.append(None if span is None else span.op)
        sentry_sdk.set_tag("arg", str(i))
        sentry_sdk.capture_message(f"from {i}")

    jobs = [engine.schedule(report, i) for i in range(4)]
    engine.start_workers(number=2, stop_when_queue_empty=True)
    assert spans == ["queue.task.spinach"] * 4
    transactions = by_job_id(transport.transactions())
    messages = by_job_id(transport.errors())
    for i, job in enumerate(jobs):
        message = messages[str(job.id)]
        assert (message["message"], message["tags"]["arg"]) == (f"from {i}", str(i))
        trace_id = transactions[str(job.id)]["contexts"]["trace"]["trace_id"]
        assert message["contexts"]["trace"]["trace_id"] == trace_id


def test_scope_does_not_leak_into_the_next_job(init_sentry: SentryInit, engine: Engine) -> None:
    """Tags and breadcrumbs a job adds are gone for the next job its worker runs."""
    transport = init_sentry(SpinachIntegration())

    @engine.task(name="dirty")
    def dirty() -> None:
        sentry_sdk.set_tag("left-over", "yes")
        sentry_sdk.add_breadcrumb(message="left over")

    @engine.task(name="clean")
    def clean() -> None:
        sentry_sdk.capture_message("clean")

    engine.schedule(dirty)
    job = engine.schedule(clean)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    [message] = transport.errors()
    assert message["tags"]["spinach.job_id"] == str(job.id)
    assert "left-over" not in message["tags"]
    assert message["breadcrumbs"]["values"] == []
    transactions = by_job_id(transport.transactions())
    assert "left-over" not in transactions[str(job.id)]["tags"]


def test_concurrent_asyncio_jobs_get_separate_transactions(
    init_sentry: SentryInit, engine: Engine
) -> None:
    """Two async jobs running at once on one thread each get their own scope and transaction."""
    transport = init_sentry(SpinachIntegration())
    started: list[int] = []

    @engine.task(name="overlap")
    async def overlap(i: int) -> None:
        started.append(i)
        deadline = time.monotonic() + 10
        # Both jobs are in flight at once before either reports anything.
        while len(started) < 2:
            assert time.monotonic() < deadline, "the other job never started"
            await asyncio.sleep(0.001)
        sentry_sdk.set_tag("arg", str(i))
        sentry_sdk.capture_message(f"from {i}")
        if i == 1:
            raise ValueError("second one fails")

    jobs = [engine.schedule(overlap, i) for i in range(2)]
    engine.start_workers(number=2, workers_class=AsyncioWorkers, stop_when_queue_empty=True)
    transactions = by_job_id(transport.transactions())
    events = transport.errors()
    messages = by_job_id([e for e in events if "message" in e])
    [error] = [e for e in events if "exception" in e]
    assert [transactions[str(job.id)]["contexts"]["trace"]["status"] for job in jobs] == [
        "ok",
        "internal_error",
    ]
    trace_ids = [transactions[str(job.id)]["contexts"]["trace"]["trace_id"] for job in jobs]
    assert trace_ids[0] != trace_ids[1]
    for i, job in enumerate(jobs):
        message = messages[str(job.id)]
        assert message["tags"]["arg"] == str(i)
        assert message["contexts"]["trace"]["trace_id"] == trace_ids[i]
    assert error["tags"]["spinach.job_id"] == str(jobs[1].id)
    assert error["tags"]["arg"] == "1"


def test_nothing_is_sent_when_the_integration_is_not_enabled(
    init_sentry: SentryInit, engine: Engine
) -> None:
    """With a client lacking SpinachIntegration the receivers do nothing."""
    # Set the receivers up, as an earlier client with the integration would have.
    init_sentry(SpinachIntegration())
    transport = init_sentry()

    @engine.task(name="boom")
    def boom() -> None:
        raise ValueError("boom")

    engine.schedule(boom)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    assert transport.envelopes == []


def test_span_streaming_mode_still_captures_errors(init_sentry: SentryInit, engine: Engine) -> None:
    """In span streaming mode, which has no transactions, failures are still captured."""
    transport = init_sentry(SpinachIntegration(), trace_lifecycle="stream")

    @engine.task(name="boom")
    def boom() -> None:
        raise ValueError("boom")

    job = engine.schedule(boom)
    engine.start_workers(number=1, stop_when_queue_empty=True)
    [error] = transport.errors()
    assert exception_type(error) == "ValueError"
    assert error["tags"]["spinach.job_id"] == str(job.id)
    assert error["transaction"] == "boom"
    assert transport.transactions() == []
