"""``manage.py spinach``: run the workers of the project's engine."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from spinach import const
from spinach.contrib.spinachd.engine import get_engine

__all__ = ["Command"]


class Command(BaseCommand):
    """Run Spinach workers until SIGINT or SIGTERM."""

    help = "Run Spinach workers until SIGINT or SIGTERM (or until the queue is empty)."

    def add_arguments(self, parser: CommandParser) -> None:
        """Add ``--queue``, ``--threads`` and ``--stop-when-queue-empty``."""
        parser.add_argument(
            "--queue",
            default=const.DEFAULT_QUEUE,
            help=f"The queue to consume (default: {const.DEFAULT_QUEUE}).",
        )
        parser.add_argument(
            "--threads",
            type=int,
            default=const.DEFAULT_WORKER_NUMBER,
            help=f"How many jobs run at once (default: {const.DEFAULT_WORKER_NUMBER}).",
        )
        parser.add_argument(
            "--stop-when-queue-empty",
            action="store_true",
            help="Stop once the queue is empty instead of waiting for more jobs.",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        """Start the workers and block until they stop."""
        threads = options["threads"]
        if not isinstance(threads, int) or threads < 1:
            raise CommandError(f"--threads must be 1 or more, got {threads!r}")
        get_engine().start_workers(
            number=threads,
            queue=options["queue"],
            block=True,
            stop_when_queue_empty=options["stop_when_queue_empty"],
        )
