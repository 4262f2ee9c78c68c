"""Fixtures shared by the integration tests of spinach.contrib."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest


@pytest.fixture
def no_receiver_errors(caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Fail a test whose signal receivers raised: Spinach only logs that."""
    caplog.set_level(logging.ERROR, logger="spinach.signals")
    yield
    records = caplog.get_records("call")
    assert [r.getMessage() for r in records if r.name == "spinach.signals"] == []
