"""``spinach jobs``, run as an operator runs it, against a real Redis."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from spinach import Batch, Engine, RedisBroker


def spinach(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "spinach", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


@pytest.fixture
def engine(redis_url: str, namespace: str) -> Iterator[Engine]:
    engine = Engine(RedisBroker.from_url(redis_url), namespace)

    @engine.task(name="fragile")
    def fragile(n: int) -> None:
        if n >= 0:
            raise ValueError(f"{n} is not negative")

    engine.task(lambda: 42, name="answer", keep_result=timedelta(hours=1))
    yield engine
    engine.broker.flush()
    engine.broker.close()  # type: ignore[attr-defined]


def fail(engine: Engine, count: int) -> None:
    batch = Batch()
    for n in range(count):
        batch.schedule("fragile", n)
    engine.schedule_batch(batch)
    engine.start_workers(number=4, stop_when_queue_empty=True)
    assert engine.broker.count_jobs().failed == count


def test_failed_lists_them_as_a_table_and_as_json(
    engine: Engine, redis_url: str, namespace: str
) -> None:
    fail(engine, 3)
    table = spinach("jobs", "failed", redis_url, "--namespace", namespace)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "TASK", "QUEUE", "FAILED", "AT", "(UTC)", "RETRIES", "ERROR"]
    assert len(lines) == 2 + 3 + 1
    assert "ValueError: 0 is not negative" in table.stdout
    assert lines[-1] == "3 shown of 3 failed job(s)"
    listed = spinach(
        "jobs", "failed", redis_url, "--namespace", namespace, "--limit", "2", "--json"
    )
    assert listed.returncode == 0, listed.stderr
    infos = json.loads(listed.stdout)
    assert len(infos) == 2
    assert {info["status"] for info in infos} == {"FAILED"}
    assert infos[0]["error"]["type"] == "ValueError"


def test_show_gives_status_arguments_error_and_result(
    engine: Engine, redis_url: str, namespace: str
) -> None:
    fail(engine, 1)
    (failed,) = engine.failed_jobs()
    shown = spinach("jobs", "show", redis_url, str(failed.id), "--namespace", namespace)
    assert shown.returncode == 0, shown.stderr
    assert "status: FAILED" in shown.stdout
    assert "args: [0]" in shown.stdout
    assert "error: ValueError: 0 is not negative" in shown.stdout
    assert "Traceback (most recent call last):" in shown.stdout
    answer = engine.schedule("answer")
    engine.start_workers(number=1, stop_when_queue_empty=True)
    shown = spinach("jobs", "show", redis_url, str(answer.id), "--namespace", namespace, "--json")
    assert shown.returncode == 0, shown.stderr
    info = json.loads(shown.stdout)
    assert (info["status"], info["result"], info["task"]) == ("SUCCEEDED", 42, "answer")
    missing = spinach("jobs", "show", redis_url, "0" * 32, "--namespace", namespace)
    assert missing.returncode == 1
    assert f"no job {'0' * 32} in namespace {namespace!r}" in missing.stderr


def test_requeue_and_purge_by_id_and_all(engine: Engine, redis_url: str, namespace: str) -> None:
    fail(engine, 5)
    first, *rest = [str(info.id) for info in engine.failed_jobs()]
    requeued = spinach("jobs", "requeue", redis_url, first, "--namespace", namespace)
    assert (requeued.returncode, requeued.stdout) == (0, "Requeued 1 job(s)\n"), requeued.stderr
    assert engine.broker.count_jobs().queued == {"spinach": 1}
    purged = spinach("jobs", "purge", redis_url, rest[0], "--namespace", namespace)
    assert (purged.returncode, purged.stdout) == (0, "Purged 1 job(s)\n"), purged.stderr
    everything = spinach("jobs", "requeue", redis_url, "--all", "--namespace", namespace)
    assert everything.returncode == 0, everything.stderr
    assert everything.stdout == "Requeued 3 job(s)\n"
    counts = engine.broker.count_jobs()
    assert (counts.queued, counts.failed) == ({"spinach": 4}, 0)
    engine.start_workers(number=4, stop_when_queue_empty=True)
    purged = spinach("jobs", "purge", redis_url, "--all", "--namespace", namespace)
    assert (purged.returncode, purged.stdout) == (0, "Purged 4 job(s)\n"), purged.stderr
    assert engine.broker.count_jobs().failed == 0


def test_requeue_all_of_many_shows_its_progress(
    engine: Engine, redis_url: str, namespace: str
) -> None:
    """2,500 failed jobs requeued in pages, with a progress bar (shown on stderr)."""
    fail(engine, 2_500)
    done = spinach("jobs", "requeue", redis_url, "--all", "--namespace", namespace)
    assert done.returncode == 0, done.stderr
    assert done.stdout == "Requeued 2500 job(s)\n"
    assert "Requeuing" in done.stderr
    assert engine.broker.count_jobs().queued == {"spinach": 2_500}


def test_cancel_a_queued_job(engine: Engine, redis_url: str, namespace: str) -> None:
    job = engine.schedule("fragile", -1)
    cancelled = spinach("jobs", "cancel", redis_url, str(job.id), "--namespace", namespace)
    assert (cancelled.returncode, cancelled.stdout) == (0, f"Cancelled {job.id}\n")
    info = engine.get_job(job.id)
    assert info is not None
    assert info.status.name == "CANCELLED"
    again = spinach("jobs", "cancel", redis_url, str(job.id), "--namespace", namespace)
    assert again.returncode == 1
    assert "unknown, or already ended" in again.stderr


def test_an_engine_import_path_is_a_target(
    engine: Engine, redis_url: str, namespace: str, tmp_path: Path
) -> None:
    fail(engine, 1)
    (tmp_path / "ops_app.py").write_text(
        textwrap.dedent(
            f"""
            from spinach import Engine, RedisBroker

            spin = Engine(RedisBroker.from_url({redis_url!r}), {namespace!r})
            """
        )
    )
    listed = spinach("jobs", "failed", "ops_app:spin", "--json", cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert len(json.loads(listed.stdout)) == 1
    clash = spinach("jobs", "failed", "ops_app:spin", "--namespace", "other", cwd=tmp_path)
    assert clash.returncode == 2
    assert "--namespace 'other' is for a Redis URL" in clash.stderr


def test_usage_errors_are_clear(redis_url: str) -> None:
    neither = spinach("jobs", "requeue", redis_url)
    assert neither.returncode == 2
    assert "give job ids, or --all (not both)" in neither.stderr
    bad_url = spinach("jobs", "failed", "http://localhost:6379")
    assert bad_url.returncode == 2
    assert "spinach jobs failed:" in bad_url.stderr


def test_an_unreachable_redis_is_a_clear_error() -> None:
    from spinach.testing.redis_server import free_port

    down = spinach("jobs", "failed", f"redis://127.0.0.1:{free_port()}/0")
    assert down.returncode == 2
    assert "spinach jobs failed: ConnectionError" in down.stderr
    assert "check TARGET and that the broker is reachable" in down.stderr
    assert "Traceback" not in down.stderr
