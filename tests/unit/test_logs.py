"""JSON logs of jobs: the fields of each run, and the trace id under OpenTelemetry."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from spinach import Engine, MemoryBroker, RetryException
from spinach.contrib.opentelemetry import SpinachInstrumentor
from spinach.logs import JsonFormatter


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.setFormatter(JsonFormatter())
        self.lines: list[dict[str, Any]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(json.loads(self.format(record)))


@pytest.fixture
def lines() -> Iterator[list[dict[str, Any]]]:
    handler = Lines()
    logger = logging.getLogger("spinach.worker")
    level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    yield handler.lines
    logger.removeHandler(handler)
    logger.setLevel(level)


def test_each_run_logs_its_job_fields(lines: list[dict[str, Any]]) -> None:
    engine = Engine(MemoryBroker(), "logs")
    runs: list[int] = []

    @engine.task(name="flaky", max_retries=1)
    def flaky() -> None:
        runs.append(1)
        if len(runs) == 1:
            raise RetryException("again", at=engine.broker.now())

    engine.task(lambda: 1 / 0, name="bad", max_retries=0)
    flaky_job, bad_job = engine.schedule("flaky"), engine.schedule("bad")
    engine.start_workers(number=1, stop_when_queue_empty=True)

    jobs = [line for line in lines if "job_id" in line]
    by_job = {
        job_id: [(line["outcome"], line["attempt"]) for line in jobs if line["job_id"] == job_id]
        for job_id in (str(flaky_job.id), str(bad_job.id))
    }
    assert by_job[str(flaky_job.id)] == [
        ("started", 1),
        ("retried", 1),
        ("started", 2),
        ("succeeded", 2),
    ]
    assert by_job[str(bad_job.id)] == [("started", 1), ("failed", 1)]
    failed = next(line for line in jobs if line["outcome"] == "failed")
    assert (failed["task"], failed["queue"], failed["level"]) == ("bad", "spinach", "ERROR")
    assert failed["duration"] >= 0
    assert "ZeroDivisionError" in failed["exception"]
    assert failed["message"].startswith("Error during run 1/1 of Job <bad FAILED")
    assert all(line["duration"] is None for line in jobs if line["outcome"] == "started")
    assert "trace_id" not in failed


def test_the_trace_id_of_the_run(lines: list[dict[str, Any]]) -> None:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    instrumentor = SpinachInstrumentor(provider)
    try:
        engine = Engine(MemoryBroker(), "logs-traced")
        engine.task(lambda: None, name="ok")
        engine.schedule("ok")
        engine.start_workers(number=1, stop_when_queue_empty=True)
    finally:
        instrumentor.close()
    (run,) = [s for s in exporter.get_finished_spans() if s.name == "process spinach"]
    job_lines = [line for line in lines if "job_id" in line]
    assert [line["outcome"] for line in job_lines] == ["started", "succeeded"]
    assert {line["trace_id"] for line in job_lines} == {f"{run.context.trace_id:032x}"}
    assert {line["span_id"] for line in job_lines} == {f"{run.context.span_id:016x}"}


def test_the_worker_command_writes_json_lines(tmp_path: Path) -> None:
    (tmp_path / "logs_app.py").write_text(
        textwrap.dedent(
            """
            from spinach import Engine, MemoryBroker

            spin = Engine(MemoryBroker(), "logs-command")
            spin.task(lambda: None, name="ok")
            spin.schedule("ok")
            """
        )
    )
    command = [sys.executable, "-m", "spinach", "worker", "logs_app:spin", "--stop-when-empty"]
    run = subprocess.run(
        [*command, "--log-format", "json"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    lines = [json.loads(line) for line in run.stderr.splitlines()]
    outcomes = [line["outcome"] for line in lines if line.get("task") == "ok"]
    assert outcomes == ["started", "succeeded"]
