"""Clocks: where Spinach reads the time.

Everything that compares times (is a job due, is a worker dead, when does a
periodic task run) asks a :class:`Clock`, so tests drive time with a
:class:`ManualClock` instead of patching modules.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from datetime import datetime, timedelta, timezone

from typing_extensions import override

__all__ = ["Clock", "ManualClock", "SystemClock"]


class Clock(ABC):
    """A source of wall-clock time."""

    @abstractmethod
    def time(self) -> float:
        """Return the current POSIX time in seconds."""

    def now(self) -> datetime:
        """Return the current time as an aware UTC datetime."""
        return datetime.fromtimestamp(self.time(), tz=timezone.utc)


class SystemClock(Clock):
    """The clock of this host."""

    @override
    def time(self) -> float:
        return time.time()


class ManualClock(Clock):
    """A clock that only moves when told to; thread-safe.

    Args:
        start: the initial time, a POSIX timestamp or an aware datetime
            (a naive one is UTC). Defaults to the current time.
    """

    def __init__(self, start: float | datetime | None = None) -> None:
        self._lock = threading.Lock()
        self._time = _to_timestamp(start) if start is not None else time.time()

    @override
    def time(self) -> float:
        with self._lock:
            return self._time

    def advance(self, seconds: float | timedelta) -> None:
        """Move the clock forward (or back, with a negative value)."""
        if isinstance(seconds, timedelta):
            seconds = seconds.total_seconds()
        with self._lock:
            self._time += seconds

    def set(self, when: float | datetime) -> None:
        """Set the clock to a POSIX timestamp or a datetime (naive is UTC)."""
        with self._lock:
            self._time = _to_timestamp(when)


def _to_timestamp(value: float | datetime) -> float:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=timezone.utc)
        return value.timestamp()
    return float(value)
