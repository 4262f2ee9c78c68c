"""The tasks of the Django app itself, found by its own autodiscovery."""

from __future__ import annotations

import logging
from datetime import timedelta
from importlib import import_module
from typing import Any

from django.apps import apps
from django.conf import settings
from django.core.mail import get_connection

from ...task import Tasks
from .conf import get_actual_email_backend
from .mail import SEND_EMAILS_TASK, message_from_json

__all__ = ["CLEAR_SESSIONS_TASK", "session_tasks", "tasks"]

logger = logging.getLogger(__name__)

#: Name of the periodic task that deletes expired sessions.
CLEAR_SESSIONS_TASK = "spinachd:clear_expired_sessions"

tasks = Tasks()


@tasks.task(name=SEND_EMAILS_TASK)
def send_emails(messages: list[dict[str, Any]]) -> None:
    """Send messages serialised by the background email backend, with the actual backend."""
    backend = get_actual_email_backend()
    with get_connection(backend=backend, fail_silently=False) as connection:
        sent = connection.send_messages([message_from_json(m) for m in messages])
    logger.debug("Sent %s of %d messages through %s", sent, len(messages), backend)


def clear_expired_sessions() -> None:
    """Delete expired sessions, as ``manage.py clearsessions`` does.

    Without ``django.contrib.sessions``, or with a session engine that cannot
    clear (``clear_expired`` not implemented), it logs why and does nothing,
    as in Spinach 0.0.25.
    """
    if not apps.is_installed("django.contrib.sessions"):
        logger.warning(
            "Not clearing expired sessions: 'django.contrib.sessions' is not in INSTALLED_APPS"
        )
        return
    engine = import_module(settings.SESSION_ENGINE)
    try:
        engine.SessionStore.clear_expired()
    except NotImplementedError:
        logger.warning(
            "Not clearing expired sessions: session engine %r cannot clear them",
            settings.SESSION_ENGINE,
        )


def session_tasks(periodicity: timedelta | None) -> Tasks:
    """A registry with the task clearing expired sessions, every ``periodicity`` if set.

    The task is always there, as in Spinach 0.0.25, so an app can schedule it
    itself; it is periodic only when ``periodicity`` is a ``timedelta``.
    """
    registry = Tasks()
    registry.add(clear_expired_sessions, CLEAR_SESSIONS_TASK, periodicity=periodicity)
    return registry
