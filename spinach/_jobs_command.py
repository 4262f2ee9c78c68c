"""``spinach jobs``: look at jobs by id and at the failed store, and steer them.

Everything goes through the public :class:`~spinach.engine.Engine` methods
(``get_job``, ``failed_jobs``, ``requeue_failed``, ``purge_failed``,
``cancel``), so it works on any broker. Output is a human table or text by
default, JSON with ``--json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from .job import JobInfo

__all__ = ["FAILED_HEADERS", "failed_row", "info_json", "info_text", "on_every_failed", "table"]

#: Failed jobs read per page by the operations on all of them.
PAGE = 1000


def _when(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def info_json(info: JobInfo) -> dict[str, Any]:
    """A job's information as JSON-ready values."""
    return {
        "id": str(info.id),
        "status": info.status.name,
        "task": info.task_name,
        "queue": info.queue,
        "at": _when(info.at),
        "retries": info.retries,
        "max_retries": info.max_retries,
        "args": list(info.task_args),
        "kwargs": info.task_kwargs,
        "started_at": _when(info.started_at),
        "ended_at": _when(info.ended_at),
        "error": None
        if info.error is None
        else {
            "type": info.error.type,
            "message": info.error.message,
            "traceback": info.error.traceback,
        },
        "result": info.result,
        "meta": info.meta,
    }


def info_text(info: JobInfo) -> str:
    """A job's information as lines of ``field: value``, then its traceback."""
    values = info_json(info)
    lines = [
        f"{name}: {json.dumps(values[key]) if key in ('args', 'kwargs', 'result') else values[key]}"
        for name, key in [
            ("id", "id"),
            ("status", "status"),
            ("task", "task"),
            ("queue", "queue"),
            ("at", "at"),
            ("retries", "retries"),
            ("max retries", "max_retries"),
            ("args", "args"),
            ("kwargs", "kwargs"),
            ("started at", "started_at"),
            ("ended at", "ended_at"),
        ]
    ]
    if info.meta:
        lines.append(f"meta: {json.dumps(info.meta, ensure_ascii=False, sort_keys=True)}")
    if info.error is not None:
        lines += [f"error: {info.error.type}: {info.error.message}", "", info.error.traceback]
    elif info.result is not None:
        lines.append(f"result: {json.dumps(info.result)}")
    return "\n".join(lines).rstrip() + "\n"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Rows under their headers, in columns as wide as their widest cell."""
    widths = [max([len(h), *(len(row[i]) for row in rows)]) for i, h in enumerate(headers)]
    lines = [headers, ["-" * w for w in widths], *rows]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in lines)


def failed_row(info: JobInfo, message_width: int = 60) -> list[str]:
    error = "" if info.error is None else f"{info.error.type}: {info.error.message}"
    error = error.replace("\n", " ")
    if len(error) > message_width:
        error = error[: message_width - 3] + "..."
    return [
        str(info.id),
        info.task_name,
        info.queue,
        "" if info.ended_at is None else info.ended_at.strftime("%Y-%m-%d %H:%M:%S"),
        str(info.retries),
        error,
    ]


FAILED_HEADERS = ["ID", "TASK", "QUEUE", "FAILED AT (UTC)", "RETRIES", "ERROR"]


def on_every_failed(
    read_page: Callable[[int, int], list[JobInfo]],
    operate: Callable[[list[str]], int],
    progress: Callable[[int], object],
    total: int,
) -> int:
    """Apply ``operate`` (requeue, purge: it takes jobs out of the failed store)
    once to each of the ``total`` jobs the failed store held when the walk
    began, a page at a time (``read_page(limit, offset)``), telling
    ``progress`` how many each page did; return how many in all.

    Jobs that fail again meanwhile come back at the head of the store: each id
    is taken once, those seen are stepped over, and the walk ends at the end
    of the store or once ``total`` were done."""
    seen: set[str] = set()
    done = skip = 0
    while done < total:
        ids = [str(info.id) for info in read_page(PAGE, skip)]
        if not ids:
            break
        fresh = [job_id for job_id in ids if job_id not in seen][: total - done]
        skip += len(ids) - len(fresh)  # seen ones stay in the store, ahead
        if not fresh:
            continue
        seen.update(fresh)
        count = operate(fresh)
        done += count
        progress(count)
        # Those it could not do (taken out by someone else meanwhile) are gone too.
    return done
