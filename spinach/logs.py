"""Logs of jobs as JSON lines.

The workers' log records of a job (it starts, it succeeded, it will be
retried, it failed, it was stopped by a cancel) carry the job's fields as
record attributes, ``spinach_job_id``, ``spinach_task``, ``spinach_queue``,
``spinach_attempt``, ``spinach_duration`` (seconds, for an ended run) and
``spinach_outcome`` (``started``, ``succeeded``, ``retried``, ``failed``,
``cancelled``). :class:`JsonFormatter` writes each record as one JSON object
with them, and with the trace and span ids of the current OpenTelemetry span
when there is one. ``spinach worker --log-format json`` uses it.
"""

from __future__ import annotations

import json
import logging
from datetime import datetime, timezone
from typing import Any

from .job import Job

__all__ = ["JsonFormatter", "job_fields"]

#: The record attributes of a job's fields, and their keys in the JSON object.
_FIELDS = (
    ("spinach_job_id", "job_id"),
    ("spinach_task", "task"),
    ("spinach_queue", "queue"),
    ("spinach_attempt", "attempt"),
    ("spinach_duration", "duration"),
    ("spinach_outcome", "outcome"),
)


def job_fields(
    job: Job, attempt: int, outcome: str, duration: float | None = None
) -> dict[str, Any]:
    """The ``extra`` of a log record about a run of ``job`` (``attempt`` 1 for a first run)."""
    return {
        "spinach_job_id": job.id_text,
        "spinach_task": job.task_name,
        "spinach_queue": job.queue,
        "spinach_attempt": attempt,
        "spinach_duration": None if duration is None else round(duration, 6),
        "spinach_outcome": outcome,
    }


try:
    from opentelemetry import trace as _trace
except ImportError:  # no OpenTelemetry: no trace ids
    _trace = None  # type: ignore[assignment]


def _trace_ids() -> dict[str, str]:
    """The trace and span ids of the current OpenTelemetry span, when there is one."""
    if _trace is None:
        return {}
    context = _trace.get_current_span().get_span_context()
    if not context.is_valid:
        return {}
    return {"trace_id": f"{context.trace_id:032x}", "span_id": f"{context.span_id:016x}"}


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ``time`` (ISO 8601, UTC), ``level``,
    ``logger``, ``message``, ``process``, ``thread``; the job's fields when
    the record has them (``job_id``, ``task``, ``queue``, ``attempt``,
    ``duration``, ``outcome``); ``trace_id`` and ``span_id`` of the current
    OpenTelemetry span, if any; ``exception``, the traceback, if any."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, timezone.utc).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            "process": record.process,
            "thread": record.threadName,
        }
        for attribute, key in _FIELDS:
            if hasattr(record, attribute):
                line[key] = getattr(record, attribute)
        line.update(_trace_ids())
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False, default=str)
