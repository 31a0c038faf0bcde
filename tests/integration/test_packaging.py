"""What rtcore loads at run time besides its modules ships in the wheel: a wheel built from
the tree (offline: ``pip wheel --no-build-isolation``, with the test extra's setuptools)
holds the Redis engine's Lua scripts, and the scripts load from the installed package; and
the settings page's and the demo's files."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import rtcore
from rtcore.engines.redis import scripts

REPO = Path(rtcore.__file__).parent.parent


def build_wheel(tmp_path: Path) -> Path:
    """A wheel of a copy of the tree (the build leaves build/ and egg-info behind it)."""
    tree = tmp_path / "tree"
    tree.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, tree / name)
    shutil.copytree(REPO / "rtcore", tree / "rtcore", ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path / "dist"
    command = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    command += ["--no-index", "--quiet", "-w", str(out), str(tree)]
    subprocess.run(command, check=True, capture_output=True, timeout=300)
    (wheel,) = out.glob("rtcore-*.whl")
    return wheel


def test_the_wheel_ships_the_lua_scripts_and_they_load_from_it(tmp_path: Path) -> None:
    wheel = build_wheel(tmp_path)
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        archive.extractall(tmp_path / "installed")
    lua = REPO / "rtcore" / "engines" / "redis" / "lua"
    shipped = {n for n in names if n.startswith("rtcore/engines/redis/lua/")}
    assert shipped == {f"rtcore/engines/redis/lua/{p.name}" for p in lua.glob("*.lua")}
    used = {f"rtcore/engines/redis/lua/{part}.lua" for p in scripts.PARTS.values() for part in p}
    assert used <= shipped
    # Imported from the unpacked wheel, not from the tree: every script loads.
    code = (
        "import rtcore; from rtcore.engines.redis import scripts; "
        "print(rtcore.__file__); print(sum(len(scripts.source(n)) for n in scripts.PARTS))"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "installed")}
    run = subprocess.run(
        [sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True
    )
    assert run.returncode == 0, run.stderr
    where, size = run.stdout.split()
    assert Path(where).is_relative_to(tmp_path / "installed")
    assert int(size) == sum(len(scripts.source(n)) for n in scripts.PARTS)


def test_the_wheel_ships_the_pages_and_the_type_marker(tmp_path: Path) -> None:
    with zipfile.ZipFile(build_wheel(tmp_path)) as archive:
        names = set(archive.namelist())
    pages = [
        *(REPO / "rtcore/server/http/admin_page").iterdir(),
        *(REPO / "rtcore/static").iterdir(),
    ]
    wanted = {p.relative_to(REPO).as_posix() for p in pages} | {"rtcore/py.typed"}
    assert len(wanted) >= 9 and wanted - names == set()
