"""Tasks found by the autodiscovery of spinach.contrib.spinachd."""

from __future__ import annotations

from typing import Any

from django.db import connections

from spinach import Tasks

from .models import Note

tasks = Tasks()

#: The connection wrappers used by jobs, to check that they get closed.
used_connections: list[Any] = []


@tasks.task(name="testapp:add_note")
def add_note(text: str) -> None:
    """Store a note, from the worker thread."""
    Note.objects.create(text=text)
    used_connections.append(connections["default"])
