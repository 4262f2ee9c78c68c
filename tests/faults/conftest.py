"""Fixtures of the fault scenarios (their server and log folder are in tests/conftest.py)."""

from __future__ import annotations

import uuid

import pytest

from .accounting import close_books, make_fleet, make_producer

__all__ = ["close_books", "make_fleet", "make_producer", "namespace"]


@pytest.fixture
def namespace() -> str:
    return f"faults-{uuid.uuid4().hex[:8]}"
