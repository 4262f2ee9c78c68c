"""Flask extension: one engine per app, an app context around each job, a CLI.

Usage::

    from flask import Flask
    from spinach import Tasks
    from spinach.brokers.redis import RedisBroker
    from spinach.contrib.flask_spinach import Spinach

    tasks = Tasks()

    @tasks.task(name="greet")
    def greet(name):
        print(f"Hello {name} from {current_app.name}")

    app = Flask(__name__)
    app.config["SPINACH_BROKER"] = RedisBroker()
    spinach = Spinach(app)
    spinach.register_tasks(app, tasks)

Then ``flask spinach`` runs the workers, and ``spinach.schedule("greet", "Ann")``
schedules a job through the engine of the current app.

Configuration:

- ``SPINACH_BROKER``: a :class:`~spinach.brokers.base.Broker` instance, one
  per app. Default: ``RedisBroker()``, for a Redis on localhost:6379, as in
  Spinach 0.0.25; redis-py connects on first use. Tests can set a
  :class:`~spinach.MemoryBroker`.
- ``SPINACH_NAMESPACE``: the engine's namespace. Default: ``app.name``.

The workers of an app push its app context before each job and pop it after,
in the thread (or asyncio task) that runs the job.
"""

from __future__ import annotations

import logging
import threading
import uuid
import weakref
from datetime import datetime
from typing import Any, Callable

import click
from flask import Flask, current_app, has_app_context
from flask.cli import with_appcontext
from flask.ctx import AppContext

from .. import const, signals
from ..brokers.base import Broker
from ..brokers.redis import RedisBroker
from ..engine import Engine, check_failed_bounds
from ..exc import ConfigurationError, NotAttachedError
from ..job import Job
from ..task import Batch, TaskLike, Tasks

__all__ = ["Spinach"]

logger = logging.getLogger(__name__)

#: The app state whose receivers serve each namespace. Signals are global, so
#: one namespace gets one set of receivers: the app initialised last wins.
_connected: weakref.WeakValueDictionary[str, _AppState] = weakref.WeakValueDictionary()


class Spinach:
    """The Flask extension: an :class:`~spinach.Engine` for each app.

    Args:
        app: an app to initialise now; its engine is used outside of app contexts.
    """

    def __init__(self, app: Flask | None = None) -> None:
        self.app = app
        self._states: weakref.WeakKeyDictionary[Flask, _AppState] = weakref.WeakKeyDictionary()
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Build the engine of ``app`` from its config and add the ``spinach`` command.

        Raises:
            ConfigurationError: a setting is wrong, or ``app`` has Spinach already.
        """
        if "spinach" in app.extensions:
            raise ConfigurationError(
                f"Spinach is already initialised on app {app.name!r}: call init_app() once per app"
            )
        broker = app.config.get("SPINACH_BROKER")
        if broker is None:
            broker = RedisBroker()
        elif not isinstance(broker, Broker):
            raise ConfigurationError(
                f"SPINACH_BROKER must be a spinach Broker, got {broker!r} "
                f"({type(broker).__name__}): set it to an instance such as "
                "spinach.brokers.redis.RedisBroker.from_url('redis://...')"
            )
        namespace = app.config.get("SPINACH_NAMESPACE") or app.name
        if not isinstance(namespace, str):
            raise ConfigurationError(
                f"SPINACH_NAMESPACE must be a non-empty str, got {namespace!r}"
            )
        keep_failed = app.config.get("SPINACH_KEEP_FAILED", const.DEFAULT_KEEP_FAILED)
        max_failed = app.config.get("SPINACH_MAX_FAILED", const.DEFAULT_MAX_FAILED)
        check_failed_bounds(keep_failed, max_failed, ("SPINACH_KEEP_FAILED", "SPINACH_MAX_FAILED"))
        engine = Engine(broker, namespace, keep_failed=keep_failed, max_failed=max_failed)
        state = _AppState(self, app, engine)
        self._states[app] = state
        state.connect()
        app.extensions["spinach"] = self
        app.cli.add_command(_spinach_command)

    # -- overridable hooks ---------------------------------------------------

    def job_started(self, namespace: str, job: Job) -> None:
        """Called by a worker, in the app context, before it runs ``job``."""

    def job_finished(self, namespace: str, job: Job) -> None:
        """Called by a worker, in the app context, after ``job`` ran, whatever the outcome."""

    def job_failed(self, namespace: str, job: Job, err: BaseException) -> None:
        """Called, in the app context, when ``job`` failed for good with ``err``."""

    # -- engine and proxies --------------------------------------------------

    @property
    def spin(self) -> Engine:
        """The engine of the current app (or of the app given at construction)."""
        return self._state(self._app()).engine

    def register_tasks(self, app: Flask, tasks: Tasks) -> None:
        """Attach a registry of tasks to the engine of ``app``."""
        self._state(app).engine.attach_tasks(tasks)

    def task(self, func: Callable[..., Any] | None = None, **kwargs: Any) -> Any:
        """Register a task with the current app's engine; used like :meth:`Tasks.task`."""
        return self.spin.task(func, **kwargs)

    def execute(self, task: TaskLike, *args: Any, **kwargs: Any) -> Any:
        """Run a task now, in this thread; see :meth:`Engine.execute`."""
        return self.spin.execute(task, *args, **kwargs)

    def schedule(self, task: TaskLike, *args: Any, **kwargs: Any) -> Job:
        """Schedule a job to run as soon as possible; see :meth:`Engine.schedule`."""
        return self.spin.schedule(task, *args, **kwargs)

    def schedule_at(self, task: TaskLike, at: datetime, *args: Any, **kwargs: Any) -> Job:
        """Schedule a job to run at ``at``; see :meth:`Engine.schedule_at`."""
        return self.spin.schedule_at(task, at, *args, **kwargs)

    def schedule_batch(self, batch: Batch) -> list[Job]:
        """Schedule every job of a batch at once; see :meth:`Engine.schedule_batch`."""
        return self.spin.schedule_batch(batch)

    def _app(self) -> Flask:
        if has_app_context():
            # current_app is typed as Flask but is a proxy: unwrap it to the app itself.
            app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]  # LocalProxy method
            if app in self._states:
                return app
        if self.app is not None:
            return self.app
        raise NotAttachedError(
            "No Flask app for Spinach: call this within the app context of an app "
            "initialised with spinach.init_app(app), or give the app to Spinach(app)"
        )

    def _state(self, app: Flask) -> _AppState:
        try:
            return self._states[app]
        except KeyError:
            raise NotAttachedError(
                f"Spinach is not initialised on app {app.name!r}: call spinach.init_app(app) first"
            ) from None


class _AppState:
    """The engine of one app, and the signal receivers wrapping its jobs."""

    def __init__(self, ext: Spinach, app: Flask, engine: Engine) -> None:
        self.ext = ext
        # A weak reference: the extension's WeakKeyDictionary maps the app to
        # this state, which must not keep the app alive.
        self.app_ref = weakref.ref(app)
        self.engine = engine
        self.contexts: dict[uuid.UUID, AppContext] = {}
        self.lock = threading.Lock()

    def connect(self) -> None:
        """Connect the receivers, replacing those of another app with this namespace."""
        namespace = self.engine.namespace
        previous = _connected.get(namespace)
        if previous is not None and previous is not self:
            previous.disconnect()
            logger.info(
                "Spinach namespace %r now serves a new Flask app; the previous app's "
                "workers no longer get an app context",
                namespace,
            )
        _connected[namespace] = self
        # Weak receivers (bound methods of this state): they go away with the app.
        signals.job_started.connect(self.on_job_started, sender=namespace)
        signals.job_finished.connect(self.on_job_finished, sender=namespace)
        signals.job_failed.connect(self.on_job_failed, sender=namespace)

    def disconnect(self) -> None:
        """Disconnect the receivers of this state."""
        namespace = self.engine.namespace
        signals.job_started.disconnect(self.on_job_started, sender=namespace)
        signals.job_finished.disconnect(self.on_job_finished, sender=namespace)
        signals.job_failed.disconnect(self.on_job_failed, sender=namespace)

    def on_job_started(self, namespace: str, job: Job) -> None:
        app = self.app_ref()
        if app is None:
            return
        ctx = app.app_context()
        ctx.push()
        with self.lock:
            self.contexts[job.id] = ctx
        self.ext.job_started(namespace, job)

    def on_job_finished(self, namespace: str, job: Job) -> None:
        with self.lock:
            ctx = self.contexts.pop(job.id, None)
        try:
            self.ext.job_finished(namespace, job)
        finally:
            if ctx is not None:
                ctx.pop()

    def on_job_failed(self, namespace: str, job: Job, err: BaseException) -> None:
        with self.lock:
            in_context = job.id in self.contexts
        app = self.app_ref()
        if in_context or app is None:
            self.ext.job_failed(namespace, job, err)
            return
        # Failed outside of a worker run (unknown task, dead worker): no context yet.
        with app.app_context():
            self.ext.job_failed(namespace, job, err)


@click.command("spinach")
@click.option(
    "--queue", default=const.DEFAULT_QUEUE, show_default=True, help="The queue to consume."
)
@click.option(
    "--threads",
    type=click.IntRange(min=1),
    default=const.DEFAULT_WORKER_NUMBER,
    show_default=True,
    help="How many jobs run at once.",
)
@click.option(
    "--stop-when-queue-empty",
    is_flag=True,
    default=False,
    help="Stop once the queue is empty instead of waiting for more jobs.",
)
@with_appcontext
def _spinach_command(queue: str, threads: int, stop_when_queue_empty: bool) -> None:
    """Run Spinach workers for this app until SIGINT or SIGTERM."""
    ext: Spinach = current_app.extensions["spinach"]
    ext.spin.start_workers(
        number=threads, queue=queue, block=True, stop_when_queue_empty=stop_when_queue_empty
    )
