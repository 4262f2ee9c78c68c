"""The built wheel carries every Redis script and loads them from inside the package."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.timeout(300)
def test_wheel_ships_every_lua_script(tmp_path: Path) -> None:
    """Every lua/*.lua is in the wheel as spinach/_lua/*.lua, and the installed package finds it."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("spinach-*.whl")
    scripts = sorted(p.name for p in (ROOT / "lua").glob("*.lua"))
    assert scripts, "lua/ holds no script"
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    assert sorted(n.split("/")[-1] for n in names if n.startswith("spinach/_lua/")) == scripts
    assert "spinach/py.typed" in names
    found = subprocess.run(
        [sys.executable, "-c", "from spinach.brokers._lua import lua_dir; print(lua_dir())"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == tmp_path / "site" / "spinach" / "_lua"


def test_checkout_loads_the_live_scripts() -> None:
    """An editable install or a bare checkout reads the top-level lua/ folder."""
    from spinach.brokers._lua import lua_dir

    assert lua_dir() == ROOT / "lua"
