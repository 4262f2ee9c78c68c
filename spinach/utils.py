"""Small helpers that are part of the public API."""

from __future__ import annotations

import random
from datetime import timedelta

__all__ = ["exponential_backoff", "human_duration"]


def exponential_backoff(attempt: int, cap: int = 1200) -> timedelta:
    """Return how long to wait before retry number ``attempt``.

    The delay doubles with every attempt and carries a random jitter, so that
    jobs failing together do not retry together: with
    ``t = min(3 * 2**attempt, cap) // 2`` the delay is between ``t`` and ``2t``
    seconds (3 to 6 s for the first retry, never more than ``cap``).
    """
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    # Bound the exponent so a huge attempt number cannot build a huge integer.
    half = min(3 * 2 ** min(attempt, 64), cap) // 2
    return timedelta(seconds=half + random.randint(0, half))


def human_duration(duration_seconds: float) -> str:
    """Return a short human readable form of a duration, like ``'12 ms'`` or ``'3 s'``."""
    if duration_seconds < 0.001:
        return "0 ms"
    if duration_seconds < 1:
        return f"{int(duration_seconds * 1000)} ms"
    return f"{int(duration_seconds)} s"
