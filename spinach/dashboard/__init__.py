"""The web dashboard: see a namespace's queues, workers and jobs, and steer them.

:class:`Dashboard` is a WSGI application. Run it with ``spinach dashboard
TARGET``, or mount it in a Flask, Django or FastAPI application (see
``docs/operating.md``). It needs the ``dashboard`` extra
(``pip install 'spinach[dashboard]'``: Werkzeug and Jinja2).
"""

from __future__ import annotations

from ._app import Dashboard, django_view

__all__ = ["Dashboard", "django_view"]
