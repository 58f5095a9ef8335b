"""A broken environment gives a one-line, actionable error — at start-up or on the call —
and never damages the file further.

Each condition is built so that it holds when the tests run as root too (permissions do not
bite root): a folder that cannot exist because a file stands in its way, a file-size limit
(RLIMIT_FSIZE, what a full disk looks like to SQLite) and SQLite's own page-count limit for
a full disk, bytes overwritten for damage.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import anyio
import apsw
import mcp
import pytest

from memfts.errors import DatabaseOpenError, DiskFullError
from memfts.models import Entity
from memfts.server import build_server
from memfts.store import Store
from workers import RawServer, error_text, memfts_command, server_env

PAGE = 4096


def start_and_fail(db: Path) -> str:
    """Start ``memfts`` as an MCP client would; it must exit at once with one line on stderr."""
    done = subprocess.run(
        memfts_command(),
        env=server_env(db),
        stdin=subprocess.PIPE,  # held open: a server that started would wait for requests
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode != 0
    assert done.stdout == b"", "a start-up error must not be written to the MCP wire"
    lines = [line for line in done.stderr.decode().splitlines() if line.strip()]
    assert len(lines) == 1, lines
    return lines[0]


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def filled_db(path: Path, entities: int = 30) -> Path:
    store = Store(path)
    try:
        store.create_entities(
            [
                Entity(name=f"e{i}", entityType="t", observations=[f"note {i}", f"more {i}"])
                for i in range(entities)
            ]
        )
    finally:
        store.close()  # the last close folds the WAL in: the file alone holds everything
    assert not Path(f"{path}-wal").exists()
    return path


# ---- at start-up -----------------------------------------------------------------------------


def test_a_folder_that_cannot_exist(tmp_path: Path) -> None:
    blocker = tmp_path / "notes.txt"
    blocker.write_text("a file where a folder should be")
    line = start_and_fail(blocker / "memfts" / "memory.db")
    assert "is a file, not a folder" in line and str(blocker) in line
    assert blocker.read_text() == "a file where a folder should be"


def test_a_folder_the_system_will_not_create(tmp_path: Path) -> None:
    line = start_and_fail(Path("/proc/memfts-test/memory.db"))  # /proc refuses even root
    assert "cannot create the folder" in line


def test_a_path_that_is_a_folder(tmp_path: Path) -> None:
    line = start_and_fail(tmp_path)
    assert "is a folder" in line


def test_a_file_that_is_not_a_database(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    path.write_bytes(b"my notes, not a database\n" * 500)
    before = digest(path)
    line = start_and_fail(path)
    assert "not a SQLite database" in line
    assert digest(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.db"]


def test_a_newer_schema_version(tmp_path: Path) -> None:
    path = filled_db(tmp_path / "memory.db")
    conn = apsw.Connection(str(path))
    conn.pragma("user_version", 99)
    conn.close()
    before = digest(path)
    line = start_and_fail(path)
    assert "schema version 99" in line and "upgrade memfts" in line
    assert digest(path) == before


def test_a_damaged_header(tmp_path: Path) -> None:
    path = filled_db(tmp_path / "memory.db")
    with path.open("r+b") as f:  # the page size field: not a power of two
        f.seek(16)
        f.write(b"\x12\x34")
    before = digest(path)
    line = start_and_fail(path)
    assert str(path) in line and ("not a SQLite database" in line or "damaged" in line)
    assert digest(path) == before


# ---- on the call -----------------------------------------------------------------------------


def _damage_entities_table(path: Path) -> Path:
    conn = apsw.Connection(str(path))
    root = conn.execute("SELECT rootpage FROM sqlite_schema WHERE name = 'entities'").get
    conn.close()
    with path.open("r+b") as f:
        f.seek((root - 1) * PAGE)
        f.write(os.urandom(PAGE))
    return path


def test_a_damaged_table_fails_calls_clearly_and_is_left_as_it_is(tmp_path: Path) -> None:
    path = _damage_entities_table(filled_db(tmp_path / "memory.db"))
    before = digest(path)
    with RawServer(path) as server:
        for tool, arguments in [
            ("read_graph", {}),
            ("open_nodes", {"names": ["e1"]}),
            ("create_entities", {"entities": [{"name": "new", "entityType": "t"}]}),
            ("delete_entities", {"entityNames": ["e1"]}),
        ]:
            result = server.call(tool, arguments)
            assert result["isError"] is True, f"{tool}: {result}"
            message = error_text(result)
            assert "is damaged" in message and "memfts check" in message, message
            assert "\n" not in message
    assert digest(path) == before


def test_check_reports_damage_instead_of_failing(tmp_path: Path) -> None:
    """`memfts check` exists for a damaged file: it must report the damage, not raise it."""
    path = _damage_entities_table(filled_db(tmp_path / "memory.db"))
    store = Store(path)
    try:
        report = store.check()
    finally:
        store.close()
    assert not report.ok
    assert report.sqlite_integrity != "ok"


def _limited(limit_bytes: int) -> list[str]:
    """``memfts`` under a file-size limit: to SQLite exactly like a disk that is full."""
    return [
        sys.executable,
        "-c",
        "import os, resource, sys\n"
        f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limit_bytes}, {limit_bytes}))\n"
        "os.execv(sys.executable, [sys.executable, '-m', 'memfts'])",
    ]


def test_a_full_disk_fails_the_call_and_keeps_every_acknowledged_write(tmp_path: Path) -> None:
    path = filled_db(tmp_path / "memory.db")
    limit = path.stat().st_size + 256 * 1024
    acknowledged: list[str] = []
    with RawServer(path, command=_limited(limit)) as server:
        message = ""
        for i in range(200):
            name = f"big{i}"
            words = " ".join(f"w{i}x{j}" for j in range(600))  # new words: FTS and terms grow
            result = server.call(
                "create_entities",
                {"entities": [{"name": name, "entityType": "t", "observations": [words]}]},
            )
            if result["isError"]:
                message = error_text(result)
                break
            acknowledged.append(name)
        assert message, "the size limit was never reached"
        assert "no room to write" in message and "nothing was written" in message, message
        assert "\n" not in message
        # the session goes on: reads work, and the failed entity is not there
        names = [e["name"] for e in server.graph()["entities"]]
        assert names == [f"e{i}" for i in range(30)] + acknowledged
    store = Store(path)  # room again: everything acknowledged is there, the file is sound
    try:
        assert store.check().ok
        assert [e.name for e in store.read_graph().entities][30:] == acknowledged
    finally:
        store.close()


def test_a_full_database_through_the_protocol(tmp_path: Path) -> None:
    """SQLite's own limit (max_page_count) raises SQLITE_FULL itself: the tool error says the
    disk is full, nothing of the call is stored, and smaller writes still fit afterwards."""
    store = Store(filled_db(tmp_path / "memory.db"))
    pages = store._db.conn.pragma("page_count")
    # a per-connection limit: on every connection, including those of the server's threads
    store._db.on_connect(lambda conn: conn.pragma("max_page_count", pages + 8))

    async def main() -> None:
        async with mcp.Client(build_server(store), mode="legacy") as client:
            before = await client.call_tool("read_graph", {})
            result = await client.call_tool(
                "create_entities",
                {
                    "entities": [
                        {"name": "fits", "entityType": "t"},
                        {
                            "name": "too big",
                            "entityType": "t",
                            "observations": [f"{k} " + "z" * 90_000 for k in range(5)],
                        },
                    ]
                },
            )
            assert result.is_error
            text = result.content[0].text  # type: ignore[union-attr]
            assert "no room to write" in text and "nothing was written" in text, text
            after = await client.call_tool("read_graph", {})
            assert after.structured_content == before.structured_content
            small = await client.call_tool(
                "create_entities", {"entities": [{"name": "small", "entityType": "t"}]}
            )
            assert not small.is_error

    try:
        anyio.run(main)
        with pytest.raises(DiskFullError):
            store.create_entities(
                [
                    Entity(name=f"more{k}", entityType="t", observations=["r" * 90_000])
                    for k in range(5)
                ]
            )
        assert store.check().ok
    finally:
        store.close()


def test_store_open_errors_are_memfts_errors(tmp_path: Path) -> None:
    """The library raises the same one-line errors the server prints (no traceback to read)."""
    (tmp_path / "file").write_text("x")
    with pytest.raises(DatabaseOpenError, match="is a file, not a folder"):
        Store(tmp_path / "file" / "memory.db")
