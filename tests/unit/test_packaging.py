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
    """Every script of lua/ (steps in lua/include/ too) is in the wheel under spinach/_lua/."""
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
         "-w", str(tmp_path), str(ROOT)],
        check=True,
    )  # fmt: skip
    (wheel,) = tmp_path.glob("spinach-*.whl")
    scripts = sorted(p.relative_to(ROOT / "lua").as_posix() for p in (ROOT / "lua").rglob("*.lua"))
    assert "enqueue_jobs.lua" in scripts
    assert "include/ready_entry.lua" in scripts
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        archive.extractall(tmp_path / "site")
    prefix = "spinach/_lua/"
    shipped = sorted(n.removeprefix(prefix) for n in names if n.startswith(prefix))
    assert shipped == scripts
    assert "spinach/py.typed" in names
    scripts_module = "spinach.brokers.redis.scripts"
    found = subprocess.run(
        [sys.executable, "-c", f"from {scripts_module} import lua_dir; print(lua_dir())"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path / "site")},
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert Path(found) == tmp_path / "site" / "spinach" / "_lua"


def test_checkout_loads_the_live_scripts() -> None:
    """An editable install or a bare checkout reads the top-level lua/ folder."""
    from spinach.brokers.redis.scripts import lua_dir

    assert lua_dir() == ROOT / "lua"
