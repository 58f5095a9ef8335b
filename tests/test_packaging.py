"""The built wheel ships the schema files inside the package, and an installed memfts (not
this source tree) finds them: `memfts --version` runs and a store opens on a new file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SQL_FILES = sorted((ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql"))


def run(command: list[str], cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, f"{command} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(out), str(ROOT)],
        cwd=out,
    )
    [built] = out.glob("memfts-*.whl")
    return built


@pytest.fixture(scope="module")
def installed(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A fresh venv holding the wheel; its dependencies come from the test venv (read-only)."""
    venv = tmp_path_factory.mktemp("venv")
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=venv)
    python = venv / "bin" / "python"
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
         "--no-deps", "--no-index", str(wheel)],
        cwd=venv,
    )  # fmt: skip
    # Only now expose the dependencies, so pip never saw (or touched) the dev install of memfts.
    # A plain path line is not processed as a site dir: the editable memfts hook stays inactive.
    site = run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
               cwd=venv).strip()  # fmt: skip
    (Path(site) / "test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    yield venv


def test_wheel_ships_the_schema_inside_the_package(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        for sql in SQL_FILES:
            packaged = f"memfts/sql/{sql.name}"
            assert packaged in names, f"{packaged} missing from {wheel.name}"
            assert archive.read(packaged) == sql.read_bytes()
        assert "memfts/__main__.py" in names
        assert "memfts/synonyms.txt" in names  # the shipped synonym table
        entry_points = archive.read(
            next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
        ).decode()
    assert "memfts = memfts.cli:main" in entry_points
    assert not [n for n in names if "__pycache__" in n or n.startswith("tests/")]


def clean_env(tmp: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k in ("PATH", "LANG")}
    env["HOME"] = str(tmp)  # the default database lives under $HOME: keep it in tmp
    env["XDG_DATA_HOME"] = str(tmp / "data")
    return env


def test_installed_memfts_runs_and_finds_its_schema(installed: Path, tmp_path: Path) -> None:
    env = clean_env(tmp_path)
    version = run([str(installed / "bin" / "memfts"), "--version"], cwd=tmp_path, env=env)
    assert version.strip() == "memfts, version 0.1.0"

    probe = (
        "import json, memfts, memfts.database as d\n"
        "from memfts.store import Store\n"
        "s = Store('fresh.db')\n"
        "print(json.dumps({'module': memfts.__file__, 'sql': str(d.sql_dir()),\n"
        "  'version': s.stats().schema_version, 'ok': s.check().ok}))\n"
        "s.close()\n"
    )
    # run from tmp: nothing of the source tree is importable or findable from there
    out = run([str(installed / "bin" / "python"), "-c", probe], cwd=tmp_path, env=env)
    found = json.loads(out)
    assert found["module"].startswith(str(installed)), found
    assert found["sql"] == str(Path(found["module"]).parent / "sql")
    assert found["version"] == len(SQL_FILES)
    assert found["ok"] is True
