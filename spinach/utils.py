"""Small helpers that are part of the public API."""

from __future__ import annotations

from datetime import timedelta

from ._backoff import backoff

__all__ = ["exponential_backoff", "human_duration"]


def exponential_backoff(attempt: int, cap: int = 1200) -> timedelta:
    """Return how long to wait before retry number ``attempt``.

    The delay doubles with every attempt and carries a random jitter, so that
    jobs failing together do not retry together: with
    ``t = min(3 * 2**attempt, cap)`` the delay is between ``t / 2`` and ``t``
    seconds (3 to 6 s for the first retry, never more than ``cap``).
    """
    return timedelta(seconds=backoff(attempt, base=3, cap=cap))


def human_duration(duration_seconds: float) -> str:
    """Return a short human readable form of a duration, like ``'12 ms'`` or ``'3 s'``."""
    if duration_seconds < 0.001:
        return "0 ms"
    if duration_seconds < 1:
        return f"{int(duration_seconds * 1000)} ms"
    return f"{int(duration_seconds)} s"
