"""Shared fixtures: real database files built from sql/, and a real memfts over stdio."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path

import apsw
import pytest

from memfts.store import Store

ROOT = Path(__file__).resolve().parents[1]
SQL_DIR = ROOT / "sql"


def build_schema(path: Path) -> None:
    """Build a database by applying sql/NNN_*.sql in order, as a user with a shell could."""
    conn = apsw.Connection(str(path))
    conn.pragma("journal_mode", "wal")
    for i, file in enumerate(sorted(SQL_DIR.glob("[0-9][0-9][0-9]_*.sql")), start=1):
        with conn:
            conn.execute(file.read_text())
            conn.pragma("user_version", i)
    conn.close()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "full_text: asserts the full-text ranking's exact results, so it runs with "
        "MEMFTS_SEMANTIC=off (in-process stores and spawned servers) where the semantic extra "
        "is installed; the fusion itself is tested in test_semantic.py",
    )


@pytest.fixture(autouse=True, scope="module")
def _full_text_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """A module marked ``full_text`` is pinned before its shared servers start."""
    with pytest.MonkeyPatch.context() as patch:
        if request.node.get_closest_marker("full_text"):
            patch.setenv("MEMFTS_SEMANTIC", "off")
        yield


@pytest.fixture(autouse=True)
def _full_text_test(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A test marked ``full_text``: its stores and the servers it starts itself."""
    if request.node.get_closest_marker("full_text"):
        monkeypatch.setenv("MEMFTS_SEMANTIC", "off")


def semantic_on() -> bool:
    """Whether stores and servers started now search by meaning too (the semantic extra)."""
    from memfts.semantic_setup import wanted

    return wanted() is not None


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    path = tmp_path / "memory.db"
    build_schema(path)
    return path


@pytest.fixture
def store(db_path: Path) -> Iterator[Store]:
    s = Store(db_path)
    yield s
    s.close()


NODE_DIR = ROOT / "tests" / "node"


def node_tool(name: str) -> Path:
    """A command of the npm packages the tests drive (Claude Code's CLI, the official memory
    server), installed from ``tests/node/package.json`` by ``.ci/run``."""
    path = NODE_DIR / "node_modules" / ".bin" / name
    if not path.exists():
        pytest.fail(f"{path} is missing: run `npm install --prefix tests/node` (.ci/run does)")
    return path


def memfts_command() -> list[str]:
    """The installed console script, run by the interpreter running the tests."""
    return [sys.executable, "-m", "memfts"]


def server_env(db: Path, **extra: str) -> dict[str, str]:
    """The environment a client such as Claude Desktop gives the server, plus the database
    (and ``MEMFTS_SEMANTIC``, which a ``full_text`` test pins)."""
    keep = ("PATH", "HOME", "LANG", "TMPDIR", "MEMFTS_SEMANTIC")
    env = {k: v for k, v in os.environ.items() if k in keep}
    env["MEMORY_DB_PATH"] = str(db)
    env.update(extra)
    return env


@pytest.fixture
def stdio_params(db_path: Path):  # type: ignore[no-untyped-def]
    """Parameters spawning a real `memfts` server over stdio on the test's database."""
    from mcp import StdioServerParameters

    return StdioServerParameters(
        command=memfts_command()[0], args=memfts_command()[1:], env=server_env(db_path)
    )
