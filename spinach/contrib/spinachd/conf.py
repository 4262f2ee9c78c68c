"""The settings of the Django app, read and checked."""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

from ... import const
from ...brokers.base import Broker
from ...engine import check_failed_bounds
from ...exc import ConfigurationError

__all__ = [
    "DEFAULT_ACTUAL_EMAIL_BACKEND",
    "get_actual_email_backend",
    "get_broker",
    "get_clear_sessions_periodicity",
    "get_failed_bounds",
    "get_namespace",
]

DEFAULT_ACTUAL_EMAIL_BACKEND = "django.core.mail.backends.smtp.EmailBackend"


def get_broker() -> Broker:
    """``SPINACH_BROKER``, by default a ``RedisBroker()`` for localhost:6379.

    Raises:
        ImproperlyConfigured: the setting is not a Broker instance.
    """
    broker = getattr(settings, "SPINACH_BROKER", None)
    if broker is None:
        # Imported here: the Redis broker is only needed when it is the default.
        from ...brokers.redis import RedisBroker

        return RedisBroker()
    if not isinstance(broker, Broker):
        raise ImproperlyConfigured(
            f"SPINACH_BROKER must be a spinach Broker, got {broker!r} "
            f"({type(broker).__name__}): set it to an instance such as "
            "spinach.brokers.redis.RedisBroker.from_url('redis://...')"
        )
    return broker


def get_namespace() -> str:
    """``SPINACH_NAMESPACE``, by default ``'spinach'``.

    Raises:
        ImproperlyConfigured: the setting is not a non-empty str.
    """
    namespace = getattr(settings, "SPINACH_NAMESPACE", const.DEFAULT_NAMESPACE)
    if not isinstance(namespace, str) or not namespace:
        raise ImproperlyConfigured(f"SPINACH_NAMESPACE must be a non-empty str, got {namespace!r}")
    return namespace


def get_clear_sessions_periodicity() -> timedelta | None:
    """``SPINACH_CLEAR_SESSIONS_PERIODICITY``, None (the default) for no clearing.

    Raises:
        ImproperlyConfigured: the setting is not a timedelta.
    """
    periodicity = getattr(settings, "SPINACH_CLEAR_SESSIONS_PERIODICITY", None)
    if periodicity is not None and not isinstance(periodicity, timedelta):
        raise ImproperlyConfigured(
            "SPINACH_CLEAR_SESSIONS_PERIODICITY must be a datetime.timedelta or None, got "
            f"{periodicity!r}"
        )
    return periodicity


def get_failed_bounds() -> tuple[timedelta | None, int | None]:
    """``SPINACH_KEEP_FAILED`` (7 days by default) and ``SPINACH_MAX_FAILED``
    (10,000), the bounds of the failed store.

    Raises:
        ImproperlyConfigured: a setting is not what ``Engine()`` takes.
    """
    keep_failed: timedelta | None = getattr(
        settings, "SPINACH_KEEP_FAILED", const.DEFAULT_KEEP_FAILED
    )
    max_failed: int | None = getattr(settings, "SPINACH_MAX_FAILED", const.DEFAULT_MAX_FAILED)
    try:
        check_failed_bounds(keep_failed, max_failed, ("SPINACH_KEEP_FAILED", "SPINACH_MAX_FAILED"))
    except ConfigurationError as e:
        raise ImproperlyConfigured(str(e)) from None
    return keep_failed, max_failed


def get_actual_email_backend() -> str:
    """``SPINACH_ACTUAL_EMAIL_BACKEND``, the dotted path of the backend that delivers mail."""
    backend = getattr(settings, "SPINACH_ACTUAL_EMAIL_BACKEND", DEFAULT_ACTUAL_EMAIL_BACKEND)
    if not isinstance(backend, str) or not backend:
        raise ImproperlyConfigured(
            "SPINACH_ACTUAL_EMAIL_BACKEND must be the dotted path of an email backend, "
            f"such as {DEFAULT_ACTUAL_EMAIL_BACKEND!r}, got {backend!r}"
        )
    return backend
