"""Integrations of Spinach with other libraries and frameworks.

Each integration lives in a module of its own and imports its framework only
when it is imported itself:

- :mod:`spinach.contrib.flask_spinach`: the Flask extension.
- :mod:`spinach.contrib.spinachd`: the Django app.
- :mod:`spinach.contrib.sentry_sdk_spinach`: the Sentry integration.
- :mod:`spinach.contrib.datadog`: the Datadog tracing integration.
"""

from __future__ import annotations

__all__: list[str] = []
