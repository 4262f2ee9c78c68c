"""``spinach worker``, run as a user runs it: a real command, real worker processes, real Redis."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from spinach import Batch, Engine
from spinach.testing import wait_for

APP = textwrap.dedent(
    """
    import os
    import sys

    import redis

    from spinach import Engine, RedisBroker, Tasks, signals

    url, namespace = os.environ["APP_REDIS_URL"], os.environ["APP_NAMESPACE"]
    r = redis.Redis.from_url(url)
    tasks = Tasks()
    if "--supervised" in sys.argv:  # in a worker process of a supervisor
        if os.environ.get("APP_FAIL_IN_WORKERS"):
            raise RuntimeError("this worker process cannot start")
        if os.environ.get("APP_SLOW_WORKERS"):
            r.rpush(f"test:{namespace}:importing", os.getpid())
            r.blpop([f"test:{namespace}:go"], timeout=60)


    def key(name):
        return f"test:{namespace}:{name}"


    @tasks.task(name="rec", max_retries=1)
    def rec(i):
        r.rpush(key("runs"), f"{i} {os.getpid()}")


    @tasks.task(name="hold", max_retries=1)
    def hold(i):
        r.rpush(key("started"), os.getpid())
        r.blpop([key("release")], timeout=60)
        r.rpush(key("done"), os.getpid())


    announced = []


    def on_worker_started(sender, worker_name):
        if not announced:
            announced.append(True)
            r.rpush(key("workers"), os.getpid())


    signals.worker_started.connect(on_worker_started, sender=namespace)
    spin = Engine(RedisBroker.from_url(url), namespace)
    spin.attach_tasks(tasks)
    """
)


class Command:
    """A running ``spinach worker``, its stderr read as it comes."""

    def __init__(self, process: subprocess.Popen[str]) -> None:
        self.process = process
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout)
        assert self.process.stderr is not None
        self.process.stderr.close()
        return code

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.wait()


class App:
    """The application module of a test, and the ``spinach worker`` commands it runs."""

    def __init__(self, directory: Path, url: str, namespace: str) -> None:
        (directory / "app.py").write_text(APP)
        self.directory, self.namespace = directory, namespace
        self.env = dict(os.environ, APP_REDIS_URL=url, APP_NAMESPACE=namespace)
        self.r = redis.Redis.from_url(url, decode_responses=True)
        self.commands: list[Command] = []
        sys.path.insert(0, str(directory))
        try:
            import app  # the producer side, as an application imports it

            self.engine: Engine = app.spin
        finally:
            sys.path.remove(str(directory))
            sys.modules.pop("app", None)

    def list(self, name: str) -> list[str]:
        return self.r.lrange(f"test:{self.namespace}:{name}", 0, -1)

    def schedule(self, task: str, count: int) -> None:
        batch = Batch()
        for i in range(count):
            batch.schedule(task, i)
        self.engine.schedule_batch(batch)

    def start(self, *options: str) -> Command:
        process = subprocess.Popen(
            [sys.executable, "-m", "spinach", "worker", "app:spin", *options],
            cwd=self.directory,
            env=self.env,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.commands.append(Command(process))
        return self.commands[-1]

    def run(self, *options: str, timeout: float = 60) -> tuple[int, str]:
        command = self.start(*options)
        return command.wait(timeout), command.stderr

    def workers(self, count: int) -> list[int]:
        """The pids of the first ``count`` worker processes that started, once they did."""
        wait_for(lambda: len(self.list("workers")) >= count, timeout=60)
        return [int(pid) for pid in self.list("workers")[:count]]

    def close(self) -> None:
        for command in self.commands:
            command.kill()
        self.engine.broker.flush()
        self.r.close()


def gone(pid: int) -> bool:
    """Whether the process ``pid`` ended (a zombie that nobody reaped counts)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rpartition(")")[2].split()[0] == "Z"
    except FileNotFoundError:
        return True


@pytest.fixture
def app(
    tmp_path: Path, redis_url: str, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[App]:
    # For the import of the application module in this process.
    monkeypatch.setenv("APP_REDIS_URL", redis_url)
    monkeypatch.setenv("APP_NAMESPACE", namespace)
    app = App(tmp_path, redis_url, namespace)
    yield app
    app.close()


def test_one_process_drains_and_stops_when_empty(app: App) -> None:
    app.schedule("rec", 50)
    code, stderr = app.run("--threads", "2", "--stop-when-empty")
    assert code == 0, stderr
    assert sorted(int(line.split()[0]) for line in app.list("runs")) == list(range(50))


def test_processes_share_the_queue(app: App) -> None:
    """Two worker processes run every job once between them, then both stop."""
    app.schedule("rec", 400)
    code, stderr = app.run("--processes", "2", "--stop-when-empty", "--threads", "4")
    assert code == 0, stderr
    runs = [line.split() for line in app.list("runs")]
    assert sorted(int(i) for i, _ in runs) == list(range(400))
    assert len(set(app.list("workers"))) == 2


def test_a_dead_worker_process_is_started_again_and_sigterm_stops_them(app: App) -> None:
    supervisor = app.start("--processes", "2", "--threads", "2")
    first, second = app.workers(2)
    os.kill(first, signal.SIGKILL)
    (replacement,) = app.workers(3)[2:]
    assert replacement not in (first, second)
    app.schedule("rec", 20)
    wait_for(lambda: len(app.list("runs")) == 20, timeout=60)
    supervisor.signal(signal.SIGTERM)
    assert supervisor.wait() == 0, supervisor.stderr
    assert "exited with -9; starting it again" in supervisor.stderr
    wait_for(lambda: gone(second) and gone(replacement), timeout=30)


def test_a_second_signal_stops_at_once(app: App) -> None:
    """The first signal waits for the running job; a second one does not."""
    supervisor = app.start("--processes", "2", "--threads", "1")
    pids = app.workers(2)
    app.schedule("hold", 1)
    wait_for(lambda: app.list("started"), timeout=60)
    supervisor.signal(signal.SIGINT)
    wait_for(lambda: "gracefully" in supervisor.stderr, timeout=30)
    supervisor.signal(signal.SIGINT)
    assert supervisor.wait(30) == 1, supervisor.stderr
    assert "worker process(es) at once" in supervisor.stderr
    assert app.list("done") == []
    wait_for(lambda: all(gone(pid) for pid in pids), timeout=30)


def test_worker_processes_stop_when_the_supervisor_dies(app: App) -> None:
    supervisor = app.start("--processes", "2", "--threads", "1")
    pids = app.workers(2)
    supervisor.kill()
    wait_for(lambda: all(gone(pid) for pid in pids), timeout=30)


def test_worker_processes_that_cannot_start_make_it_fail(app: App) -> None:
    """Children that die before their workers start, again and again: exit status 1."""
    app.env["APP_FAIL_IN_WORKERS"] = "1"
    code, stderr = app.run("--processes", "2", timeout=120)
    assert code == 1, stderr
    assert "the worker processes cannot start" in stderr
    assert "RuntimeError: this worker process cannot start" in stderr


def test_a_stop_while_worker_processes_start_is_graceful(app: App) -> None:
    """SIGTERM while the worker processes still import the application: they
    start, then stop gracefully, and the supervisor exits with 0."""
    app.env["APP_SLOW_WORKERS"] = "1"
    supervisor = app.start("--processes", "2", "--threads", "1")
    wait_for(lambda: len(app.list("importing")) == 2, timeout=60)
    supervisor.signal(signal.SIGTERM)
    wait_for(lambda: "gracefully" in supervisor.stderr, timeout=30)
    app.r.rpush(f"test:{app.namespace}:go", 1, 1)
    assert supervisor.wait() == 0, supervisor.stderr
    assert "starting it again" not in supervisor.stderr


def test_tasks_that_do_not_suit_the_workers_are_refused_up_front(app: App) -> None:
    code, stderr = app.run("--processes", "2", "--asyncio")
    assert code == 2, stderr
    assert "drop --asyncio, or give another --queue" in stderr


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("missing_module:spin", "Cannot import module 'missing_module'"),
        ("app:nothing", "Module 'app' has no attribute 'nothing'"),
        ("app:tasks", "is a Tasks, not a spinach Engine"),
        ("redis://localhost:6379/0", "give its import path (myapp.tasks:spin), not a Redis URL"),
    ],
)
def test_a_target_that_is_no_engine_is_a_clear_error(app: App, target: str, message: str) -> None:
    command = subprocess.run(
        [sys.executable, "-m", "spinach", "worker", target, "--processes", "2"],
        cwd=app.directory,
        env=app.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert command.returncode == 2
    assert message in command.stderr


def test_without_click_the_command_says_what_to_install() -> None:
    hide_click = (
        "import sys; sys.modules['click'] = None; from spinach.cli import main; "
        "raise SystemExit(main(['worker', 'app:spin']))"
    )
    command = subprocess.run(
        [sys.executable, "-c", hide_click], capture_output=True, text=True, timeout=60
    )
    assert command.returncode == 2
    assert "pip install 'spinach[cli]'" in command.stderr
