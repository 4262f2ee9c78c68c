"""OpenTelemetry traces across the queue, with the official ``opentelemetry-api``.

:class:`SpinachInstrumentor` makes, for each job, a PRODUCER span where it is
scheduled and a CONSUMER span where it runs, in one trace: the scheduling
span's context travels in the job's :attr:`~spinach.job.Job.meta` (W3C
``traceparent`` and ``tracestate``; not baggage). Spans follow
the OpenTelemetry messaging semantic conventions: ``create <queue>`` and
``process <queue>``, with ``messaging.*`` attributes; a failed run that will
run again adds a ``retry`` event; a failure is recorded on the span. Without
an SDK configured, the API's spans are no-ops.

It needs the ``opentelemetry`` extra: ``pip install 'spinach[opentelemetry]'``.
"""

from __future__ import annotations

import threading
import time
from contextvars import Token
from typing import Any, Callable

from opentelemetry import context, trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .. import signals
from ..job import Job

__all__ = ["SpinachInstrumentor"]

#: ``messaging.system`` of Spinach's spans.
SYSTEM = "spinach"
#: The global tracer providers of the API alone: no span is recorded.
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
#: The job's meta carries the W3C trace context only (not baggage: the meta is small).
_PROPAGATOR = TraceContextTextMapPropagator()


class SpinachInstrumentor:
    """Trace the jobs scheduled and run in this process.

    Args:
        tracer_provider: where spans go; the global one unless given.
    """

    def __init__(self, tracer_provider: trace.TracerProvider | None = None) -> None:
        self._provider = tracer_provider
        self._sdk, self._look_again_at = False, 0.0
        self._tracer = trace.get_tracer("spinach", tracer_provider=tracer_provider)
        # The span of each running job of this process and the token of its
        # context, by id(job): started in job_started, ended in job_finished.
        self._running: dict[int, tuple[trace.Span, Token[Context]]] = {}
        self._lock = threading.Lock()
        self._receivers: list[tuple[signals.SafeNamedSignal, Callable[..., None]]] = [
            (signals.job_scheduling, self._on_scheduling),
            (signals.job_started, self._on_started),
            (signals.job_schedule_retry, self._on_retry),
            (signals.job_failed, self._on_failed),
            (signals.job_finished, self._on_finished),
        ]
        for signal, receiver in self._receivers:
            signal.connect(receiver, weak=False)

    def close(self) -> None:
        """Stop tracing jobs."""
        for signal, receiver in self._receivers:
            signal.disconnect(receiver)

    def _tracing(self) -> bool:
        """Whether spans are recorded: a provider was given, or an SDK's is set
        globally (looked at again every second: a no-op costs little then).
        Without one, every receiver returns at once."""
        if self._provider is not None:
            return True
        now = time.monotonic()
        if now >= self._look_again_at:
            self._sdk = not isinstance(trace.get_tracer_provider(), _NO_SDK)
            self._look_again_at = now + 1.0
        return self._sdk

    @staticmethod
    def _attributes(namespace: str, job: Job, operation: str) -> dict[str, Any]:
        return {
            "messaging.system": SYSTEM,
            "messaging.operation.name": operation,
            "messaging.operation.type": operation,
            "messaging.destination.name": job.queue,
            "messaging.message.id": job.id_text,
            "spinach.namespace": namespace,
            "spinach.task": job.task_name,
        }

    def _on_scheduling(self, namespace: str, job: Job, **kwargs: Any) -> None:
        if not self._tracing():
            return
        # One "create" span per job: its context is the job's creation context.
        with self._tracer.start_as_current_span(
            f"create {job.queue}",
            kind=SpanKind.PRODUCER,
            attributes=self._attributes(namespace, job, "create"),
        ):
            _PROPAGATOR.inject(job.meta)

    def _on_started(self, namespace: str, job: Job, **kwargs: Any) -> None:
        if not self._tracing():
            return
        created = _PROPAGATOR.extract(job.meta)
        creation = trace.get_current_span(created).get_span_context()
        links = [Link(creation)] if creation.is_valid else []
        attributes = self._attributes(namespace, job, "process")
        attributes["spinach.job.retries"] = job.retries
        span = self._tracer.start_span(
            f"process {job.queue}",
            context=created,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
        )
        # Current while the task runs, so that its own spans are children of it.
        token = context.attach(trace.set_span_in_context(span, context.get_current()))
        with self._lock:
            self._running[id(job)] = (span, token)

    def _span_of(self, job: Job) -> trace.Span | None:
        if not self._running:
            return None
        with self._lock:
            running = self._running.get(id(job))
        return None if running is None else running[0]

    def _on_retry(self, namespace: str, job: Job, err: BaseException, **kwargs: Any) -> None:
        span = self._span_of(job)
        if span is not None:
            span.add_event(
                "retry",
                {
                    "spinach.job.retries": job.retries,
                    "spinach.job.at": job.at.isoformat(),
                    "exception.type": type(err).__qualname__,
                    "exception.message": str(err),
                },
            )

    def _on_failed(self, namespace: str, job: Job, err: BaseException, **kwargs: Any) -> None:
        span = self._span_of(job)
        if span is not None:
            span.record_exception(err)
            span.set_status(Status(StatusCode.ERROR, f"{type(err).__qualname__}: {err}"))

    def _on_finished(self, namespace: str, job: Job, **kwargs: Any) -> None:
        if not self._running:
            return
        with self._lock:
            running = self._running.pop(id(job), None)
        if running is None:
            return
        span, token = running
        span.set_attribute("spinach.job.status", job.status.name)
        span.end()
        context.detach(token)
