"""Django app running Spinach: add ``"spinach.contrib.spinachd"`` to ``INSTALLED_APPS``.

When Django starts, the app builds one :class:`~spinach.Engine` from the
settings below and attaches the ``tasks`` registry (a :class:`~spinach.Tasks`)
of each installed app's ``tasks`` module. ``manage.py spinach`` runs the
workers; ``get_engine()`` (or ``spinachd.spin``) gives the engine to schedule
jobs with, or schedule through the registries themselves.

Settings:

- ``SPINACH_BROKER``: a :class:`~spinach.brokers.base.Broker` instance.
  Default: ``RedisBroker()``, for a Redis on localhost:6379, as in Spinach
  0.0.25. redis-py connects on first use, so building it does not connect.
- ``SPINACH_NAMESPACE``: the engine's namespace. Default: ``"spinach"``.
- ``SPINACH_CLEAR_SESSIONS_PERIODICITY``: a ``timedelta``; when set, the
  task ``spinachd:clear_expired_sessions`` (always registered) deletes
  expired sessions periodically.
- ``SPINACH_ACTUAL_EMAIL_BACKEND``: the backend through which
  :class:`~spinach.contrib.spinachd.mail.BackgroundEmailBackend` delivers
  mail. Default: ``"django.core.mail.backends.smtp.EmailBackend"``.

Around each job, workers close the database connections that are unusable or
older than ``CONN_MAX_AGE``, as Django does around each request.
"""

from __future__ import annotations

from typing import Any

from .engine import get_engine

__all__ = ["get_engine"]


def __getattr__(name: str) -> Any:
    # ``spin``, the name of the engine in Spinach 0.0.25, built once Django is set up.
    if name == "spin":
        return get_engine()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
