"""Helpers to test code that uses Spinach, and brokers written for it.

:mod:`spinach.testing.contract` holds the broker contract suite (it needs
pytest); bind it to a broker of your own to check that it keeps the contract.
"""

from __future__ import annotations

import time
from typing import Callable, TypeVar

from ..clock import ManualClock

__all__ = ["ManualClock", "wait_for"]

T = TypeVar("T")


def wait_for(condition: Callable[[], T], timeout: float = 10.0, interval: float = 0.005) -> T:
    """Poll ``condition`` until it returns a true value, and return that value.

    Raises:
        TimeoutError: ``condition`` stayed false for ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if result:
            return result
        if time.monotonic() > deadline:
            raise TimeoutError(f"{condition!r} stayed false for {timeout} s")
        time.sleep(interval)
