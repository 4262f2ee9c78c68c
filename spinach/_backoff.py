"""The one back-off formula: exponential, capped, with jitter."""

from __future__ import annotations

import random

__all__ = ["backoff"]


def backoff(attempt: int, *, base: float, cap: float) -> float:
    """Seconds to wait before try number ``attempt + 1`` after ``attempt`` failures.

    With ``t = min(base * 2**attempt, cap)`` the wait is between ``t / 2`` and
    ``t``, uniformly: it doubles with every failure and never exceeds ``cap``,
    and the jitter keeps clients that failed together from trying again
    together.
    """
    if attempt < 0:
        raise ValueError(f"attempt must be 0 or more, got {attempt}")
    # Bound the exponent, so that a huge attempt number cannot build a huge integer.
    top: float = min(base * 2 ** min(attempt, 64), cap)
    return top / 2 + random.uniform(0, top / 2)
