"""A tasks module without a ``tasks`` registry."""

from __future__ import annotations


def helper() -> str:
    """Not a task."""
    return "not a task"
