"""``spinach inspect``, run as an operator runs it, against a real Redis and live workers."""

from __future__ import annotations

import json
import os
import socket
import textwrap
import threading
from datetime import timedelta
from pathlib import Path

import pytest

from spinach import Engine
from spinach.brokers.base import QueueState
from spinach.testing import wait_for

from .test_jobs_command import spinach


@pytest.fixture
def engine(redis_engine: Engine) -> Engine:
    return redis_engine


def test_queues_workers_and_failures_as_json_and_as_a_table(
    engine: Engine, redis_url: str, namespace: str
) -> None:
    release = threading.Event()
    failed = threading.Event()

    @engine.task(name="block", max_concurrency=2, max_retries=1)
    def block() -> None:
        release.wait(60)

    @engine.task(name="fragile")
    def fragile() -> None:
        failed.set()
        raise ValueError("no")

    engine.schedule("fragile")
    for _ in range(4):
        engine.schedule("block")
    engine.schedule_at("block", engine.broker.now() + timedelta(hours=1))
    engine.start_workers(number=3, block=False)
    try:
        expected = QueueState(ready=0, held_back=2, future=1, running=2)
        wait_for(
            lambda: (
                engine.broker.inspect().queues.get("spinach") == expected
                and engine.broker.inspect().failed == 1
            ),
            timeout=20,
        )
        shown = spinach("inspect", redis_url, "--namespace", namespace, "--json")
        assert shown.returncode == 0, shown.stderr
        values = json.loads(shown.stdout)
        assert values["namespace"] == namespace
        assert values["queues"] == {
            "spinach": {"ready": 0, "held_back": 2, "future": 1, "running": 2}
        }
        (worker,) = values["workers"]
        assert worker["id"] == engine.broker.worker_id
        assert (worker["host"], worker["pid"], worker["running"]) == (
            socket.gethostname(),
            os.getpid(),
            2,
        )
        assert 0 <= worker["seconds_since_heartbeat"] < 30
        assert (values["failed"], values["failed_dropped"]) == (1, 0)

        table = spinach("inspect", redis_url, "--namespace", namespace)
        assert table.returncode == 0, table.stderr
        lines = table.stdout.splitlines()
        at = lines.index("QUEUE    READY  HELD BACK  FUTURE  RUNNING")
        assert lines[at + 2].split() == ["spinach", "0", "2", "1", "2"]
        at = next(i for i, line in enumerate(lines) if line.startswith("WORKER"))
        assert lines[at].split() == ["WORKER", "HOST", "PID", "RUNNING", "LAST", "HEARTBEAT"]
        row = lines[at + 2].split()
        assert row[:4] == [engine.broker.worker_id, socket.gethostname(), str(os.getpid()), "2"]
        assert lines[-1] == "Failed jobs: 1"
    finally:
        release.set()
        engine.stop_workers()
    assert failed.is_set()


def test_an_empty_namespace_and_an_engine_target(
    engine: Engine, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    (tmp_path / "ops_app.py").write_text(
        textwrap.dedent(
            f"""
            from spinach import Engine, RedisBroker

            spin = Engine(RedisBroker.from_url({redis_url!r}), {namespace!r})
            """
        )
    )
    shown = spinach("inspect", "ops_app:spin", cwd=tmp_path)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.splitlines()[2:] == ["No queue.", "", "No worker.", "", "Failed jobs: 0"]


def test_an_unreachable_redis_is_a_clear_error() -> None:
    from spinach.testing.redis_server import free_port

    down = spinach("inspect", f"redis://127.0.0.1:{free_port()}/0")
    assert down.returncode == 2
    assert "spinach inspect: ConnectionError" in down.stderr
    assert "Traceback" not in down.stderr
