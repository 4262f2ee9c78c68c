"""Datadog APM integration: one span per job run, with its error if it raised.

Call :func:`register_datadog` once, where the workers start::

    from spinach.contrib.datadog import register_datadog

    register_datadog()

Spans are tagged ``spinach.job_id``, ``spinach.queue``, ``spinach.namespace``
and ``spinach.status`` (the job's status after the run), with the metrics
``spinach.retries`` (retries before the run) and ``spinach.max_retries``.
ddtrace is imported only when :func:`register_datadog` is called without a
tracer.
"""

from __future__ import annotations

import threading
import uuid
from typing import TYPE_CHECKING, Any, Callable

import blinker

from .. import signals
from ..job import Job

if TYPE_CHECKING:
    from ddtrace.trace import Span, Tracer

__all__ = ["register_datadog"]

# Name of the spans; their resource is the task name.
_SPAN_NAME = "spinach.task"
# ddtrace.ext.SpanTypes.WORKER
_SPAN_TYPE = "worker"
# Datadog's standard error tags (``ddtrace.constants``), spelled out so that a
# tracer given by the caller does not make this module import ddtrace.
_ERROR_TYPE = "error.type"
_ERROR_MSG = "error.message"


def register_datadog(
    tracer: Tracer | None = None,
    namespace: str | None = None,
    service: str = "spinach",
) -> Callable[[], None]:
    """Trace the jobs of one namespace, or of all, with Datadog.

    Each job run becomes a span named ``spinach.task`` whose resource is the
    task name, tagged with the job id, queue and retries, and marked with the
    exception of a run that raised. A job that failed or was retried without
    running here (unknown task, dead worker) gets a span of no duration with
    its error.

    Args:
        tracer: the ddtrace tracer; ``ddtrace.trace.tracer`` by default.
        namespace: trace only the engine of this namespace; all by default.
        service: the Datadog service of the spans.

    Returns:
        A function that stops the tracing of jobs when called (for tests, or
        before registering again with other settings).
    """
    if tracer is None:
        tracer = _global_tracer()
    receivers = _Receivers(tracer, service)
    sender: Any = blinker.ANY if namespace is None else namespace
    connections: list[tuple[signals.SafeNamedSignal, Callable[..., None]]] = [
        (signals.job_started, receivers.job_started),
        (signals.job_finished, receivers.job_finished),
        (signals.job_failed, receivers.job_error),
        (signals.job_schedule_retry, receivers.job_error),
    ]
    for signal, receiver in connections:
        # A strong reference: the receivers live as long as they are connected.
        signal.connect(receiver, sender=sender, weak=False)

    def disconnect() -> None:
        for signal, receiver in connections:
            signal.disconnect(receiver, sender=sender)

    return disconnect


def _global_tracer() -> Tracer:
    try:
        import ddtrace
    except ImportError as e:
        raise ImportError(
            "register_datadog() without a tracer uses ddtrace's global tracer, and ddtrace "
            "is not installed: install it with 'pip install spinach[datadog]'"
        ) from e
    try:
        from ddtrace.trace import tracer
    except ImportError:  # older ddtrace has no ddtrace.trace, only ddtrace.tracer
        tracer = ddtrace.tracer  # type: ignore[attr-defined]  # set by ddtrace/__init__.py, not in its __all__
    return tracer


class _Receivers:
    """Signal receivers keeping the span of each job run until it finishes."""

    def __init__(self, tracer: Tracer, service: str) -> None:
        self._tracer = tracer
        self._service = service
        # By job id, not thread-local: asyncio workers run many jobs on one thread.
        self._spans: dict[uuid.UUID, Span] = {}
        self._lock = threading.Lock()

    def job_started(self, namespace: str, job: Job, **kwargs: Any) -> None:
        # trace() activates the span in the worker's context, so that spans of
        # instrumented libraries the task uses become its children.
        span = self._tracer.trace(
            _SPAN_NAME, service=self._service, resource=job.task_name, span_type=_SPAN_TYPE
        )
        _tag(span, namespace, job)
        with self._lock:
            self._spans[job.id] = span

    def job_finished(self, namespace: str, job: Job, **kwargs: Any) -> None:
        with self._lock:
            span = self._spans.pop(job.id, None)
        if span is not None:
            span.set_tag("spinach.status", job.status.name)
            span.finish()

    def job_error(self, namespace: str, job: Job, err: BaseException, **kwargs: Any) -> None:
        with self._lock:
            span = self._spans.get(job.id)
        if span is not None:
            _set_error(span, err)
            return
        # Not run here: a span of its own, neither activated nor parented.
        span = self._tracer.start_span(
            _SPAN_NAME, service=self._service, resource=job.task_name, span_type=_SPAN_TYPE
        )
        _tag(span, namespace, job)
        _set_error(span, err)
        span.set_tag("spinach.status", job.status.name)
        span.finish()


def _tag(span: Span, namespace: str, job: Job) -> None:
    span.set_tag("component", "spinach")
    span.set_tag("span.kind", "consumer")
    span.set_tag("spinach.namespace", namespace)
    span.set_tag("spinach.job_id", str(job.id))
    span.set_tag("spinach.queue", job.queue)
    span.set_metric("spinach.retries", job.retries)
    span.set_metric("spinach.max_retries", job.max_retries)


def _set_error(span: Span, err: BaseException) -> None:
    span.set_exc_info(type(err), err, err.__traceback__)
    if not span.error:
        # set_exc_info skips an exception that was never raised (no traceback)
        # and SystemExit(0); for Spinach both still failed the run.
        span.error = 1
        span.set_tag(_ERROR_TYPE, f"{type(err).__module__}.{type(err).__qualname__}")
        span.set_tag(_ERROR_MSG, str(err))
