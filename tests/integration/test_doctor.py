"""``spinach doctor`` and ``diagnose()`` against real redis-server processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
import redis

from spinach import Engine, MemoryBroker, Tasks
from spinach._doctor_checks import check_tls
from spinach.brokers.redis import RedisBroker
from spinach.clock import ManualClock
from spinach.doctor import Report, TargetError, diagnose
from spinach.testing.redis_server import RedisServer, free_port

PASSWORD = "correct-horse-battery-staple-7f3a9c"
CONFIGURED = (
    "--appendonly", "yes",
    "--appendfsync", "everysec",
    "--requirepass", PASSWORD,
    "--maxmemory", "100mb",
    "--maxmemory-policy", "noeviction",
)  # fmt: skip
NO_CONFIG = (
    "--user", "default", "off",
    "--user", "alice", "on", f">{PASSWORD}", "~*", "&*", "+@all", "-config",
)  # fmt: skip


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        message = "redis-server is not installed: the doctor tests need their own servers"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@contextlib.contextmanager
def _servers(directory: Path) -> Iterator[Callable[..., RedisServer]]:
    _need_redis_server()
    servers: list[RedisServer] = []

    def start(*options: str) -> RedisServer:
        server_dir = directory / f"redis-{len(servers)}"
        server_dir.mkdir()
        server = RedisServer(str(server_dir))
        servers.append(server)
        server.start(*options)
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


@pytest.fixture
def start_redis(tmp_path: Path) -> Iterator[Callable[..., RedisServer]]:
    """Start throwaway redis-servers with given options, each in its own directory."""
    with _servers(tmp_path) as start:
        yield start


# Servers with a password are shared by the tests that only read them: each
# start waits for redis-py's retries of the readiness check that gets refused.
@pytest.fixture(scope="module")
def configured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server set up per the production checklist, read but never written by the tests."""
    with _servers(tmp_path_factory.mktemp("configured")) as start:
        yield start(*CONFIGURED)


@pytest.fixture(scope="module")
def no_config(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server whose users cannot run CONFIG, and whose default user is off."""
    with _servers(tmp_path_factory.mktemp("no-config")) as start:
        yield start(*NO_CONFIG, "--user", "bob", "on", ">short", "~*", "&*", "+@all")


def with_password(server: RedisServer, user: str = "") -> str:
    return f"redis://{user}:{PASSWORD}@127.0.0.1:{server.port}/0"


def doctor(
    *args: str, cwd: Path, pythonpath: Path | None = None
) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    if pythonpath is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(pythonpath), env.get("PYTHONPATH")]))
    return subprocess.run(
        [sys.executable, "-m", "spinach", "doctor", *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env=env,
    )


def statuses(report: dict[str, Any]) -> dict[str, str]:
    return {check["name"]: check["status"] for check in report["checks"]}


def line_of(output: str, name: str) -> str:
    [line] = [line for line in output.splitlines() if f"] {name}: " in line]
    return line


def test_cli_fails_on_an_unprotected_server(
    start_redis: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """Against a server without AOF or password, the CLI exits 1 and says how to fix both."""
    server = start_redis()
    result = doctor(server.url, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    for name in ("persistence", "authentication"):
        line = line_of(result.stdout, name)
        assert line.startswith("[FAIL]")
        assert " -> fix: " in line
    assert "AOF is off" in line_of(result.stdout, "persistence")
    assert result.stdout.rstrip().endswith("passed")


def test_cli_json_lists_the_same_failures(
    start_redis: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """With --json, the CLI prints a parseable report with the same failures and their fixes."""
    server = start_redis()
    result = doctor(server.url, "--json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["failed"] is True
    assert report["namespace"] is None
    failed = {c["name"]: c for c in report["checks"] if c["status"] == "fail"}
    assert set(failed) == {"persistence", "authentication"}
    assert all(check["fix"] for check in failed.values())
    assert report["counts"]["fail"] == 2
    assert report["tasks"] == []


def test_cli_passes_on_a_server_set_up_per_the_checklist(
    configured: RedisServer, tmp_path: Path
) -> None:
    """A server with AOF, noeviction and a long password passes, reached with its password."""
    result = doctor(with_password(configured), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = statuses(json.loads(result.stdout))
    assert "fail" not in report.values()
    for name in ("persistence", "eviction", "authentication", "tls", "redis-version", "clock"):
        assert report[name] == "pass", name
    assert PASSWORD not in result.stdout


def test_cli_exits_2_when_the_server_is_unreachable(tmp_path: Path) -> None:
    """A URL where no server listens exits with status 2 and the reason."""
    result = doctor(f"redis://127.0.0.1:{free_port()}/0", cwd=tmp_path)
    assert result.returncode == 2
    assert "Cannot reach Redis at redis://127.0.0.1:" in result.stderr
    assert "Connection refused" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    ("password", "reason"),
    [("wrong-password", "refused the user or password"), ("", "requires a password")],
    ids=["wrong-password", "no-password"],
)
def test_cli_exits_2_when_the_server_refuses_the_credentials(
    configured: RedisServer, tmp_path: Path, password: str, reason: str
) -> None:
    """A wrong or missing password exits with status 2 and the reason, never showing it."""
    result = doctor(f"redis://:{password}@127.0.0.1:{configured.port}/0", cwd=tmp_path)
    assert result.returncode == 2
    assert reason in result.stderr
    assert result.stdout == ""
    assert "wrong-password" not in result.stderr


@pytest.mark.parametrize(
    ("target", "reason"),
    [
        ("localhost:6379", "Cannot import module 'localhost'"),
        ("not-a-target", "neither a Redis URL"),
        ("os:path", "not a spinach Engine"),
        ("os:no_such_attribute", "has no attribute"),
        ("http://example.com", "Unsupported Redis URL 'http://example.com'"),
    ],
)
def test_cli_exits_2_for_a_target_that_is_not_an_engine_or_url(
    tmp_path: Path, target: str, reason: str
) -> None:
    """A TARGET that is neither a Redis URL nor an Engine's import path exits 2, saying why."""
    result = doctor(target, cwd=tmp_path)
    assert result.returncode == 2
    assert reason in result.stderr


def test_checks_that_need_config_are_unknown_when_config_is_forbidden(
    no_config: RedisServer, tmp_path: Path
) -> None:
    """A user without CONFIG gets persistence and eviction "unknown", saying why, and exit 0."""
    result = doctor(with_password(no_config, "alice"), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    checks = {check["name"]: check for check in report["checks"]}
    for name in ("persistence", "eviction"):
        assert checks[name]["status"] == "unknown"
        assert "CONFIG GET" in checks[name]["detail"]
        assert checks[name]["fix"]
    assert checks["authentication"]["status"] == "pass"
    assert "'alice'" in checks["authentication"]["detail"]
    assert report["target"].startswith("redis://alice@127.0.0.1:")


def test_a_short_password_is_a_warning(no_config: RedisServer) -> None:
    """A required password shorter than 16 characters makes the authentication check warn."""
    report = diagnose(f"redis://bob:short@127.0.0.1:{no_config.port}/0")
    [check] = [c for c in report.checks if c.name == "authentication"]
    assert check.status == "warn"
    assert "5 characters" in check.detail


def test_a_foreign_key_with_a_ttl_is_a_warning(start_redis: Callable[..., RedisServer]) -> None:
    """A key that is not Spinach's and has a TTL makes the dedicated-server check warn."""
    server = start_redis()
    client = redis.Redis(port=server.port)
    client.set("cache:user:42", "cached", ex=300)
    client.close()
    report = diagnose(server.url)
    [check] = [c for c in report.checks if c.name == "dedicated-server"]
    assert check.status == "warn"
    assert "1 key(s) with a TTL ('cache:user:42')" in check.detail
    assert check.fix is not None


def test_spinach_keys_and_their_expiring_markers_are_not_foreign(
    start_redis: Callable[..., RedisServer],
) -> None:
    """Keys of a namespace, including those that expire by design (the enqueued
    markers, kept results, rate logs), pass the dedicated check."""
    server = start_redis()
    broker = RedisBroker.from_url(server.url)
    engine = Engine(broker, "shop")
    engine.task(lambda greeting: None, name="at_most_once", max_retries=0)
    engine.task(
        lambda: 7,
        name="kept",
        keep_result=timedelta(hours=1),
        rate_limit=(10, timedelta(hours=1)),
    )
    engine.schedule("at_most_once", "hello")
    job = engine.schedule("kept")
    engine.start_workers(number=1, queue="spinach", stop_when_queue_empty=True)
    assert engine.get_result(job, timeout=0) == 7
    for kind in ("enqueued", "result", "rate"):
        keys = set(broker.redis.scan_iter(match=f"spinach:{{shop}}:{kind}:*"))
        assert keys, kind
        assert all(broker.redis.ttl(key) > 0 for key in keys), keys
    report = diagnose(server.url)
    checks = {c.name: c for c in report.checks}
    assert checks["dedicated-server"].status == "pass", checks["dedicated-server"].detail
    assert "'shop'" in checks["namespaces"].detail
    broker.close()


def test_engine_import_path_lists_tasks_with_their_delivery(
    start_redis: Callable[..., RedisServer], tmp_path: Path
) -> None:
    """`python -m spinach doctor mod:spin` checks the engine's namespace and lists its tasks."""
    server = start_redis()
    package = tmp_path / "app"
    package.mkdir()
    (package / "doctor_app.py").write_text(
        textwrap.dedent(
            f"""
            from datetime import timedelta

            from spinach import Engine, Tasks
            from spinach.brokers.redis import RedisBroker

            tasks = Tasks()

            @tasks.task(name="send_receipt")
            def send_receipt(order_id): ...

            @tasks.task(name="resize", max_retries=3, max_concurrency=2, queue="images")
            def resize(image_id): ...

            @tasks.task(name="purge", max_retries=1, periodicity=timedelta(minutes=5))
            def purge(): ...

            spin = Engine(RedisBroker.from_url({server.url!r}), "shop")
            spin.attach_tasks(tasks)
            """
        )
    )
    result = doctor("doctor_app:spin", cwd=tmp_path, pythonpath=package)
    assert result.returncode == 1, result.stderr
    assert result.stdout.startswith(f"spinach doctor: {server.url} namespace 'shop'\n")
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[-6:-2]}
    assert rows["TASK"] == ["TASK", "QUEUE", "DELIVERY", "RETRIES", "CONCURRENCY", "PERIODICITY"]
    assert rows["send_receipt"] == ["send_receipt", "spinach", "at-most-once", "0", "-", "-"]
    assert rows["resize"] == ["resize", "images", "at-least-once", "3", "2", "-"]
    assert rows["purge"] == ["purge", "spinach", "at-least-once", "1", "-", "every", "5", "min"]
    assert line_of(result.stdout, "workers").startswith("[WARN] workers: this namespace has")

    as_json = json.loads(
        doctor("doctor_app:spin", "--json", cwd=tmp_path, pythonpath=package).stdout
    )
    assert as_json["namespace"] == "shop"
    assert {t["name"]: t["delivery"] for t in as_json["tasks"]} == {
        "purge": "at-least-once",
        "resize": "at-least-once",
        "send_receipt": "at-most-once",
    }
    [purge] = [t for t in as_json["tasks"] if t["name"] == "purge"]
    assert purge == {
        "name": "purge",
        "queue": "spinach",
        "delivery": "at-least-once",
        "max_retries": 1,
        "max_concurrency": None,
        "periodicity": 300.0,
    }


def test_diagnose_an_engine_in_process(configured: RedisServer) -> None:
    """diagnose(engine) returns a Report of the engine's namespace, its tasks and JSON of both."""
    broker = RedisBroker.from_url(with_password(configured))
    tasks = Tasks()
    tasks.add(print, "notify", max_retries=2, queue="mail")
    engine = Engine(broker, "billing", dead_worker_timeout=30)
    engine.attach_tasks(tasks)
    report = diagnose(engine)
    assert isinstance(report, Report)
    assert not report.failed
    assert report.namespace == "billing"
    assert [(t.name, t.queue, t.delivery, t.max_retries) for t in report.tasks] == [
        ("notify", "mail", "at-least-once", 2)
    ]
    assert PASSWORD not in report.target
    assert json.loads(report.to_json())["tasks"][0]["name"] == "notify"
    assert "Tasks of namespace 'billing':" in report.to_text()
    broker.close()


def test_workers_are_live_within_the_engines_dead_worker_timeout(
    start_redis: Callable[..., RedisServer],
) -> None:
    """Workers that heartbeat within the engine's dead_worker_timeout count as live, others not."""
    server = start_redis()
    broker = RedisBroker.from_url(server.url)
    engine = Engine(broker, "shop", dead_worker_timeout=30)
    seconds, _ = broker.redis.time()
    broker.redis.zadd("spinach:{shop}:workers", {"recent": seconds - 20, "gone": seconds - 90})
    [check] = [c for c in diagnose(engine).checks if c.name == "workers"]
    assert check.status == "pass"
    assert "'shop': 1 live worker process(es), 1 silent" in check.detail
    broker.redis.zrem("spinach:{shop}:workers", "recent")
    [check] = [c for c in diagnose(engine).checks if c.name == "workers"]
    assert check.status == "warn"
    broker.close()


def test_a_clock_off_by_seconds_is_a_warning(start_redis: Callable[..., RedisServer]) -> None:
    """A host clock 5 s behind the server's makes the clock check warn, naming the offset."""
    server = start_redis()
    report = diagnose(server.url, clock=ManualClock(time.time() - 5))
    [check] = [c for c in report.checks if c.name == "clock"]
    assert check.status == "warn"
    assert "behind the Redis server's" in check.detail
    assert check.fix is not None
    assert "NTP" in check.fix


@pytest.mark.parametrize(
    ("url", "kwargs", "status"),
    [
        ("redis://127.0.0.1:6390/0", {}, "pass"),
        ("redis://[::1]:6390/0", {}, "pass"),
        ("redis://localhost:6390/0", {}, "pass"),
        ("unix:///run/redis/redis.sock", {}, "pass"),
        ("rediss://10.1.2.3:6390/0", {}, "pass"),
        ("redis://10.1.2.3:6390/0", {}, "warn"),
        ("redis://redis.internal:6390/0", {}, "warn"),
        ("rediss://10.1.2.3:6390/0", {"ssl_cert_reqs": "none"}, "warn"),
    ],
)
def test_tls_is_wanted_off_loopback(url: str, kwargs: dict[str, Any], status: str) -> None:
    """Plain TCP passes on loopback or a unix socket, and warns towards any other host."""
    client = redis.Redis.from_url(url, **kwargs)
    assert check_tls(client).status == status
    client.close()


def test_diagnose_refuses_an_engine_without_redis() -> None:
    """diagnose() raises TargetError for an engine whose broker is not a RedisBroker."""
    with pytest.raises(TargetError, match="MemoryBroker"):
        diagnose(Engine(MemoryBroker(), "memory"))


def _fail_jobs(engine: Engine, jobs: int) -> None:
    """Run ``jobs`` jobs of a task that raises, with no retry, until the queue is empty."""

    def refuse_payment(order_id: int) -> None:
        raise ValueError(f"card declined for order {order_id}")

    engine.task(refuse_payment, name="refuse_payment", max_retries=0)
    for order_id in range(jobs):
        engine.schedule("refuse_payment", order_id)
    engine.start_workers(number=1, stop_when_queue_empty=True)


@pytest.fixture(scope="module")
def dropped(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A server set up per the checklist whose namespace 'shop' kept 2 of 5 failed jobs."""
    with _servers(tmp_path_factory.mktemp("dropped")) as start:
        server = start(*CONFIGURED)
        broker = RedisBroker.from_url(with_password(server))
        _fail_jobs(Engine(broker, "shop", max_failed=2), 5)
        broker.close()
        yield server


def test_failed_jobs_kept_but_none_dropped_pass(start_redis: Callable[..., RedisServer]) -> None:
    """Failed jobs that the store kept pass, counted, with where to see and requeue them."""
    server = start_redis()
    [check] = [c for c in diagnose(server.url).checks if c.name == "failed-jobs"]
    assert (check.status, check.detail) == ("pass", "no Spinach namespace, so no failed job")
    broker = RedisBroker.from_url(server.url)
    engine = Engine(broker, "shop")
    _fail_jobs(engine, 3)
    assert len(engine.failed_jobs()) == 3
    [check] = [c for c in diagnose(engine).checks if c.name == "failed-jobs"]
    broker.close()
    assert check.status == "pass", check.detail
    assert re.fullmatch(
        r"'shop': 3 failed job\(s\) \(the oldest failed \d+ s ago\); none dropped: see them "
        r"with engine\.failed_jobs\(\), run them again with engine\.requeue_failed\(\)",
        check.detail,
    ), check.detail
    assert check.fix is None


def test_dropped_failed_jobs_warn_but_exit_0(dropped: RedisServer, tmp_path: Path) -> None:
    """Jobs dropped beyond max_failed make the check warn, with the counts and the fix;
    a warning lets the CLI exit 0."""
    result = doctor(with_password(dropped), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    line = line_of(result.stdout, "failed-jobs")
    assert line.startswith(
        "[WARN] failed-jobs: 1 namespace(s) have dropped failed jobs: 'shop': 2 failed job(s) "
        "kept (the oldest failed "
    ), line
    assert re.search(r"\(the oldest failed \d+ s ago\), 3 dropped -> fix: ", line), line
    assert line.endswith(
        " -> fix: failed jobs were dropped to keep the store within max_failed: look at "
        "engine.failed_jobs(), requeue or purge them (engine.requeue_failed(), "
        "engine.purge_failed()), or raise Engine(max_failed=...); the count can be reset "
        "with `DEL spinach:{ns}:failed_dropped`"
    ), line
    assert not [row for row in result.stdout.splitlines() if row.startswith("[FAIL]")]


def test_cli_json_carries_the_failed_jobs_check(dropped: RedisServer, tmp_path: Path) -> None:
    """--json reports the failed-jobs check, after workers, with its detail and fix."""
    result = doctor(with_password(dropped), "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    report = json.loads(result.stdout)
    names = [check["name"] for check in report["checks"]]
    assert names[-2:] == ["workers", "failed-jobs"]
    check = report["checks"][-1]
    assert check["status"] == "warn"
    assert "'shop': 2 failed job(s) kept" in check["detail"]
    assert check["detail"].endswith(", 3 dropped")
    assert "engine.requeue_failed()" in check["fix"]
    assert check["node"] is None
    assert report["counts"]["warn"] >= 1
    assert report["failed"] is False
