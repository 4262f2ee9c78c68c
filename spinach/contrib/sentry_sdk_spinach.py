"""Sentry integration: one transaction per job run, and its errors captured.

Enable it like any sentry-sdk 2 integration::

    sentry_sdk.init(dsn=..., integrations=[SpinachIntegration()])

Each job run gets its own isolation scope, so tags, breadcrumbs and errors
captured by the task stay with its job, and one transaction named after the
task, whose status is ``ok`` if the run succeeded, else ``internal_error``.
Events are tagged ``spinach.job_id``, ``spinach.task``, ``spinach.queue``,
``spinach.namespace`` and ``spinach.retries`` (retries before the run), with
a ``spinach`` context (and the task arguments if ``send_default_pii`` is on).
A job that fails for good is captured, even one the engine could not run
(unknown task, dead worker); a run that will be retried is captured only
with ``send_retries=True``.

The ``spinach.worker`` logger, which logs the outcome of every job, is kept
out of Sentry's logging integration: its errors are the ones captured here.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from typing import Any, Callable

import attrs
import sentry_sdk
from sentry_sdk.integrations import Integration
from sentry_sdk.integrations.logging import ignore_logger
from sentry_sdk.tracing import NoOpSpan, Transaction
from sentry_sdk.utils import event_from_exception

from .. import signals
from ..job import Job, JobStatus

try:
    from sentry_sdk.tracing_utils import has_span_streaming_enabled
except ImportError:  # sentry-sdk releases before span streaming; they always send transactions

    def has_span_streaming_enabled(options: dict[str, Any] | None) -> bool:
        return False


__all__ = ["SpinachIntegration"]

# Operation of the transactions, like the queue.task.<library> of other integrations.
_OP = "queue.task.spinach"
_ORIGIN = "auto.queue.spinach"
# Transaction names are task names (TransactionSource.TASK of recent sentry-sdk).
_SOURCE = "task"


class SpinachIntegration(Integration):
    """Reports Spinach jobs to Sentry.

    Args:
        send_retries: also capture the errors of runs that will be retried,
            not only of jobs that failed for good.
    """

    identifier = "spinach"
    origin = _ORIGIN

    def __init__(self, send_retries: bool = False) -> None:
        self.send_retries = send_retries

    @staticmethod
    def setup_once() -> None:
        # Spinach logs each job failure at ERROR there, with the traceback: the
        # logging integration would send every failure a second time.
        ignore_logger("spinach.worker")
        # Receivers of every namespace; they do nothing unless the current
        # client has this integration enabled.
        for signal, receiver in _RECEIVERS:
            signal.connect(receiver, weak=False)


@attrs.frozen
class _Run:
    """What stays open during a job run, closed when it finishes."""

    exit_stack: contextlib.ExitStack
    transaction: Transaction | NoOpSpan | None


# Runs in progress by job id: asyncio workers run many jobs on one thread, so
# this cannot be thread-local. Each entry is added and removed by the thread
# or coroutine running the job, within its own contextvars context.
_runs: dict[uuid.UUID, _Run] = {}
_runs_lock = threading.Lock()


def _integration() -> SpinachIntegration | None:
    return sentry_sdk.get_client().get_integration(SpinachIntegration)


def _describe(scope: sentry_sdk.Scope, namespace: str, job: Job) -> None:
    """Tag ``scope`` with the job, so that every event of the run names it."""
    scope.set_tag("spinach.task", job.task_name)
    scope.set_tag("spinach.queue", job.queue)
    scope.set_tag("spinach.namespace", namespace)
    scope.set_tag("spinach.job_id", str(job.id))
    scope.set_tag("spinach.retries", str(job.retries))
    context: dict[str, Any] = {
        "job_id": str(job.id),
        "task_name": job.task_name,
        "queue": job.queue,
        "namespace": namespace,
        "retries": job.retries,
        "max_retries": job.max_retries,
        "at": job.at.isoformat(),
    }
    if sentry_sdk.get_client().should_send_default_pii():
        context["task_args"] = job.task_args
        context["task_kwargs"] = job.task_kwargs
    scope.set_context("spinach", context)


def _on_job_started(namespace: str, job: Job, **kwargs: Any) -> None:
    if _integration() is None:
        return
    # Closed here only if opening the run fails; else at job_finished.
    with contextlib.ExitStack() as stack:
        scope = stack.enter_context(sentry_sdk.isolation_scope())
        # A forked scope inherits the breadcrumbs of whatever ran before in this thread.
        scope.clear_breadcrumbs()
        _describe(scope, namespace, job)
        scope.set_transaction_name(job.task_name, source=_SOURCE)
        transaction: Transaction | NoOpSpan | None = None
        # In span streaming mode the transaction API is not available (it warns).
        if not has_span_streaming_enabled(sentry_sdk.get_client().options):
            transaction = sentry_sdk.start_transaction(
                op=_OP, name=job.task_name, source=_SOURCE, origin=_ORIGIN
            )
            transaction.set_data("messaging.message.id", str(job.id))
            transaction.set_data("messaging.destination.name", job.queue)
            transaction.set_data("messaging.message.retry.count", job.retries)
            stack.enter_context(transaction)
        run = _Run(stack.pop_all(), transaction)
    with _runs_lock:
        _runs[job.id] = run


def _on_job_finished(namespace: str, job: Job, **kwargs: Any) -> None:
    # No check of the integration: a run opened while it was enabled is closed.
    with _runs_lock:
        run = _runs.pop(job.id, None)
    if run is None:
        return
    if run.transaction is not None:
        run.transaction.set_status("ok" if job.status is JobStatus.SUCCEEDED else "internal_error")
    run.exit_stack.close()


def _capture(namespace: str, job: Job, err: BaseException) -> None:
    client = sentry_sdk.get_client()
    event, hint = event_from_exception(
        err, client_options=client.options, mechanism={"type": "spinach", "handled": False}
    )
    with _runs_lock:
        running = job.id in _runs
    if running:
        # Sent by the worker during the run: the current scope is the job's.
        sentry_sdk.capture_event(event, hint=hint)
        return
    # The job did not run here (unknown task, dead worker): a scope of its own.
    with sentry_sdk.isolation_scope() as scope:
        _describe(scope, namespace, job)
        scope.set_transaction_name(job.task_name, source=_SOURCE)
        sentry_sdk.capture_event(event, hint=hint)


def _on_job_failed(namespace: str, job: Job, err: BaseException, **kwargs: Any) -> None:
    if _integration() is not None:
        _capture(namespace, job, err)


def _on_job_schedule_retry(namespace: str, job: Job, err: BaseException, **kwargs: Any) -> None:
    integration = _integration()
    if integration is not None and integration.send_retries:
        _capture(namespace, job, err)


_RECEIVERS: tuple[tuple[signals.SafeNamedSignal, Callable[..., None]], ...] = (
    (signals.job_started, _on_job_started),
    (signals.job_finished, _on_job_finished),
    (signals.job_failed, _on_job_failed),
    (signals.job_schedule_retry, _on_job_schedule_retry),
)
