"""Run the tests of Spinach 0.0.25 against the installed ``spinach``.

Usage: ``.venv/bin/python scripts/upstream_tests.py [--keep DIR] [--source PATH] [-- PYTEST_ARGS]``

The script downloads the 0.0.25 sdist with pip, copies its ``tests/`` folder
alone into a fresh directory (so that the sdist's own ``spinach/`` cannot be
imported), and runs pytest there with an ini of its own: this repository's
pytest options (``filterwarnings = error``, ``--import-mode=importlib``) do
not apply. It prints one line per test and ``N passed, M failed, K errors``.

Exit status: 0 when every test that did not pass is in ``KNOWN_DIFFERENCES``,
1 when another one did not pass, 2 when the run itself could not be done.

The sdist lacks ``tests/__init__.py`` and ``tests/conftest.py``, which its test
modules import (``from .conftest import get_now``): the script writes them, the
conftest its own (the fixtures ``get_now``, ``set_now`` and ``patch_now``). The sdist also lacks
``tests/contrib`` and ``tests/functional``; ``--source`` runs those from a git
checkout of the tag. The tests make ``RedisBroker()``, which connects to
localhost:6379: this file, loaded into pytest as a plugin, sends those
connections to a throwaway ``redis-server`` on a free loopback port instead.
Without ``redis-server`` on the PATH they use localhost:6379 (the tests only
touch keys of the namespace ``tests``).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

import pytest
import redis

VERSION = "0.0.25"
_RESULTS_ENV = "UPSTREAM_TESTS_RESULTS"
_PORT_ENV = "UPSTREAM_TESTS_REDIS_PORT"

_MOCKED_TIME = "patch_now patches spinach.*.datetime; time comes from the broker's clock"
_WORKER_QUEUES = "private Workers._in_queue/_threads of 0.0.25's worker protocol"

#: Upstream tests that do not pass, by node id (or node id without its
#: ``[parameters]``; a module for an import error), with the reason.
KNOWN_DIFFERENCES: dict[str, str] = {
    # The broker interface and the Redis storage are new (docs/migration.md).
    "tests/test_brokers.py": "imports const.WAIT_FOR_EVENT_MAX_SECONDS; broker API redesigned",
    "tests/test_redis_brokers.py": "imports 0.0.25's Redis key names; new storage",
    "tests/test_memory_brokers.py::test_namespace": "namespace has a default until attached",
    "tests/test_memory_brokers.py::test_get_queues": "private MemoryBroker._queues/_get_queue",
    "tests/test_memory_brokers.py::test_get_jobs_from_queue_limits_concurrency": (
        "Broker.set_concurrency_keys is now set_concurrency_limits"
    ),
    "tests/test_memory_brokers.py::test_get_jobs_from_queue_re_adds_jobs_if_over_limit": (
        "set_concurrency_keys renamed; private _get_queue"
    ),
    "tests/test_memory_brokers.py::test_decrements_concurrency_count_when_job_ends": (
        "Broker.set_concurrency_keys is now set_concurrency_limits"
    ),
    # Internals of 0.0.25.
    "tests/test_job.py": "imports advance_job_status, 0.0.25's worker helper",
    "tests/test_queuey.py": "spinach.queuey was 0.0.25's internal worker queue",
    "tests/test_utils.py::test_run_forever": "0.0.25's internal helper run_forever",
    "tests/test_utils.py::test_call_with_retry": "0.0.25's internal helper call_with_retry",
    "tests/test_engine.py::test_attach_tasks": "private Tasks._spin (now _engine), mocked logger",
    "tests/test_engine.py::test_schedule_at": _MOCKED_TIME + "; a Mock() broker",
    "tests/test_engine.py::test_schedule": _MOCKED_TIME + "; a Mock() broker",
    "tests/test_engine.py::test_schedule_batch": _MOCKED_TIME + "; a Mock() broker",
    "tests/test_task.py::test_tasks_scheduling": "private Tasks._spin (now _engine)",
    "tests/test_task.py::test_batch": _MOCKED_TIME + "; Batch.schedule stores at=None",
    "tests/test_worker.py::test_job_execution": "can_accept_job/out_queue are now collect_finished",
    "tests/test_worker.py::test_job_execution_exception": _WORKER_QUEUES,
    "tests/test_worker.py::test_start_stop_n_workers": _WORKER_QUEUES,
    "tests/test_worker.py::test_worker_signals": _WORKER_QUEUES + " (signals are the same)",
    "tests/test_worker.py::test_can_accept_job": _WORKER_QUEUES,
    "tests/contrib/test_datadog.py::test_datadog": "mocks tracer.current_root_span(), unused now",
    # Deliberate: Task is an immutable attrs record.
    "tests/test_task.py::test_task_eq": "Task is frozen: task.name = ... raises",
    "tests/test_task.py::test_task_repr": "attrs repr, not Task(print, name, ...)",
    "tests/test_task.py::test_task_serialize": "Task.serialize was 0.0.25's Redis format",
}

# The sdist's test modules import get_now and set_now from a tests/conftest.py
# that it does not ship, and use a patch_now fixture. This one is written here:
# a clock the tests read and set, put in place of ``datetime`` in the modules
# the 0.0.25 tests patched. Some of those no longer have a ``datetime`` (time
# comes from the broker's clock), so the tests using patch_now fail in setup.
_CONFTEST = """\
from datetime import datetime, timezone

import pytest

START = datetime(2017, 9, 2, 8, 50, 56, 482169, timezone.utc)
_clock = {"now": START}


def get_now():
    return _clock["now"]


def set_now(now):
    _clock["now"] = now if now.tzinfo else now.replace(tzinfo=timezone.utc)


class _FrozenDatetime:
    @staticmethod
    def now(tz=None):
        return _clock["now"]

    fromtimestamp = staticmethod(datetime.fromtimestamp)


@pytest.fixture
def patch_now(monkeypatch):
    _clock["now"] = START
    for module in ("base", "redis"):
        monkeypatch.setattr(f"spinach.brokers.{module}.datetime", _FrozenDatetime)
    for module in ("job", "engine", "task"):
        monkeypatch.setattr(f"spinach.{module}.datetime", _FrozenDatetime)
"""

_INI = """\
[pytest]
addopts = -p no:cacheprovider
timeout = 120
"""


# --- pytest plugin side: this module, loaded with ``-p upstream_tests`` ---


def pytest_configure(config: pytest.Config) -> None:
    """Send localhost:6379 connections to the throwaway server and note which spinach runs."""
    import spinach

    _record({"spinach": spinach.__file__})
    port = os.environ.get(_PORT_ENV)
    if port:
        redis.Redis = _redirected_redis(int(port))  # type: ignore[misc]  # replacing the class is the point


def _redirected_redis(port: int) -> type[redis.Redis]:
    class RedirectedRedis(redis.Redis):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            if not args and kwargs.get("port", 6379) == 6379:
                kwargs.update(host="127.0.0.1", port=port)
            super().__init__(*args, **kwargs)

    return RedirectedRedis


def pytest_collectreport(report: pytest.CollectReport) -> None:
    if report.failed:
        _record({"id": report.nodeid, "outcome": "error", "message": _message(report)})


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call" or report.outcome != "passed":
        outcome = report.outcome if report.when == "call" else "error"
        if report.when != "call" and report.skipped:
            outcome = "skipped"
        _record({"id": report.nodeid, "outcome": outcome, "message": _message(report)})


def _message(report: pytest.CollectReport | pytest.TestReport) -> str:
    crash = getattr(report.longrepr, "reprcrash", None)
    text = crash.message if crash is not None else str(report.longrepr or "")
    lines = [line.strip().removeprefix("E   ") for line in text.splitlines() if line.strip()]
    return lines[-1][:110] if lines else ""


def _record(entry: dict[str, str]) -> None:
    with open(os.environ[_RESULTS_ENV], "a", encoding="utf-8") as f:
        f.write(json.dumps(entry) + "\n")


# --- script side ---


def _upstream_tree(work: Path, source: Path | None) -> Path:
    """The Spinach 0.0.25 tree: ``source`` if it is a directory, else the sdist
    (``source``, or downloaded) unpacked under ``work``."""
    if source is not None and source.is_dir():
        return source
    if source is None:
        download = work / "download"
        pip = [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:"]
        subprocess.run([*pip, f"spinach=={VERSION}", "-d", str(download)], check=True)
        source = next(download.glob(f"spinach-{VERSION}.tar.gz"))
    with tarfile.open(source) as tar:
        if hasattr(tarfile, "data_filter"):
            tar.extractall(work / "sdist", filter="data")
        else:  # Python before 3.9.17 / 3.10.12 / 3.11.4
            tar.extractall(work / "sdist")
    return work / "sdist" / f"spinach-{VERSION}"


def _lay_out_tests(tree: Path, work: Path) -> Path:
    """Copy the tests of ``tree`` alone to ``work/run``; return that directory."""
    run = work / "run"
    shutil.copytree(tree / "tests", run / "tests", ignore=shutil.ignore_patterns("__pycache__"))
    (run / "tests" / "__init__.py").touch()
    conftest = run / "tests" / "conftest.py"
    if not conftest.exists():
        conftest.write_text(_CONFTEST, encoding="utf-8")
    (run / "pytest.ini").write_text(_INI, encoding="utf-8")
    return run


def _run_pytest(run: Path, results: Path, redis_port: int | None, args: list[str]) -> int:
    env = dict(os.environ, **{_RESULTS_ENV: str(results)})
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")])
    )
    if redis_port is not None:
        env[_PORT_ENV] = str(redis_port)
    command = [sys.executable, "-m", "pytest", "-c", str(run / "pytest.ini"), "--rootdir", str(run)]
    command += ["-p", Path(__file__).stem, "--continue-on-collection-errors", "tests", *args]
    with open(run.parent / "pytest.log", "w", encoding="utf-8") as log:
        return subprocess.run(
            command, cwd=run, env=env, stdout=log, stderr=subprocess.STDOUT
        ).returncode


def _known(test_id: str) -> str | None:
    return KNOWN_DIFFERENCES.get(test_id) or KNOWN_DIFFERENCES.get(test_id.split("[")[0])


def _report(results: Path) -> bool:
    """Print the results; return whether every test that did not pass is a known difference."""
    outcomes: dict[str, tuple[str, str]] = {}
    for line in results.read_text(encoding="utf-8").splitlines():
        entry = json.loads(line)
        if "spinach" in entry:
            print(f"spinach under test: {entry['spinach']}")
        elif outcomes.get(entry["id"], ("passed",))[0] == "passed":  # first failure wins
            outcomes[entry["id"]] = (entry["outcome"], entry["message"])
    unexpected = []
    for test_id, (outcome, message) in outcomes.items():
        reason = _known(test_id)
        if outcome in ("failed", "error"):
            note = f"known: {reason}" if reason else f"UNEXPECTED: {message}"
            if not reason:
                unexpected.append(test_id)
        else:
            note = f"now passes, remove from KNOWN_DIFFERENCES ({reason})" if reason else ""
        print(f"{outcome.upper():8} {test_id}  {note}".rstrip())
    counts = collections.Counter(outcome for outcome, _ in outcomes.values())
    print(f"{counts['passed']} passed, {counts['failed']} failed, {counts['error']} errors")
    if counts["skipped"]:
        print(f"({counts['skipped']} skipped)")
    if unexpected:
        print(f"{len(unexpected)} not in KNOWN_DIFFERENCES: {', '.join(unexpected)}")
    return not unexpected


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", type=Path, help="work in DIR (new or empty) and keep it")
    parser.add_argument(
        "--source",
        type=Path,
        help=f"a spinach-{VERSION}.tar.gz, or a tree to take tests/ from (a checkout of the tag)",
    )
    parser.add_argument("pytest_args", nargs="*", help="given to pytest (after --)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="upstream-tests-") as tmp:
        work = options.keep or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        if any(work.iterdir()):
            parser.error(f"{work} is not empty")
        try:
            source = options.source and options.source.resolve()
            run = _lay_out_tests(_upstream_tree(work, source), work)
        except (subprocess.CalledProcessError, OSError, tarfile.TarError, StopIteration) as e:
            print(f"could not get the {VERSION} tests: {e!r}", file=sys.stderr)
            return 2
        results = work / "results.jsonl"
        if shutil.which("redis-server"):
            from spinach.testing.redis_server import RedisServer

            (work / "redis").mkdir()
            with RedisServer(str(work / "redis")) as server:
                status = _run_pytest(run, results, server.port, options.pytest_args)
        else:
            print("no redis-server on the PATH: the Redis tests use localhost:6379")
            status = _run_pytest(run, results, None, options.pytest_args)
        if status not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED) or not results.exists():
            log = (work / "pytest.log").read_text(encoding="utf-8").splitlines()
            print(*log[-20:], f"pytest exited with {status}", sep="\n", file=sys.stderr)
            return 2
        ok = _report(results)
        print(
            f"pytest output: {work / 'pytest.log'}"
            if options.keep
            else "tracebacks: use --keep DIR"
        )
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
