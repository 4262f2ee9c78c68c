"""How RedisBroker stores a job: a compact JSON array under its id.

``[task_name, queue, max_retries, retries, at, task_args, task_kwargs]``, then
the job's ``meta`` when it has entries;
``at`` in POSIX seconds. Redis holds one per stored job: about 40 bytes for a
job without arguments, where :meth:`Job.serialize` (which names every field
and repeats the id) gives about 150. The status is not stored: a stored job
is queued, or running once handed out.
"""

from __future__ import annotations

import json

from ...job import _UNREADABLE, Job, JobStatus, _encode, _job_of_fields

__all__ = ["pack", "salvage", "unpack"]

_decoder = json.JSONDecoder()


def pack(job: Job) -> bytes:
    """The stored form of ``job`` (ASCII JSON); its ``meta`` comes eighth, and
    only when it has entries."""
    fields = [
        job.task_name,
        job.queue,
        job.max_retries,
        job.retries,
        job.at.timestamp(),
        job.task_args,
        job.task_kwargs,
    ]
    if job.meta:
        fields.append(job.meta)
    return _encode(fields).encode()


def unpack(job_id: str, payload: bytes | str) -> Job:
    """The job stored as ``payload`` under ``job_id``, queued.

    Raises:
        ValueError: the payload is not a stored job.
    """
    try:
        fields = json.loads(payload)
        meta = fields.pop() if len(fields) == 8 else None
        task_name, queue, max_retries, retries, at, args, kwargs = fields
        return _job_of_fields(
            job_id, task_name, queue, max_retries, retries, at, args, kwargs, JobStatus.QUEUED, meta
        )
    except _UNREADABLE as e:
        raise ValueError(f"not a stored Spinach job ({e!r}): {payload[:200]!r}") from e


def salvage(payload: bytes | str) -> tuple[str, str]:
    """The task name and queue of a payload that :func:`unpack` refused, each
    where it can still be read, else empty."""
    fields: list[str] = []
    try:
        text = payload.decode() if isinstance(payload, bytes) else payload
        end = 0
        while len(fields) < 2 and text[end] in "[,":
            value, end = _decoder.raw_decode(text, end + 1)
            if not isinstance(value, str):
                break
            fields.append(value)
    except (ValueError, IndexError, RecursionError):
        pass
    fields += ["", ""]
    return fields[0], fields[1]
