"""The Redis scripts of ``lua/``: where they are, and how their shared steps are put in.

Each broker operation is one script, ``lua/<operation>.lua``. A step that
several scripts take (the form of a ready entry, releasing a concurrency
slot, ...) is written once in ``lua/include/<step>.lua``, and a script takes
it with a line of its own::

    --- @include "ready_entry"

The loader puts the step's text in place of that line, once per script even
when several steps include it, and before the step that includes it.
Redis then caches the whole text under one SHA, as for any script.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

__all__ = ["lua_dir", "read_script"]

_PACKAGE = Path(__file__).resolve().parents[2]
_INCLUDE = re.compile(r'^--- @include "([a-z_]+)"[ \t]*$', re.MULTILINE)


def lua_dir() -> Path:
    """The folder holding the scripts.

    A wheel ships them as ``spinach/_lua``; an editable install or a bare
    checkout reads the live files of the top-level ``lua/`` folder.
    """
    for candidate in (_PACKAGE / "_lua", _PACKAGE.parent / "lua"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"Spinach's Redis scripts are missing: neither {_PACKAGE / '_lua'} nor "
        f"{_PACKAGE.parent / 'lua'} exists; reinstall spinach"
    )


@functools.cache
def read_script(name: str) -> str:
    """The source of the script ``lua/<name>.lua``, its includes put in.

    Raises:
        FileNotFoundError: the script, or a step it includes, does not exist.
        ValueError: steps include each other in a circle.
    """
    folder = lua_dir()
    return _expand(folder / f"{name}.lua", folder / "include", set(), (name,))


def _expand(path: Path, include_dir: Path, done: set[str], chain: tuple[str, ...]) -> str:
    """The text of ``path`` with each include not in ``done`` put in place, recursively.

    ``chain`` names the script, then the steps that led to ``path``.
    """

    def put_in(match: re.Match[str]) -> str:
        step = match.group(1)
        if step in chain:
            raise ValueError(f"Lua includes form a circle: {' -> '.join((*chain, step))}")
        if step in done:
            return f"-- (step {step!r} is included above)"
        done.add(step)
        text = _expand(include_dir / f"{step}.lua", include_dir, done, (*chain, step))
        return f"-- step {step!r}, from lua/include/{step}.lua\n{text.rstrip()}\n"

    try:
        source = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        where = f", included by {chain[-2]!r}" if len(chain) > 1 else ""
        raise FileNotFoundError(
            f"Spinach's Redis script {path} is missing{where}; reinstall spinach"
        ) from None
    return _INCLUDE.sub(put_in, source)
