"""Finished OpenTelemetry spans as plain records (JSON-ready), the same in the
test process and in the worker process of tests/integration/test_tracing.py."""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import Any


def span_records(spans: Iterable[Any]) -> list[dict[str, Any]]:
    """One record per span: name, kind, ids, parent, event names, start, process."""
    return [
        {
            "name": s.name,
            "kind": s.kind.name,
            "trace": s.context.trace_id,
            "id": s.context.span_id,
            "parent": s.parent.span_id if s.parent else None,
            "events": [e.name for e in s.events],
            "start": s.start_time,
            "process": os.getpid(),
        }
        for s in spans
    ]
