"""The script loader: every script of lua/ loads, with each shared step put in once."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from spinach.brokers.redis.scripts import _expand, lua_dir, read_script

SCRIPTS = sorted(p.stem for p in lua_dir().glob("*.lua"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_script_loads_with_its_steps_once(name: str) -> None:
    """No include line is left, and no function of a step is defined twice."""
    source = read_script(name)
    assert "--- @include" not in source
    functions = re.findall(r"^local function (\w+)\(", source, re.MULTILINE)
    assert len(functions) == len(set(functions)), functions


def test_every_step_is_used() -> None:
    """A step of lua/include/ that no script includes is dead code."""
    used = set()
    for name in SCRIPTS:
        used |= set(re.findall(r"^-- step '(\w+)'", read_script(name), re.MULTILINE))
    assert used == {p.stem for p in (lua_dir() / "include").glob("*.lua")}


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / f"{name}.lua"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_a_step_included_twice_is_put_in_once_before_its_user(tmp_path: Path) -> None:
    """A step included by the script and by another step comes once, where first included."""
    steps = tmp_path / "include"
    write(steps, "a", "local A = 1\n")
    write(steps, "b", '--- @include "a"\nlocal B = A\n')
    script = write(tmp_path, "op", '--- @include "b"\n--- @include "a"\nreturn B\n')
    source = _expand(script, steps, set(), ("op",))
    assert source.count("local A = 1") == 1
    assert source.index("local A = 1") < source.index("local B = A") < source.index("return B")


def test_a_missing_step_names_who_included_it(tmp_path: Path) -> None:
    """An include of a step that does not exist says which file included it."""
    steps = tmp_path / "include"
    write(steps, "b", '--- @include "nowhere"\n')
    script = write(tmp_path, "op", '--- @include "b"\n')
    with pytest.raises(FileNotFoundError, match=r"nowhere\.lua is missing, included by 'b'"):
        _expand(script, steps, set(), ("op",))


def test_steps_including_each_other_are_an_error(tmp_path: Path) -> None:
    """A circle of includes is refused with its path, not followed for ever."""
    steps = tmp_path / "include"
    write(steps, "a", '--- @include "b"\n')
    write(steps, "b", '--- @include "a"\n')
    script = write(tmp_path, "op", '--- @include "a"\n')
    with pytest.raises(ValueError, match="op -> a -> b -> a"):
        _expand(script, steps, set(), ("op",))
