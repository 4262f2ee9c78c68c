"""The ``spinach`` command (also ``python -m spinach``), built with Click.

- ``spinach doctor TARGET [--json]`` checks a Redis server (every master of a
  Redis Cluster, the master of a Sentinel service), and an engine's tasks,
  against the production checklist. Exit status: 0 when no check fails
  (warnings allowed), 1 when a check fails, 2 when TARGET cannot be used.
- ``spinach worker TARGET [--threads N] [--asyncio] [--queue Q] [--processes N]
  [--stop-when-empty] [--grace-period S] [--log-level L]`` runs the workers of
  an engine, in this process or under a supervisor of N worker processes (see
  :mod:`spinach._worker_command`). Exit status: 0 after a graceful stop, 1
  when the worker processes could not start or a supervisor stopped them at
  once, 2 when TARGET cannot be used or its tasks do not suit the workers.

- ``spinach jobs show|failed|requeue|cancel|purge TARGET ...`` looks at jobs by
  id and at the failed store, and steers them (see :mod:`spinach._jobs_command`).
  Exit status: 0 when done, 1 when a job is not found, 2 when TARGET cannot be
  used.

TARGET is a Redis URL of any form that ``RedisBroker.from_url`` takes
(``redis://``, ``rediss://``, ``unix://``, ``redis+cluster://``,
``redis+sentinel://``...), with ``--namespace`` for ``jobs``, or the import
path of an :class:`~spinach.engine.Engine` (``myapp.tasks:spin``); ``worker``
needs an engine. The command needs the ``cli`` extra (``pip install 'spinach[cli]'``).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
from collections.abc import Sequence
from typing import Any

import redis

from . import const
from .brokers.redis.url import SCHEMES
from .doctor import Target, TargetError, diagnose
from .engine import Engine

__all__ = ["load_target", "main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
#: Interrupted (Ctrl-C), as a shell reports a process that SIGINT ended.
EXIT_INTERRUPTED = 130
_URL_FORMS = ", ".join(f"{scheme}://" for scheme in SCHEMES)
_LOG_LEVELS = ["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"]


def load_target(text: str) -> Target:
    """A URL as it is, or the Engine an import path ``module:attribute`` names.

    Any ``scheme://`` text is a URL: :func:`~spinach.doctor.diagnose` reads it
    as ``RedisBroker.from_url`` does, and says what to write instead of a
    scheme that neither takes.

    Raises:
        TargetError: ``text`` is neither, or its module cannot be imported.
    """
    if "://" in text:
        return text
    module_name, colon, attribute = text.partition(":")
    if not colon or not module_name or not attribute:
        raise TargetError(
            f"{text!r} is neither a Redis URL ({_URL_FORMS}) nor the import path of an "
            "Engine (module:attribute, e.g. myapp.tasks:spin)"
        )
    # As `python -m` does, so that `spinach doctor myapp.tasks:spin` finds myapp here.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise TargetError(
            f"Cannot import module {module_name!r}: {type(e).__name__}: {e}"
        ) from None
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise TargetError(f"Module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(value, Engine):
        raise TargetError(
            f"{text!r} is a {type(value).__name__}, not a spinach Engine: name the Engine "
            "whose tasks and namespace to use"
        )
    return value


def _doctor(target: str, as_json: bool) -> int:
    try:
        report = diagnose(load_target(target))
    except TargetError as e:
        # The message names the target, without the password a URL may hold.
        print(f"spinach doctor: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        print(report.to_json() if as_json else report.to_text(), flush=True)
    except BrokenPipeError:
        # The reader left early (`| head`): keep the exit status, and silence
        # the flush at exit as the Python documentation advises.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_FAILED if report.failed else EXIT_OK


def _worker(target: str, options: dict[str, Any]) -> int:
    from . import _worker_command as command

    logging.basicConfig(
        level=options["log_level"].upper(),
        format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s",
    )
    if options["log_format"] == "json":
        from .logs import JsonFormatter

        for handler in logging.getLogger().handlers:
            handler.setFormatter(JsonFormatter())
    try:
        engine = load_target(target)
        if not isinstance(engine, Engine):
            raise TargetError(
                f"a worker runs an engine's tasks: give its import path (myapp.tasks:spin), "
                f"not a Redis URL ({target.partition('://')[0]}://...)"
            )
    except TargetError as e:
        print(f"spinach worker: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    from .exc import InvalidTaskTypeError
    from .worker import AsyncioWorkers, ThreadWorkers

    workers_class = AsyncioWorkers if options["use_asyncio"] else ThreadWorkers
    try:
        engine._check_task_kinds(options["queue"], workers_class)
    except InvalidTaskTypeError as e:
        hint = "drop --asyncio" if options["use_asyncio"] else "add --asyncio"
        print(
            f"spinach worker: {e} (here: {hint}, or give another --queue)",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    metrics_port, metrics_host = options["metrics_port"], options["metrics_host"]
    if metrics_port is not None or options["metrics_child"]:
        try:
            from .contrib import prometheus
        except ImportError:
            print(
                "spinach worker: --metrics-port needs prometheus_client: "
                "pip install 'spinach[prometheus]'",
                file=sys.stderr,
            )
            return EXIT_UNUSABLE
    processes = options["processes"]
    if processes > 1 and options["supervised"] is None:
        argv = ["worker", target, "--processes", "1", "--log-level", options["log_level"]]
        argv += ["--log-format", options["log_format"]]
        argv += ["--threads", str(options["threads"]), "--queue", options["queue"]]
        if options["use_asyncio"]:
            argv.append("--asyncio")
        if options["stop_when_empty"]:
            argv.append("--stop-when-empty")
        if options["grace_period"] is not None:
            argv += ["--grace-period", repr(options["grace_period"])]
        metrics_dir = server = None
        if metrics_port is not None:
            # Each worker process writes its metrics there, and this one serves their sums.
            metrics_dir = tempfile.mkdtemp(prefix="spinach-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            argv.append("--metrics-child")
            try:
                server = prometheus.serve_metrics(
                    engine, metrics_host, metrics_port, multiprocess_dir=metrics_dir
                )
            except OSError as e:
                shutil.rmtree(metrics_dir, ignore_errors=True)
                print(f"spinach worker: cannot serve metrics: {e}", file=sys.stderr)
                return EXIT_UNUSABLE
            logging.getLogger("spinach.worker").info(
                "Serving the metrics of %d worker processes on http://%s:%d/metrics",
                processes,
                metrics_host,
                server.server_port,
            )
        supervisor = command.Supervisor(
            command.worker_command(argv), processes, stop_when_empty=options["stop_when_empty"]
        )
        try:
            return supervisor.run()
        finally:
            if server is not None:
                server.shutdown()
            if metrics_dir is not None:
                shutil.rmtree(metrics_dir, ignore_errors=True)
    if options["metrics_child"]:
        # Written to the supervisor's PROMETHEUS_MULTIPROC_DIR; it reads the broker itself.
        with contextlib.suppress(ValueError):  # the application made its own already
            prometheus.SpinachMetrics(engine=engine, gauges=False)
    elif metrics_port is not None:
        try:
            server = prometheus.serve_metrics(engine, metrics_host, metrics_port)
        except OSError as e:
            print(f"spinach worker: cannot serve metrics: {e}", file=sys.stderr)
            return EXIT_UNUSABLE
        logging.getLogger("spinach.worker").info(
            "Serving metrics on http://%s:%d/metrics", metrics_host, server.server_port
        )
    ready_fd = lifeline_fd = None
    if options["supervised"] is not None:
        ready_fd, lifeline_fd = (int(fd) for fd in options["supervised"].split(","))
    command.run_worker(
        engine,
        threads=options["threads"],
        workers_class=workers_class,
        queue=options["queue"],
        stop_when_empty=options["stop_when_empty"],
        grace_period=options["grace_period"],
        ready_fd=ready_fd,
        lifeline_fd=lifeline_fd,
    )
    return EXIT_OK


def _engine_of(target: str, namespace: str | None) -> Engine:
    """The engine of a ``jobs`` command: one on the broker of a URL, or the
    application's.

    Raises:
        TargetError: TARGET cannot be used, or ``namespace`` comes with an engine.
    """
    from .brokers.redis import RedisBroker
    from .exc import ConfigurationError

    if "://" in target:
        try:
            broker = RedisBroker.from_url(target)
        except (ConfigurationError, ValueError) as e:
            raise TargetError(str(e)) from None
        return Engine(broker, namespace or const.DEFAULT_NAMESPACE)
    engine = load_target(target)
    assert isinstance(engine, Engine)
    if namespace is not None and namespace != engine.namespace:
        raise TargetError(
            f"--namespace {namespace!r} is for a Redis URL: the engine {target} has its own "
            f"namespace, {engine.namespace!r}"
        )
    return engine


def _on_engine(command: str, target: str, namespace: str | None, run: Any) -> int:
    """Run ``run(engine)`` for ``spinach COMMAND`` (``inspect``, ``jobs show``...);
    its errors become exit statuses."""
    from .brokers.redis import RedisBroker
    from .exc import SpinachError

    try:
        engine = _engine_of(target, namespace)
    except TargetError as e:
        print(f"spinach {command}: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        status: int = run(engine)
        return status
    except BrokenPipeError:
        # The reader left early (`| head`), as for doctor.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (SpinachError, redis.RedisError, OSError) as e:
        print(
            f"spinach {command}: {type(e).__name__}: {e}; check TARGET and that the "
            "broker is reachable",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    finally:
        if isinstance(engine.broker, RedisBroker) and "://" in target:
            engine.broker.close()


def _dashboard(target: str, namespace: str | None, host: str, port: int, read_only: bool) -> int:
    """Serve the dashboard until SIGINT or SIGTERM."""
    try:
        from werkzeug.serving import make_server

        from .dashboard import Dashboard
    except ImportError as e:
        print(f"spinach dashboard: {e}", file=sys.stderr)
        return EXIT_UNUSABLE

    def run(engine: Engine) -> int:
        app = Dashboard(engine, read_only=read_only)
        try:
            server = make_server(host, port, app, threaded=True)
        except OSError as e:
            print(f"spinach dashboard: cannot listen on {host}:{port}: {e}", file=sys.stderr)
            return EXIT_UNUSABLE

        def stop(signum: int, frame: object) -> None:
            raise KeyboardInterrupt

        previous = signal.getsignal(signal.SIGTERM)
        shown = f"[{host}]" if ":" in host else host
        try:
            signal.signal(signal.SIGTERM, stop)
            print(
                f"Spinach dashboard of namespace {engine.namespace!r} on "
                f"http://{shown}:{server.server_port}/ (Ctrl-C to stop)",
                flush=True,
            )
            server.serve_forever()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)
            server.server_close()
        return EXIT_OK

    return _on_engine("dashboard", target, namespace, run)


def _commands() -> Any:
    """The Click group of the command (Click is imported only when it runs)."""
    import click

    from . import _jobs_command as jobs_text

    target_help = f"a Redis URL ({_URL_FORMS}) or an Engine's import path (myapp.tasks:spin)"

    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    def spinach() -> None:
        """Spinach task queue tools."""

    @spinach.command(
        help=(
            "Check a Redis server (every master of a Redis Cluster, the master of a "
            "Sentinel service), and an engine's tasks, against the production checklist. "
            "Exit status: 0 when no check fails (warnings allowed), 1 when a check fails, "
            "2 when TARGET cannot be used.\n\nTARGET: " + target_help + "."
        )
    )
    @click.argument("target")
    @click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
    def doctor(target: str, as_json: bool) -> int:
        return _doctor(target, as_json)

    @spinach.command(
        help=(
            "Run the workers of an engine until SIGINT or SIGTERM (a second signal stops "
            "at once). With --processes N, N worker processes run under a supervisor that "
            "restarts one that dies. Exit status: 0 after a graceful stop, 1 when the "
            "worker processes could not start or were stopped at once, 2 when TARGET "
            "cannot be used or its tasks do not suit the workers.\n\nTARGET: an "
            "Engine's import path (myapp.tasks:spin)."
        )
    )
    @click.argument("target")
    @click.option(
        "--threads",
        type=click.IntRange(min=1),
        default=const.DEFAULT_WORKER_NUMBER,
        show_default=True,
        help="Workers per process: threads, or concurrent jobs with --asyncio.",
    )
    @click.option("--asyncio", "use_asyncio", is_flag=True, help="Run AsyncioWorkers.")
    @click.option("--queue", default=const.DEFAULT_QUEUE, show_default=True, help="The queue.")
    @click.option(
        "--processes",
        type=click.IntRange(min=1),
        default=1,
        show_default=True,
        help="Worker processes; above 1, this process supervises them.",
    )
    @click.option("--stop-when-empty", is_flag=True, help="Stop once the queue is empty.")
    @click.option(
        "--grace-period",
        type=click.FloatRange(min=0),
        default=None,
        help="Seconds a stop waits for running jobs before giving them up (default: no end).",
    )
    @click.option(
        "--log-level",
        type=click.Choice(_LOG_LEVELS, case_sensitive=False),
        default="INFO",
        show_default=True,
    )
    @click.option(
        "--log-format",
        type=click.Choice(["text", "json"]),
        default="text",
        show_default=True,
        help="json: one JSON object per line, with the job's fields and trace id.",
    )
    @click.option(
        "--metrics-port",
        type=click.IntRange(0, 65535),
        default=None,
        help="Serve Prometheus metrics on this port (/metrics); needs the prometheus extra.",
    )
    @click.option(
        "--metrics-host", default="127.0.0.1", show_default=True, help="Address of --metrics-port."
    )
    @click.option("--supervised", hidden=True, default=None)
    @click.option("--metrics-child", hidden=True, is_flag=True)
    def worker(target: str, **options: Any) -> int:
        return _worker(target, options)

    namespace_option = click.option(
        "--namespace",
        default=None,
        help=f"The namespace, with a Redis URL TARGET (default: {const.DEFAULT_NAMESPACE}).",
    )
    json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON.")

    @spinach.command(
        help=(
            "Show what a namespace holds: per queue, its ready, held-back (by a concurrency "
            "or rate limit), future and running jobs; the live workers (id, host, pid, "
            "running jobs, last heartbeat); the failed count. TARGET: a Redis URL "
            f"({_URL_FORMS}) with --namespace, or an Engine's import path (myapp.tasks:spin)."
        )
    )
    @click.argument("target")
    @namespace_option
    @json_option
    def inspect(target: str, namespace: str | None, as_json: bool) -> int:
        from . import _inspect_command

        def run(engine: Engine) -> int:
            inspection = engine.broker.inspect()
            now = engine.broker.clock.time()
            if as_json:
                values = _inspect_command.inspection_json(engine.namespace, inspection, now)
                click.echo(json.dumps(values))
            else:
                text = _inspect_command.inspection_text(engine.namespace, inspection, now)
                click.echo(text, nl=False)
            return EXIT_OK

        return _on_engine("inspect", target, namespace, run)

    @spinach.command(
        help=(
            "Serve the web dashboard of a namespace: queues, workers, jobs per minute, "
            "each job by id, the failed jobs; cancel, requeue and purge (unless "
            "--read-only). It listens on 127.0.0.1 unless --host says otherwise; it has "
            "no login of its own, so put it behind one before serving other hosts. "
            f"TARGET: a Redis URL ({_URL_FORMS}) with --namespace, or an Engine's import "
            "path (myapp.tasks:spin)."
        )
    )
    @click.argument("target")
    @namespace_option
    @click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
    @click.option(
        "--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="0: any."
    )
    @click.option("--read-only", is_flag=True, help="Show only: no cancel, requeue or purge.")
    def dashboard(target: str, namespace: str | None, host: str, port: int, read_only: bool) -> int:
        return _dashboard(target, namespace, host, port, read_only)

    @spinach.group(
        help=(
            "Look at jobs by id and at the failed store, and steer them. TARGET: a Redis "
            f"URL ({_URL_FORMS}) with --namespace, or an Engine's import path "
            "(myapp.tasks:spin)."
        )
    )
    def jobs() -> None:
        pass

    @jobs.command(help="Show a job: status, arguments, error with its traceback, result.")
    @click.argument("target")
    @click.argument("job_id")
    @namespace_option
    @json_option
    def show(target: str, job_id: str, namespace: str | None, as_json: bool) -> int:
        def run(engine: Engine) -> int:
            info = engine.get_job(job_id)
            if info is None:
                print(
                    f"spinach jobs show: no job {job_id} in namespace {engine.namespace!r} "
                    "(ended jobs are kept only while their result or failure is)",
                    file=sys.stderr,
                )
                return EXIT_FAILED
            text = jobs_text.info_json(info) if as_json else jobs_text.info_text(info)
            click.echo(json.dumps(text) if as_json else text, nl=as_json)
            return EXIT_OK

        return _on_engine("jobs show", target, namespace, run)

    @jobs.command(help="List the failed jobs, the latest failure first.")
    @click.argument("target")
    @namespace_option
    @click.option("--limit", type=click.IntRange(min=1), default=20, show_default=True)
    @click.option("--offset", type=click.IntRange(min=0), default=0, show_default=True)
    @json_option
    def failed(target: str, namespace: str | None, limit: int, offset: int, as_json: bool) -> int:
        def run(engine: Engine) -> int:
            infos = engine.failed_jobs(limit, offset)
            if as_json:
                click.echo(json.dumps([jobs_text.info_json(info) for info in infos]))
                return EXIT_OK
            total = engine.broker.count_jobs().failed
            rows = [jobs_text.failed_row(info) for info in infos]
            click.echo(jobs_text.table(jobs_text.FAILED_HEADERS, rows))
            click.echo(f"{len(rows)} shown of {total} failed job(s)")
            return EXIT_OK

        return _on_engine("jobs failed", target, namespace, run)

    def every_failed(
        engine: Engine, action: str, operate: Any, label: str
    ) -> int:  # with a progress bar on a terminal
        total = engine.broker.count_jobs().failed
        with click.progressbar(length=total, label=label, file=sys.stderr) as bar:
            done = jobs_text.on_every_failed(engine.failed_jobs, operate, bar.update, total)
        click.echo(f"{action} {done} job(s)")
        return EXIT_OK

    def some_or_all(job_ids: tuple[str, ...], every: bool) -> None:
        if bool(job_ids) == every:
            raise click.UsageError("give job ids, or --all (not both)")

    def on_failed_store(name: str, help: str, method: str, done: str, doing: str) -> None:
        """A command taking failed jobs by id or --all through an Engine method."""

        @jobs.command(name=name, help=help)
        @click.argument("target")
        @click.argument("job_ids", nargs=-1)
        @click.option("--all", "every", is_flag=True, help="Every failed job.")
        @namespace_option
        def command(
            target: str, job_ids: tuple[str, ...], every: bool, namespace: str | None
        ) -> int:
            some_or_all(job_ids, every)

            def run(engine: Engine) -> int:
                operate = getattr(engine, method)
                if every:
                    return every_failed(engine, done, operate, doing)
                click.echo(f"{done} {operate(job_ids)} job(s)")
                return EXIT_OK

            return _on_engine(f"jobs {name}", target, namespace, run)

    on_failed_store(
        "requeue",
        "Queue failed jobs again (same ids, retries reset).",
        "requeue_failed",
        "Requeued",
        "Requeuing",
    )
    on_failed_store("purge", "Forget failed jobs.", "purge_failed", "Purged", "Purging")

    @jobs.command(help="Cancel a waiting, queued or running job.")
    @click.argument("target")
    @click.argument("job_id")
    @namespace_option
    def cancel(target: str, job_id: str, namespace: str | None) -> int:
        def run(engine: Engine) -> int:
            if engine.cancel(job_id):
                click.echo(f"Cancelled {job_id}")
                return EXIT_OK
            print(
                f"spinach jobs cancel: no job {job_id} to cancel in namespace "
                f"{engine.namespace!r}: unknown, or already ended",
                file=sys.stderr,
            )
            return EXIT_FAILED

        return _on_engine("jobs cancel", target, namespace, run)

    return spinach


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``spinach`` command; return its exit status."""
    try:
        import click
    except ImportError:
        print(
            "spinach: the spinach command needs Click: pip install 'spinach[cli]'",
            file=sys.stderr,
        )
        return EXIT_UNUSABLE
    try:
        result = _commands().main(
            args=list(sys.argv[1:] if argv is None else argv),
            prog_name="spinach",
            standalone_mode=False,
        )
    except click.exceptions.Exit as e:
        return int(e.exit_code)
    except click.ClickException as e:
        e.show()
        return int(e.exit_code)
    except click.Abort:
        return EXIT_INTERRUPTED
    return int(result) if isinstance(result, int) else EXIT_OK
