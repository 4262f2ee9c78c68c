"""Helpers to test code that uses Spinach, and brokers written for it.

:mod:`spinach.testing.contract` holds the broker contract suite (it needs
pytest); bind it to a broker of your own to check that it keeps the contract.
"""

from __future__ import annotations

from ..clock import ManualClock

__all__ = ["ManualClock"]
