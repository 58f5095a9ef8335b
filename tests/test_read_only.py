"""A memory that cannot be written (a read-only folder, file or mount, a snapshot, a backup)
is still read and searched by every reading command and by the server; writes fail with one
line saying why. Before, `stats`, `search`, `export`, `check` and `import` from such a file
failed with a misleading "No such file or directory" or SQLITE_READONLY_DIRECTORY.

Root writes through any permission, so as root the command runs in a mount namespace of its
own where the paths are bind-mounted read-only (read-only media, EROFS); as any other user the
paths are made read-only with chmod for the duration of the command."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from conftest import memfts_command
from memfts.models import Entity
from memfts.store import Store
from workers import initialize_request

OFFICIAL = Path(__file__).parent / "data" / "official-memory.jsonl"


@contextlib.contextmanager
def unwritable(paths: list[Path]) -> Iterator[list[str]]:
    """The command prefix that runs a command with ``paths`` read-only."""
    if os.geteuid() == 0:
        mounts = " && ".join(f"mount --bind -o ro '{p}' '{p}'" for p in paths)
        yield ["unshare", "--mount", "--propagation", "private", "sh", "-c",
               f'{mounts} && exec "$@"', "sh"]  # fmt: skip
        return
    modes = {p: p.stat().st_mode for p in paths}
    for p in paths:
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        yield []
    finally:
        for p, mode in modes.items():
            p.chmod(mode)


def run_on(
    *args: str, db: Path, read_only: list[Path], stdin: bytes = b""
) -> subprocess.CompletedProcess[bytes]:
    """``memfts --db DB ARGS`` with the ``read_only`` paths not writable."""
    environ = {k: v for k, v in os.environ.items() if k not in ("MEMORY_DB_PATH", "NO_COLOR")}
    with unwritable(read_only) as prefix:
        return subprocess.run(
            [*prefix, *memfts_command(), "--db", str(db), *args],
            input=stdin,
            capture_output=True,
            env=environ,
            timeout=60,
        )


def filled(path: Path) -> Path:
    store = Store(path)
    try:
        store.create_entities(
            [
                Entity(name="alice", entityType="person", observations=["likes green tea"]),
                Entity(name="bob", entityType="person", observations=["plays the oboe"]),
            ]
        )
    finally:
        store.close()
    return path


def one_line(done: subprocess.CompletedProcess[bytes]) -> str:
    assert done.returncode == 1, done
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), lines
    return lines[0]


def test_a_read_only_folder_serves_every_reading_command(tmp_path: Path) -> None:
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    db = filled(shelf / "memory.db")

    def ok(*args: str) -> str:
        done = run_on(*args, db=db, read_only=[shelf])
        assert done.returncode == 0, done.stderr.decode()
        return done.stdout.decode()

    assert "entities:       2" in ok("stats")
    assert "alice" in ok("search", "tea")
    assert "plays the oboe" in ok("show", "bob")
    assert json.loads(ok("export").splitlines()[0])["name"] == "alice"
    assert "sqlite integrity: ok" in ok("check")
    copy = tmp_path / "copy.db"
    done = run_on("import", str(db), db=copy, read_only=[shelf])
    assert done.returncode == 0, done.stderr.decode()
    assert "2 added" in done.stdout.decode()

    for args in (["import", str(OFFICIAL)], ["optimize"], ["check", "--repair"]):
        line = one_line(run_on(*args, db=db, read_only=[shelf]))
        assert "is read-only" in line and "nothing was written" in line, line
    assert sorted(p.name for p in shelf.iterdir()) == ["memory.db"]  # nothing left beside it


def test_a_read_only_file_in_a_writable_folder(tmp_path: Path) -> None:
    db = filled(tmp_path / "memory.db")
    done = run_on("search", "alice", db=db, read_only=[db])
    assert done.returncode == 0, done.stderr.decode()
    assert "alice" in done.stdout.decode()
    line = one_line(run_on("import", str(OFFICIAL), db=db, read_only=[db]))
    assert "is read-only" in line


def piped_session(*calls: tuple[str, dict[str, Any]]) -> bytes:
    lines = [initialize_request(), {"jsonrpc": "2.0", "method": "notifications/initialized"}]
    for i, (tool, arguments) in enumerate(calls, start=1):
        lines.append(
            {
                "jsonrpc": "2.0",
                "id": i,
                "method": "tools/call",
                "params": {"name": tool, "arguments": arguments},
            }
        )
    return b"".join(json.dumps(line).encode() + b"\n" for line in lines)


def test_the_server_serves_reads_and_refuses_writes_in_one_line(tmp_path: Path) -> None:
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    db = filled(shelf / "memory.db")
    done = run_on(
        "serve",
        db=db,
        read_only=[shelf],
        stdin=piped_session(
            ("search_nodes", {"query": "oboe"}),
            ("create_entities", {"entities": [{"name": "carol", "entityType": "person"}]}),
            ("read_graph", {}),
        ),
    )
    assert done.returncode == 0, done.stderr.decode()
    answers = {a["id"]: a for a in map(json.loads, done.stdout.splitlines())}
    found = answers[1]["result"]["structuredContent"]["entities"]
    assert [e["name"] for e in found] == ["bob"]
    refused = answers[2]["result"]
    assert refused["isError"] is True
    (text,) = [block["text"] for block in refused["content"]]
    assert "is read-only" in text and "\n" not in text
    graph = answers[3]["result"]["structuredContent"]
    assert [e["name"] for e in graph["entities"]] == ["alice", "bob"]
    err = done.stderr.decode()
    assert "cannot be written" in err and "serving it for reading" in err


def test_a_reader_that_cannot_write_sees_what_a_server_just_wrote(tmp_path: Path) -> None:
    """A server (which can write) has the file open, its last writes still in the WAL; a
    reader that cannot write the folder reads through the server's -shm and -wal."""
    shelf = tmp_path / "shelf"
    shelf.mkdir()
    db = filled(shelf / "memory.db")
    server = Store(db)
    try:
        server.create_entities([Entity(name="carol", entityType="person", observations=["new"])])
        assert Path(f"{db}-wal").stat().st_size > 0
        done = run_on("search", "carol", db=db, read_only=[shelf])
        assert done.returncode == 0, done.stderr.decode()
        assert "carol" in done.stdout.decode()
    finally:
        server.close()
