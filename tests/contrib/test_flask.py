"""The Flask extension spinach.contrib.flask_spinach, with real Flask apps on the MemoryBroker."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
from collections.abc import Iterator
from datetime import timedelta
from typing import Any, Callable

import pytest
from flask import Flask, current_app, has_app_context

from spinach import AsyncioWorkers, Batch, MemoryBroker, Tasks, signals
from spinach.brokers.redis import RedisBroker
from spinach.contrib.flask_spinach import Spinach
from spinach.exc import ConfigurationError, NotAttachedError
from spinach.job import Job

MakeApp = Callable[..., Flask]


@pytest.fixture
def make_app() -> Iterator[MakeApp]:
    """Build Flask apps with a namespace of their own; stop their workers afterwards."""
    apps: list[Flask] = []

    def make(name: str | None = None, **config: Any) -> Flask:
        app = Flask(name or __name__)
        if name is None:
            config.setdefault("SPINACH_NAMESPACE", f"flask-{uuid.uuid4().hex[:8]}")
        config.setdefault("SPINACH_BROKER", MemoryBroker())
        app.config.update(config)
        apps.append(app)
        return app

    yield make
    for app in apps:
        ext = app.extensions.get("spinach")
        if ext is not None:
            with app.app_context():
                ext.spin.stop_workers()


def the_app() -> Flask:
    """The current app itself, not the proxy."""
    app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]  # a LocalProxy
    return app


def noop(*args: Any) -> None:
    """A task that does nothing."""


def counts(broker: MemoryBroker) -> tuple[dict[str, int], int, int]:
    c = broker.count_jobs()
    return c.queued, c.future, c.running


class TestConfiguration:
    def test_init_app_stores_the_extension_and_builds_an_engine(self, make_app: MakeApp) -> None:
        """init_app puts the extension in app.extensions and names the engine SPINACH_NAMESPACE."""
        app = make_app(SPINACH_NAMESPACE="flask-config")
        ext = Spinach(app)
        assert app.extensions["spinach"] is ext
        assert ext.spin.namespace == "flask-config"

    def test_namespace_defaults_to_the_app_name(self, make_app: MakeApp) -> None:
        """Without SPINACH_NAMESPACE the namespace is app.name."""
        app = make_app(f"flask_app_{uuid.uuid4().hex[:8]}")
        ext = Spinach(app)
        assert ext.spin.namespace == app.name

    def test_default_broker_is_redis(self) -> None:
        """Without SPINACH_BROKER the broker is RedisBroker(), as in 0.0.25."""
        app = Flask(__name__)
        app.config["SPINACH_NAMESPACE"] = f"flask-{uuid.uuid4().hex[:8]}"
        app.config["SPINACH_BROKER"] = None
        ext = Spinach(app)
        broker = ext.spin.broker
        assert isinstance(broker, RedisBroker)
        assert broker.namespace == app.config["SPINACH_NAMESPACE"]

    def test_failed_store_bounds_come_from_the_config(self, make_app: MakeApp) -> None:
        """SPINACH_MAX_FAILED bounds the failed store of the app's engine; a wrong one,
        or a wrong SPINACH_KEEP_FAILED, is an error naming it."""
        ext = Spinach(make_app(SPINACH_MAX_FAILED=5, SPINACH_KEEP_FAILED=timedelta(hours=1)))
        assert ext.spin.broker.max_failed == 5
        for name, value in (("SPINACH_MAX_FAILED", 0), ("SPINACH_KEEP_FAILED", 3600)):
            with pytest.raises(ConfigurationError, match=name):
                Spinach(make_app(**{name: value}))

    def test_given_broker_is_used(self, make_app: MakeApp) -> None:
        """Jobs are stored in the SPINACH_BROKER of the app."""
        broker = MemoryBroker()
        ext = Spinach(make_app(SPINACH_BROKER=broker))
        ext.task(noop, name="noop")
        ext.schedule("noop", "hello")
        assert counts(broker) == ({"spinach": 1}, 0, 0)

    def test_broker_of_the_wrong_type_is_an_error(self, make_app: MakeApp) -> None:
        """A SPINACH_BROKER that is not a Broker instance is a ConfigurationError naming it."""
        app = make_app(SPINACH_BROKER="redis://localhost:6379")
        with pytest.raises(ConfigurationError, match="SPINACH_BROKER must be a spinach Broker"):
            Spinach(app)
        assert "spinach" not in app.extensions

    def test_namespace_of_the_wrong_type_is_an_error(self, make_app: MakeApp) -> None:
        """A SPINACH_NAMESPACE that is not a str is a ConfigurationError naming it."""
        with pytest.raises(ConfigurationError, match="SPINACH_NAMESPACE"):
            Spinach(make_app(SPINACH_NAMESPACE=42))

    def test_init_app_twice_is_an_error(self, make_app: MakeApp) -> None:
        """Initialising Spinach twice on one app is a ConfigurationError."""
        app = make_app()
        Spinach(app)
        with pytest.raises(ConfigurationError, match="already initialised"):
            Spinach().init_app(app)


class TestAppResolution:
    def test_construction_app_is_used_outside_app_contexts(self, make_app: MakeApp) -> None:
        """Spinach(app) schedules through that app's engine without an app context."""
        broker = MemoryBroker()
        ext = Spinach(make_app(SPINACH_BROKER=broker))
        ext.task(noop, name="noop")
        assert not has_app_context()
        ext.schedule("noop")
        assert counts(broker)[0] == {"spinach": 1}

    def test_without_an_app_is_an_error(self) -> None:
        """An extension with no app and no app context says to call init_app."""
        with pytest.raises(NotAttachedError, match="init_app"):
            Spinach().spin  # noqa: B018 - the property access is what raises

    def test_current_app_selects_its_own_engine(self, make_app: MakeApp) -> None:
        """One extension on two apps uses the engine of the current app."""
        first, second = make_app(), make_app()
        ext = Spinach()
        ext.init_app(first)
        ext.init_app(second)
        with first.app_context():
            assert ext.spin.namespace == first.config["SPINACH_NAMESPACE"]
        with second.app_context():
            assert ext.spin.namespace == second.config["SPINACH_NAMESPACE"]

    def test_app_not_initialised_is_an_error(self, make_app: MakeApp) -> None:
        """Registering tasks on an app the extension does not know says to call init_app."""
        with pytest.raises(NotAttachedError, match="init_app"):
            Spinach().register_tasks(make_app(), Tasks())


class TestProxies:
    def test_task_execute_and_schedules_go_to_the_engine(self, make_app: MakeApp) -> None:
        """task, execute, schedule, schedule_at and schedule_batch act on the app's engine."""
        broker = MemoryBroker()
        app = make_app(SPINACH_BROKER=broker)
        ext = Spinach()
        ext.init_app(app)
        with app.app_context():

            @ext.task(name="add")
            def add(a: int, b: int) -> int:
                return a + b

            assert ext.execute(add, 1, 2) == 3
            ext.schedule("add", 1, 2)
            ext.schedule_at("add", broker.now() + timedelta(hours=1), 3, 4)
            batch = Batch()
            batch.schedule("add", 5, 6)
            batch.schedule("add", 7, 8)
            jobs = ext.schedule_batch(batch)
        assert [job.task_args for job in jobs] == [(5, 6), (7, 8)]
        assert counts(broker) == ({"spinach": 3}, 1, 0)

    def test_register_tasks_attaches_a_registry(self, make_app: MakeApp) -> None:
        """register_tasks makes a registry schedule through the app's engine."""
        broker = MemoryBroker()
        app = make_app(SPINACH_BROKER=broker)
        ext = Spinach(app)
        tasks = Tasks()
        tasks.add(noop, "noop")
        ext.register_tasks(app, tasks)
        tasks.schedule("noop")
        assert counts(broker)[0] == {"spinach": 1}


class TestAppContext:
    def test_jobs_run_inside_the_app_context(self, make_app: MakeApp) -> None:
        """Each job runs with its app as current_app, in a context torn down after it."""
        app = make_app()
        ext = Spinach(app)
        seen: list[Flask] = []
        teardowns: list[BaseException | None] = []
        app.teardown_appcontext(teardowns.append)

        @ext.task(name="who")
        def who() -> None:
            seen.append(the_app())

        for _ in range(3):
            ext.schedule(who)
        ext.spin.start_workers(number=2, stop_when_queue_empty=True)
        assert seen == [app, app, app]
        assert teardowns == [None, None, None]

    def test_async_jobs_run_inside_the_app_context(self, make_app: MakeApp) -> None:
        """On asyncio workers too, each job sees its app as current_app."""
        app = make_app()
        ext = Spinach(app)
        seen: list[Flask] = []

        @ext.task(name="who")
        async def who() -> None:
            await asyncio.sleep(0)  # let the other job interleave with this one
            seen.append(the_app())

        ext.schedule(who)
        ext.schedule(who)
        ext.spin.start_workers(number=2, stop_when_queue_empty=True, workers_class=AsyncioWorkers)
        assert seen == [app, app]

    def test_hooks_are_called_inside_the_app_context(self, make_app: MakeApp) -> None:
        """job_started, job_finished and job_failed are called in the app context."""
        calls: list[tuple[str, str, bool]] = []
        errors: list[BaseException] = []

        class Recording(Spinach):
            def job_started(self, namespace: str, job: Job) -> None:
                calls.append(("started", job.task_name, has_app_context()))

            def job_finished(self, namespace: str, job: Job) -> None:
                calls.append(("finished", job.task_name, has_app_context()))

            def job_failed(self, namespace: str, job: Job, err: BaseException) -> None:
                calls.append(("failed", job.task_name, has_app_context()))
                errors.append(err)

        ext = Recording(make_app())
        ext.task(noop, name="ok")

        @ext.task(name="boom")
        def boom() -> None:
            raise ValueError("boom")

        ext.schedule("ok")
        ext.spin.start_workers(number=1, stop_when_queue_empty=True)
        ext.schedule("boom")
        ext.spin.start_workers(number=1, stop_when_queue_empty=True)
        assert calls == [
            ("started", "ok", True),
            ("finished", "ok", True),
            ("started", "boom", True),
            ("failed", "boom", True),
            ("finished", "boom", True),
        ]
        assert [str(e) for e in errors] == ["boom"]

    def test_job_failed_outside_a_worker_gets_an_app_context(self, make_app: MakeApp) -> None:
        """A job failed by the engine itself (unknown task) calls job_failed in the app context."""
        failed: list[tuple[str, bool]] = []

        class Recording(Spinach):
            def job_failed(self, namespace: str, job: Job, err: BaseException) -> None:
                failed.append((job.task_name, has_app_context()))

        broker = MemoryBroker()
        ext = Recording(make_app(SPINACH_BROKER=broker))
        broker.enqueue_jobs([Job("nobody-registered-this", "spinach", broker.now(), 0)])
        ext.spin.start_workers(number=1, stop_when_queue_empty=True)
        assert failed == [("nobody-registered-this", True)]

    def test_newest_app_of_a_namespace_gets_the_jobs_context(self, make_app: MakeApp) -> None:
        """Two apps sharing a namespace: only the app initialised last pushes its context."""
        namespace = f"flask-shared-{uuid.uuid4().hex[:8]}"
        old, new = make_app(SPINACH_NAMESPACE=namespace), make_app(SPINACH_NAMESPACE=namespace)
        old_teardowns: list[BaseException | None] = []
        old.teardown_appcontext(old_teardowns.append)
        Spinach(old)
        ext = Spinach(new)
        seen: list[Flask] = []
        ext.task(lambda: seen.append(the_app()), name="who")
        ext.schedule("who")
        ext.spin.start_workers(number=1, stop_when_queue_empty=True)
        assert seen == [new]
        assert old_teardowns == []

    def test_receivers_go_away_with_their_app(self) -> None:
        """Once an app is garbage, the extension's signal receivers for it are gone."""
        namespace = f"flask-gone-{uuid.uuid4().hex[:8]}"

        def receivers() -> int:
            return len(list(signals.job_started.receivers_for(namespace)))

        before = receivers()
        app = Flask(__name__)
        app.config["SPINACH_NAMESPACE"] = namespace
        Spinach(app)
        assert receivers() == before + 1
        del app
        gc.collect()
        assert receivers() == before


class TestCli:
    def test_spinach_command_runs_the_scheduled_jobs(self, make_app: MakeApp) -> None:
        """flask spinach --stop-when-queue-empty --threads 2 runs every job in the app context."""
        broker = MemoryBroker()
        app = make_app(SPINACH_BROKER=broker)
        ext = Spinach(app)
        seen: list[tuple[int, Flask]] = []
        lock = threading.Lock()

        @ext.task(name="who")
        def who(i: int) -> None:
            with lock:
                seen.append((i, the_app()))

        for i in range(5):
            ext.schedule(who, i)
        result = app.test_cli_runner().invoke(
            args=["spinach", "--stop-when-queue-empty", "--threads", "2"]
        )
        assert result.exit_code == 0, result.output
        assert sorted(seen, key=lambda s: s[0]) == [(i, app) for i in range(5)]
        assert counts(broker) == ({}, 0, 0)

    def test_spinach_command_consumes_the_given_queue(self, make_app: MakeApp) -> None:
        """flask spinach --queue Q runs the jobs of queue Q."""
        app = make_app()
        ext = Spinach(app)
        ran = threading.Event()

        @ext.task(name="set", queue="other")
        def set_() -> None:
            ran.set()

        ext.schedule("set")
        result = app.test_cli_runner().invoke(
            args=["spinach", "--queue", "other", "--stop-when-queue-empty"]
        )
        assert result.exit_code == 0, result.output
        assert ran.is_set()

    def test_spinach_command_rejects_zero_threads(self, make_app: MakeApp) -> None:
        """--threads 0 is a usage error naming the option."""
        app = make_app()
        Spinach(app)
        result = app.test_cli_runner().invoke(args=["spinach", "--threads", "0"])
        assert result.exit_code == 2
        assert "--threads" in result.output
