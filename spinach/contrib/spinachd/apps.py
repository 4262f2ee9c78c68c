"""The Django app config: builds the engine when Django is set up."""

from __future__ import annotations

from typing import Any

from django.apps import AppConfig, apps
from django.core.exceptions import ImproperlyConfigured
from django.db import close_old_connections

from ... import signals
from ...engine import Engine
from . import conf
from .discovery import discover_tasks
from .engine import _set_engine
from .tasks import session_tasks

__all__ = ["SpinachdConfig"]


class SpinachdConfig(AppConfig):
    """Spinach for Django; see :mod:`spinach.contrib.spinachd` for its settings."""

    name = "spinach.contrib.spinachd"
    label = "spinachd"
    verbose_name = "Spinach"

    def ready(self) -> None:
        """Build the engine, attach every app's tasks and guard DB connections around jobs."""
        keep_failed, max_failed = conf.get_failed_bounds()
        engine = Engine(
            conf.get_broker(), conf.get_namespace(), keep_failed=keep_failed, max_failed=max_failed
        )
        discover_tasks(engine, apps.get_app_configs())
        periodicity = conf.get_clear_sessions_periodicity()
        if periodicity is not None and not apps.is_installed("django.contrib.sessions"):
            raise ImproperlyConfigured(
                "SPINACH_CLEAR_SESSIONS_PERIODICITY is set but 'django.contrib.sessions' "
                "is not in INSTALLED_APPS: add it, or remove the setting"
            )
        engine.attach_tasks(session_tasks(periodicity))
        # Module-level functions: the weak references blinker keeps stay valid.
        signals.job_started.connect(_close_old_connections, sender=engine.namespace)
        signals.job_finished.connect(_close_old_connections, sender=engine.namespace)
        _set_engine(engine)


def _close_old_connections(namespace: str, **kwargs: Any) -> None:
    # A worker thread is like a request: it must not keep a connection past
    # CONN_MAX_AGE, nor reuse one that broke.
    close_old_connections()
