"""The engine of the Django app, built when Django is set up."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured

from ...engine import Engine

__all__ = ["get_engine"]

_engine: Engine | None = None


def get_engine() -> Engine:
    """The Spinach engine of this Django project.

    Raises:
        ImproperlyConfigured: Django is not set up with this app installed.
    """
    if _engine is None:
        raise ImproperlyConfigured(
            "The Spinach engine is not built yet: add 'spinach.contrib.spinachd' to "
            "INSTALLED_APPS and call django.setup() (manage.py does) before using it"
        )
    return _engine


def _set_engine(engine: Engine) -> None:
    global _engine
    _engine = engine
