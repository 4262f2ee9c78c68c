"""The ``spinach`` command (also ``python -m spinach``).

``spinach doctor TARGET [--json]`` checks a Redis server (every master of a
Redis Cluster, the master of a Sentinel service), and an engine's tasks,
against the production checklist. TARGET is a Redis URL of any form that
``RedisBroker.from_url`` takes (``redis://``, ``rediss://``, ``unix://``,
``redis+cluster://``, ``redis+sentinel://``...) or the import path of an
:class:`~spinach.engine.Engine` (``myapp.tasks:spin``). Exit status: 0 when no
check fails (warnings allowed), 1 when a check fails, 2 when TARGET cannot be
used.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Sequence

from .brokers.redis.url import SCHEMES
from .doctor import Target, TargetError, diagnose
from .engine import Engine

__all__ = ["main"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_UNUSABLE = 2
_URL_FORMS = ", ".join(f"{scheme}://" for scheme in SCHEMES)


def load_target(text: str) -> Target:
    """A URL as it is, or the Engine an import path ``module:attribute`` names.

    Any ``scheme://`` text is a URL: :func:`~spinach.doctor.diagnose` reads it
    as ``RedisBroker.from_url`` does, and says what to write instead of a
    scheme that neither takes.

    Raises:
        TargetError: ``text`` is neither, or its module cannot be imported.
    """
    if "://" in text:
        return text
    module_name, colon, attribute = text.partition(":")
    if not colon or not module_name or not attribute:
        raise TargetError(
            f"{text!r} is neither a Redis URL ({_URL_FORMS}) nor the import path of an "
            "Engine (module:attribute, e.g. myapp.tasks:spin)"
        )
    # As `python -m` does, so that `spinach doctor myapp.tasks:spin` finds myapp here.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as e:
        raise TargetError(
            f"Cannot import module {module_name!r}: {type(e).__name__}: {e}"
        ) from None
    value: object = module
    for part in attribute.split("."):
        try:
            value = getattr(value, part)
        except AttributeError:
            raise TargetError(f"Module {module_name!r} has no attribute {attribute!r}") from None
    if not isinstance(value, Engine):
        raise TargetError(
            f"{text!r} is a {type(value).__name__}, not a spinach Engine: name the Engine "
            "whose tasks and namespace to check"
        )
    return value


def _doctor(args: argparse.Namespace) -> int:
    try:
        report = diagnose(load_target(args.target))
    except TargetError as e:
        # The message names the target, without the password a URL may hold.
        print(f"spinach doctor: {e}", file=sys.stderr)
        return EXIT_UNUSABLE
    try:
        print(report.to_json() if args.json else report.to_text(), flush=True)
    except BrokenPipeError:
        # The reader left early (`| head`): keep the exit status, and silence
        # the flush at exit as the Python documentation advises.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return EXIT_FAILED if report.failed else EXIT_OK


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="spinach", description="Spinach task queue tools.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    doctor = commands.add_parser(
        "doctor",
        help="check a Redis server and an engine against the production checklist",
        description=(
            "Check a Redis server (every master of a Redis Cluster, the master of a "
            "Sentinel service), and an engine's tasks, against the production "
            "checklist. Exit status: 0 when no check fails (warnings allowed), 1 when "
            "a check fails, 2 when TARGET cannot be used."
        ),
    )
    doctor.add_argument(
        "target",
        metavar="TARGET",
        help=f"a Redis URL ({_URL_FORMS}) or an Engine's import path (myapp.tasks:spin)",
    )
    doctor.add_argument("--json", action="store_true", help="print the report as JSON")
    doctor.set_defaults(run=_doctor)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``spinach`` command; return its exit status."""
    args = _parser().parse_args(argv)
    status: int = args.run(args)
    return status
