"""Find the ``tasks`` registry of each installed app's ``tasks`` module."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from importlib import import_module
from types import ModuleType

from django.apps import AppConfig
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import module_has_submodule

from ...engine import Engine
from ...task import Tasks

__all__ = ["discover_tasks", "tasks_of_module"]

logger = logging.getLogger(__name__)


def tasks_of_module(module: ModuleType) -> Tasks | None:
    """The ``tasks`` registry of a module, or None if it has no ``tasks``.

    Raises:
        ImproperlyConfigured: the module's ``tasks`` is not a :class:`~spinach.Tasks`.
    """
    try:
        tasks = module.tasks
    except AttributeError:
        logger.debug("Module %s defines no 'tasks' registry; skipped", module.__name__)
        return None
    if not isinstance(tasks, Tasks):
        raise ImproperlyConfigured(
            f"{module.__name__}.tasks must be a spinach.Tasks registry, got "
            f"{type(tasks).__name__}: define 'tasks = spinach.Tasks()' there and register "
            "the module's tasks with @tasks.task(name=...), or rename that attribute"
        )
    return tasks


def discover_tasks(engine: Engine, app_configs: Iterable[AppConfig]) -> list[Tasks]:
    """Attach to ``engine`` the registry of each app's ``tasks`` module, and return them.

    An app without a ``tasks`` module, or whose module has no ``tasks``, is skipped.
    """
    attached: list[Tasks] = []
    for app_config in app_configs:
        # Only a missing module is skipped: an ImportError inside it is the app's bug.
        if app_config.module is None or not module_has_submodule(app_config.module, "tasks"):
            continue
        tasks = tasks_of_module(import_module(f"{app_config.name}.tasks"))
        if tasks is not None:
            engine.attach_tasks(tasks)
            attached.append(tasks)
    return attached
