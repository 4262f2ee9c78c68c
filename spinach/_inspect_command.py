"""``spinach inspect``: what a namespace holds by queue, its workers, its failed store.

It reads :meth:`~spinach.brokers.base.Broker.inspect`, so it works on any
broker. Output is a human table by default, JSON with ``--json``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from ._jobs_command import table
from .brokers.base import Inspection

__all__ = ["inspection_json", "inspection_text"]

QUEUE_HEADERS = ["QUEUE", "READY", "HELD BACK", "FUTURE", "RUNNING"]
WORKER_HEADERS = ["WORKER", "HOST", "PID", "RUNNING", "LAST HEARTBEAT"]


def _utc(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def inspection_json(namespace: str, inspection: Inspection, now: float) -> dict[str, Any]:
    """An inspection as JSON-ready values; ``now`` (POSIX seconds on the
    broker's clock) gives the age of each worker's last heartbeat."""
    return {
        "namespace": namespace,
        "at": _utc(now).isoformat(),
        "queues": {
            name: {
                "ready": state.ready,
                "held_back": state.held_back,
                "future": state.future,
                "running": state.running,
            }
            for name, state in sorted(inspection.queues.items())
        },
        "workers": [
            {
                "id": worker.id,
                "host": worker.host or None,
                "pid": worker.pid,
                "running": worker.running,
                "last_heartbeat": _utc(worker.last_heartbeat).isoformat(),
                "seconds_since_heartbeat": round(max(0.0, now - worker.last_heartbeat), 3),
            }
            for worker in inspection.workers
        ],
        "failed": inspection.failed,
        "failed_dropped": inspection.failed_dropped,
    }


def inspection_text(namespace: str, inspection: Inspection, now: float) -> str:
    """An inspection as two tables, queues then workers, and the failed count."""
    values = inspection_json(namespace, inspection, now)
    queue_rows = [
        [name, *(str(counts[key]) for key in ("ready", "held_back", "future", "running"))]
        for name, counts in values["queues"].items()
    ]
    worker_rows = [
        [
            worker["id"],
            worker["host"] or "?",
            "?" if worker["pid"] is None else str(worker["pid"]),
            str(worker["running"]),
            f"{worker['seconds_since_heartbeat']:.0f} s ago",
        ]
        for worker in values["workers"]
    ]
    failed = f"Failed jobs: {inspection.failed}"
    if inspection.failed_dropped:
        failed += f" ({inspection.failed_dropped} more dropped beyond max_failed)"
    parts = [
        f"Namespace {namespace!r} at {_utc(now):%Y-%m-%d %H:%M:%S} UTC",
        table(QUEUE_HEADERS, queue_rows) if queue_rows else "No queue.",
        table(WORKER_HEADERS, worker_rows) if worker_rows else "No worker.",
        failed,
    ]
    return "\n\n".join(parts) + "\n"
