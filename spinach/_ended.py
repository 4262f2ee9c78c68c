"""What a broker keeps of a job that ended for good: one definition for every broker.

A job that failed for good goes to the failed store; one that succeeded is
kept while its task keeps results. Either way the broker keeps a **record**,
one text::

    <outcome JSON> "\\n" <the job's stored payload, byte for byte>

The outcome is a JSON object, in this order of keys::

    {"status": 4, 5 or 6, "started": POSIX seconds or null, "ended": POSIX seconds,
     "error": [type, message, traceback] or null, "result": the value}

``result`` is there only for a job that succeeded keeping its result. A
cancelled job (status 6) is kept as long as failed jobs are, with the outcome
of :func:`cancelled_outcome`. The
outcome is built here, by the engine's side, so that a broker script only
joins it to the payload it holds: it never decodes either. JSON text holds no
raw newline, so the first one ends the outcome. The payload stays as the broker
stored it (a payload that could not be read is kept as it was).
"""

from __future__ import annotations

import json
import uuid
from datetime import datetime, timezone
from typing import Any, Callable

from .job import FINISHED, Job, JobError, JobInfo, JobStatus, _encode

__all__ = ["cancelled_outcome", "keeps_record", "outcome_of", "read_record", "split_record"]

#: Reads a payload back (raises ValueError when it cannot); the broker's own.
Unpack = Callable[[str, Any], Job]
#: The task name and queue of a payload that cannot be read, where they can still be read.
Salvage = Callable[[Any], "tuple[str, str]"]


def outcome_of(job: Job) -> str | None:
    """The outcome text kept of ``job``, which ended for good, or None when
    nothing is kept of it (it succeeded and its task keeps no result)."""
    if job.status is JobStatus.FAILED:
        error = job.error or JobError("spinach.exc.SpinachError", "failed", "")
        return _outcome(job, [error.type, error.message, error.traceback])
    if keeps_record(job) and job.result_json is not None:
        # Written out rather than encoded: every job of a task keeping results
        # pays for it. A float's repr is JSON (times are finite).
        started = "null" if job.started_at is None else repr(job.started_at.timestamp())
        ended = "null" if job.ended_at is None else repr(job.ended_at.timestamp())
        return (
            f'{{"status":{JobStatus.SUCCEEDED.value},"started":{started},"ended":{ended},'
            f'"error":null,"result":{job.result_json}}}'
        )
    return None


def cancelled_outcome(ended: datetime) -> str:
    """The outcome text kept of a job cancelled at ``ended``."""
    return _encode(
        {
            "status": JobStatus.CANCELLED.value,
            "started": None,
            "ended": ended.timestamp(),
            "error": None,
        }
    )


def keeps_record(job: Job) -> bool:
    """Whether ending ``job`` keeps a record of it (see :func:`outcome_of`)."""
    return job.status is JobStatus.FAILED or (
        job.status is JobStatus.SUCCEEDED
        and job.result_json is not None
        and job.keep_result is not None
    )


def _outcome(job: Job, error: list[str] | None) -> str:
    ended = job.ended_at.timestamp() if job.ended_at is not None else None
    started = job.started_at.timestamp() if job.started_at is not None else None
    return _encode({"status": job.status.value, "started": started, "ended": ended, "error": error})


def split_record(record: str | bytes) -> tuple[dict[str, Any], str | bytes]:
    """The outcome of a record, decoded, and its payload as stored.

    Raises:
        ValueError: the text is not a record.
    """
    newline = "\n" if isinstance(record, str) else b"\n"
    head, found, payload = record.partition(newline)  # type: ignore[arg-type]
    try:
        outcome = json.loads(head)
        status = JobStatus(outcome["status"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"not a record of an ended job ({e!r}): {record[:200]!r}") from e
    if not found or status not in FINISHED:
        raise ValueError(f"not a record of an ended job: {record[:200]!r}")
    return outcome, payload


def read_record(job_id: str, record: str | bytes, unpack: Unpack, salvage: Salvage) -> JobInfo:
    """The information of a job kept as ``record`` (see the module's docstring).

    A payload that cannot be read gives what ``salvage`` finds of it, with no
    arguments.

    Raises:
        ValueError: the text is not a record.
    """
    outcome, payload = split_record(record)
    ended = _time(outcome.get("ended"))
    error = outcome.get("error")
    fields: dict[str, Any] = {
        "started_at": _time(outcome.get("started")),
        "ended_at": ended,
        "error": JobError(*error) if error else None,
        "result": outcome.get("result"),
    }
    status = JobStatus(outcome["status"])
    try:
        return JobInfo.of_job(unpack(job_id, payload), status, **fields)
    except ValueError:
        task_name, queue = salvage(payload)
        at = ended or datetime.now(timezone.utc)
        return JobInfo(uuid.UUID(job_id), status, task_name, queue, at, 0, 0, (), {}, **fields)


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    return datetime.fromtimestamp(float(value), tz=timezone.utc)
