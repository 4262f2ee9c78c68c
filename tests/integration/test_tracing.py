"""OpenTelemetry traces across the queue: the SDK's in-memory exporter on both
sides, a job scheduled here and run by a real worker process on a real Redis,
in one trace."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import baggage, trace
from opentelemetry.context import attach, detach
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from spinach import Engine, MemoryBroker, RedisBroker, RetryException
from spinach.contrib.opentelemetry import SpinachInstrumentor

from .span_records import span_records


@contextlib.contextmanager
def use_context(context: Any) -> Iterator[None]:
    token = attach(context)
    try:
        yield
    finally:
        detach(token)


@pytest.fixture
def traced() -> Iterator[tuple[InMemorySpanExporter, TracerProvider]]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = SpinachInstrumentor(provider)
    yield exporter, provider
    instrumentor.close()
    provider.shutdown()


def test_a_job_is_traced_from_its_scheduling_to_its_runs(
    traced: tuple[InMemorySpanExporter, TracerProvider],
) -> None:
    exporter, provider = traced
    engine = Engine(MemoryBroker(), "traced")
    runs: list[int] = []

    @engine.task(name="charge", max_retries=1)
    def charge(order: int) -> None:
        runs.append(order)
        with provider.get_tracer("app").start_as_current_span("call payment API"):
            if len(runs) == 1:
                raise RetryException("payment API busy", at=engine.broker.now())

    engine.task(lambda: 1 / 0, name="bad", max_retries=0)
    with use_context(baggage.set_baggage("user", "x" * 5000)):  # baggage stays out of meta
        job = engine.schedule("charge", 42)
    assert set(job.meta) == {"traceparent"}
    engine.schedule("bad")
    engine.start_workers(number=1, stop_when_queue_empty=True)

    spans = exporter.get_finished_spans()
    create = next(
        s
        for s in spans
        if s.name == "create spinach"
        and s.attributes is not None
        and s.attributes["spinach.task"] == "charge"
    )
    runs_ = [
        s
        for s in spans
        if s.name == "process spinach"
        and s.attributes is not None
        and s.attributes["spinach.task"] == "charge"
    ]
    assert create.kind is SpanKind.PRODUCER
    assert len(runs_) == 2
    for run in runs_:
        assert run.kind is SpanKind.CONSUMER
        assert run.context.trace_id == create.context.trace_id
        assert run.parent is not None
        assert run.parent.span_id == create.context.span_id
        assert [link.context.span_id for link in run.links] == [create.context.span_id]
        assert run.attributes is not None
        assert run.attributes["messaging.system"] == "spinach"
        assert run.attributes["messaging.destination.name"] == "spinach"
        assert run.attributes["messaging.message.id"] == str(job.id)
    first, second = sorted(runs_, key=lambda s: s.start_time or 0)
    assert [e.name for e in first.events] == ["retry"]
    assert second.attributes is not None
    assert second.attributes["spinach.job.retries"] == 1
    inner = [s for s in spans if s.name == "call payment API"]
    assert {s.parent.span_id for s in inner if s.parent} == {
        first.context.span_id,
        second.context.span_id,
    }
    (failed,) = [
        s
        for s in spans
        if s.name == "process spinach"
        and s.attributes is not None
        and s.attributes["spinach.task"] == "bad"
    ]
    assert failed.status.status_code is StatusCode.ERROR
    assert [e.name for e in failed.events] == ["exception"]


def test_without_an_sdk_nothing_is_recorded_or_carried() -> None:
    instrumentor = SpinachInstrumentor()  # the global provider: the API's no-op one
    try:
        engine = Engine(MemoryBroker(), "untraced")
        engine.task(lambda: None, name="ok")
        job = engine.schedule("ok")
        assert job.meta == {}
        engine.start_workers(number=1, stop_when_queue_empty=True)
    finally:
        instrumentor.close()
    assert not isinstance(trace.get_tracer_provider(), TracerProvider)


WORKER_APP = textwrap.dedent(
    """
    import atexit
    import json
    import os

    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from spinach import Engine, RedisBroker, RetryException
    from spinach.contrib.opentelemetry import SpinachInstrumentor
    from span_records import span_records

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    SpinachInstrumentor(provider)
    spin = Engine(RedisBroker.from_url(os.environ["APP_REDIS_URL"]), os.environ["APP_NAMESPACE"])
    runs = []


    @spin.task(name="charge", max_retries=1)
    def charge(order):
        runs.append(order)
        with provider.get_tracer("app").start_as_current_span("call payment API"):
            if len(runs) == 1:
                raise RetryException("payment API busy", at=spin.broker.now())


    @atexit.register
    def dump():
        with open(os.environ["APP_SPANS"], "w") as out:
            json.dump(span_records(exporter.get_finished_spans()), out)
    """
)


def tree(spans: list[dict[str, Any]]) -> str:
    """The spans as an indented tree, the roots first, children by start time."""
    by_parent: dict[Any, list[dict[str, Any]]] = {}
    ids = {span["id"] for span in spans}
    for span in sorted(spans, key=lambda s: s["start"]):
        by_parent.setdefault(span["parent"] if span["parent"] in ids else None, []).append(span)
    lines: list[str] = []

    def walk(parent: Any, depth: int) -> None:
        for span in by_parent.get(parent, []):
            events = f" events={span['events']}" if span["events"] else ""
            lines.append(
                f"{'  ' * depth}{span['name']} [{span['kind']}] pid={span['process']}{events}"
            )
            walk(span["id"], depth + 1)

    walk(None, 0)
    return "\n".join(lines)


def test_one_trace_from_the_scheduling_call_to_a_worker_process(
    traced: tuple[InMemorySpanExporter, TracerProvider],
    redis_url: str,
    namespace: str,
    tmp_path: Path,
) -> None:
    exporter, provider = traced
    (tmp_path / "traced_app.py").write_text(WORKER_APP)
    engine = Engine(RedisBroker.from_url(redis_url), namespace)
    engine.task(lambda order: None, name="charge", max_retries=1)
    try:
        with provider.get_tracer("web").start_as_current_span("POST /orders"):
            engine.schedule("charge", 42)
        env = dict(
            os.environ,
            APP_REDIS_URL=redis_url,
            APP_NAMESPACE=namespace,
            APP_SPANS=str(tmp_path / "spans.json"),
            # The worker app imports span_records from this folder.
            PYTHONPATH=os.pathsep.join(
                [str(Path(__file__).parent), *filter(None, [os.environ.get("PYTHONPATH")])]
            ),
        )
        worker = subprocess.run(
            [sys.executable, "-m", "spinach", "worker", "traced_app:spin", "--stop-when-empty"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert worker.returncode == 0, worker.stderr
    finally:
        engine.broker.flush()
        engine.broker.close()  # type: ignore[attr-defined]
    here = span_records(exporter.get_finished_spans())
    there = json.loads((tmp_path / "spans.json").read_text())
    spans = here + there
    print(tree(spans))
    assert len({span["trace"] for span in spans}) == 1
    assert tree(spans).replace(f"pid={os.getpid()}", "pid=TEST").splitlines() == [
        "POST /orders [INTERNAL] pid=TEST",
        "  create spinach [PRODUCER] pid=TEST",
        f"    process spinach [CONSUMER] pid={there[0]['process']} events=['retry']",
        f"      call payment API [INTERNAL] pid={there[0]['process']} events=['exception']",
        f"    process spinach [CONSUMER] pid={there[0]['process']}",
        f"      call payment API [INTERNAL] pid={there[0]['process']}",
    ]
