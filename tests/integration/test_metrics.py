"""Prometheus metrics: counted from a real engine's signals, and scraped over HTTP
from ``spinach worker --metrics-port``, in one process and under a supervisor."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from spinach import Batch, Engine, MemoryBroker, RetryException
from spinach.contrib.prometheus import SpinachMetrics
from spinach.testing import wait_for
from spinach.testing.redis_server import free_port


def test_jobs_are_counted_and_timed_by_outcome() -> None:
    registry = CollectorRegistry()
    engine = Engine(MemoryBroker(), "metrics")
    flaky_runs: list[int] = []

    @engine.task(name="flaky", max_retries=1)
    def flaky() -> None:
        flaky_runs.append(1)
        if len(flaky_runs) == 1:
            raise RetryException("again", at=engine.broker.now())

    release = threading.Event()

    @engine.task(name="hold")
    def hold() -> None:
        # Short waits: the exception that stops a cancelled job lands between them.
        for _ in range(3000):
            if release.wait(0.01):
                return

    engine.task(lambda: None, name="ok")
    engine.task(lambda: 1 / 0, name="bad", max_retries=0)
    engine.task(lambda: None, name="never")
    metrics = SpinachMetrics(registry, engine=engine)
    try:
        for _ in range(3):
            engine.schedule("ok")
        engine.schedule("bad")
        engine.schedule("flaky")
        assert engine.cancel(engine.schedule("never"))
        engine.schedule_at("ok", engine.broker.now() + timedelta(hours=1))
        held = engine.schedule("hold")
        engine.start_workers(number=2, block=False)
        try:
            wait_for(lambda: engine.broker.inspect().queues["spinach"].running == 1)
            wait_for(lambda: (i := engine.get_job(held)) is not None and i.started_at is not None)
            assert engine.cancel(held)  # running: stopped by its worker, counted here once
            wait_for(lambda: engine.broker.count_jobs().queued == {} and engine._workers.idle)  # type: ignore[union-attr]
        finally:
            release.set()
            engine.stop_workers()

        def value(name: str, **labels: str) -> float | None:
            return registry.get_sample_value(name, {"namespace": "metrics", **labels})

        assert value("spinach_jobs_total", task="ok", outcome="succeeded") == 3
        assert value("spinach_jobs_total", task="bad", outcome="failed") == 1
        assert value("spinach_jobs_total", task="flaky", outcome="retried") == 1
        assert value("spinach_jobs_total", task="flaky", outcome="succeeded") == 1
        assert value("spinach_jobs_total", task="never", outcome="cancelled") == 1
        assert value("spinach_jobs_total", task="hold", outcome="cancelled") == 1
        assert value("spinach_job_duration_seconds_count", task="ok") == 3
        assert value("spinach_job_queue_wait_seconds_count", task="flaky") == 2
        assert value("spinach_queue_jobs", queue="spinach", state="future") == 1
        assert value("spinach_queue_jobs", queue="spinach", state="ready") == 0
        assert value("spinach_failed_jobs") == 1
        assert value("spinach_broker_up") == 1
    finally:
        metrics.close()
    assert registry.get_sample_value("spinach_failed_jobs", {"namespace": "metrics"}) is None


APP = textwrap.dedent(
    """
    import os

    from spinach import Engine, RedisBroker

    spin = Engine(RedisBroker.from_url(os.environ["APP_REDIS_URL"]), os.environ["APP_NAMESPACE"])
    if os.environ.get("APP_OWN_METRICS"):  # the application counts jobs itself already
        from spinach.contrib.prometheus import SpinachMetrics

        SpinachMetrics(engine=spin)
    spin.task(lambda i: None, name="ok", max_retries=1)


    @spin.task(name="bad", max_retries=0)
    def bad(i):
        raise ValueError(i)
    """
)


@pytest.fixture
def app(tmp_path: Path, redis_url: str, namespace: str) -> Iterator[Engine]:
    (tmp_path / "metrics_app.py").write_text(APP)
    sys.path.insert(0, str(tmp_path))
    try:
        os.environ.update(APP_REDIS_URL=redis_url, APP_NAMESPACE=namespace)
        import metrics_app  # type: ignore[import-not-found]

        engine: Engine = metrics_app.spin
        yield engine
        engine.broker.flush()
        engine.broker.close()  # type: ignore[attr-defined]
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("metrics_app", None)


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of a real HTTP scrape, by name and labels; {} while it does not answer."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
            text = response.read().decode()
    except (urllib.error.URLError, OSError):
        return {}
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.mark.parametrize(
    ("processes", "own_metrics"), [(1, False), (2, False), (1, True)], ids=["1", "2", "app's"]
)
def test_a_running_worker_serves_its_metrics(
    app: Engine, tmp_path: Path, namespace: str, processes: int, own_metrics: bool
) -> None:
    batch = Batch()
    for i in range(30):
        batch.schedule("ok", i)
    for i in range(4):
        batch.schedule("bad", i)
    app.schedule_batch(batch)
    app.schedule_at("ok", app.broker.now() + timedelta(hours=1), 99)
    port = free_port()
    command = [sys.executable, "-m", "spinach", "worker", "metrics_app:spin", "--threads", "4"]
    command += ["--processes", str(processes), "--metrics-port", str(port)]
    env = dict(os.environ, APP_OWN_METRICS="1" if own_metrics else "")
    log = (tmp_path / "worker.log").open("w+")
    worker = subprocess.Popen(command, cwd=tmp_path, stderr=log, env=env)
    try:
        ns = ("namespace", namespace)
        expected = {
            ("spinach_jobs_total", (ns, ("outcome", "succeeded"), ("task", "ok"))): 30,
            ("spinach_jobs_total", (ns, ("outcome", "failed"), ("task", "bad"))): 4,
            ("spinach_job_duration_seconds_count", (ns, ("task", "ok"))): 30,
            ("spinach_queue_jobs", (ns, ("queue", "spinach"), ("state", "future"))): 1,
            ("spinach_failed_jobs", (ns,)): 4,  # once the workers recorded them
            ("spinach_workers", (ns,)): processes,  # once each heartbeated
        }

        def scraped() -> bool:
            samples = scrape(port)
            return all(samples.get(key) == value for key, value in expected.items())

        wait_for(scraped, timeout=60)
    finally:
        worker.terminate()
        try:
            worker.wait(timeout=60)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
        log.seek(0)
        errors = log.read()
        log.close()
    assert worker.returncode == 0, errors
    assert f"on http://127.0.0.1:{port}/metrics" in errors


def test_metrics_without_prometheus_client_say_what_to_install(tmp_path: Path) -> None:
    blocker = tmp_path / "prometheus_client.py"
    blocker.write_text("raise ImportError('No module named prometheus_client')\n")
    (tmp_path / "metrics_app.py").write_text(
        "from spinach import Engine, MemoryBroker\nspin = Engine(MemoryBroker())\n"
    )
    run = subprocess.run(
        [sys.executable, "-m", "spinach", "worker", "metrics_app:spin", "--metrics-port", "9"],
        cwd=tmp_path,
        env=dict(os.environ, PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 2
    assert "pip install 'spinach[prometheus]'" in run.stderr
