"""Finding the Redis scripts of ``lua/``, wherever Spinach is installed from."""

from __future__ import annotations

from pathlib import Path

__all__ = ["lua_dir", "read_script"]

_PACKAGE = Path(__file__).resolve().parent.parent


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


def read_script(name: str) -> str:
    """The source of the script ``lua/<name>.lua``."""
    return (lua_dir() / f"{name}.lua").read_text(encoding="utf-8")
