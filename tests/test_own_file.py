"""A store that only ever touches its own file: memfts marks its databases
(``PRAGMA application_id``), opens the ones from before the mark (v0.1), and refuses every
other file — another program's database, a SQLite fork's memory.db, a JSONL file — without
changing a byte of it (no WAL switch, no tables). Export never writes onto the database it
reads, nor through a dangling symbolic link."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import apsw
import pytest

from conftest import SQL_DIR, memfts_command
from memfts.database import APPLICATION_ID, migrations
from memfts.errors import DatabaseOpenError
from memfts.models import Entity
from memfts.store import Store
from test_transfer import ID_SCHEMA

OFFICIAL = Path(__file__).parent / "data" / "official-memory.jsonl"


def run(*args: str | bytes, db: Path | bytes | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k not in ("MEMORY_DB_PATH", "NO_COLOR")}
    prefix = ["--db", db] if db is not None else []
    return subprocess.run(
        [*memfts_command(), *prefix, *args],
        capture_output=True,
        text=True,
        env=environ,
        stdin=subprocess.DEVNULL,
        timeout=60,
    )


def pragma(path: Path, name: str) -> object:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.pragma(name)
    finally:
        conn.close()


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def one_line_error(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 1, done
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: "), done.stderr
    return lines[0]


# ---- memfts's own files --------------------------------------------------------------------


def test_a_new_database_is_marked_as_memfts(tmp_path: Path) -> None:
    path = tmp_path / "memory.db"
    Store(path).close()
    assert pragma(path, "application_id") == APPLICATION_ID


def test_a_file_from_before_the_mark_opens_and_is_marked(tmp_path: Path) -> None:
    """v0.1 files (schema 001-002, no application_id) exist in the wild: they open, keep
    their data, get the later schema files and the mark."""
    path = tmp_path / "v01.db"
    conn = apsw.Connection(str(path))
    conn.pragma("journal_mode", "wal")
    for version, file in migrations(SQL_DIR)[:2]:
        with conn:
            conn.execute(file.read_text())
            conn.pragma("user_version", version)
    conn.execute(
        "INSERT INTO entities(name, entity_type) VALUES ('Alice', 'person');"
        "INSERT INTO observations(id, entity_id, content) VALUES (1 << 20, 1, 'likes tea')"
    )
    conn.close()
    assert pragma(path, "application_id") == 0
    store = Store(path)
    try:
        assert [e.observations for e in store.read_graph().entities] == [["likes tea"]]
        assert [e.name for e in store.search_nodes("tea").entities] == ["Alice"]
    finally:
        store.close()
    assert pragma(path, "application_id") == APPLICATION_ID
    assert pragma(path, "user_version") == migrations()[-1][0]


# ---- other programs' files -----------------------------------------------------------------


def other_programs_db(path: Path, application_id: int = 0) -> Path:
    conn = apsw.Connection(str(path))
    conn.execute(
        "CREATE TABLE invoices(id INTEGER PRIMARY KEY, total REAL);"
        "INSERT INTO invoices(total) VALUES (12.5), (99);"
        "CREATE TABLE customers(id INTEGER PRIMARY KEY, name TEXT)"
    )
    conn.pragma("application_id", application_id)
    conn.close()
    return path


@pytest.mark.parametrize("application_id", [0, 0x0F055112])
def test_another_programs_database_is_refused_and_left_as_it_was(
    tmp_path: Path, application_id: int
) -> None:
    """It used to get 17 memfts tables and be switched to WAL."""
    path = other_programs_db(tmp_path / "app.db", application_id)
    before = digest(path)
    with pytest.raises(DatabaseOpenError, match="another program's SQLite database") as error:
        Store(path)
    assert "left it as it was" in str(error.value)
    assert digest(path) == before
    assert pragma(path, "journal_mode") == "delete"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["app.db"]
    line = one_line_error(run("stats", db=path))
    assert "another program's SQLite database" in line
    line = one_line_error(run("serve", db=path))
    assert "another program's SQLite database" in line
    assert digest(path) == before


def test_a_forks_memory_db_gets_the_hint_to_import_it(tmp_path: Path) -> None:
    """A SQLite fork's memory.db was switched to WAL and then failed with "table entities
    already exists". It is refused untouched, with the command that does work."""
    fork = tmp_path / "memory.db"
    conn = apsw.Connection(str(fork))
    conn.execute(ID_SCHEMA)
    conn.execute("INSERT INTO entities(name, entity_type) VALUES ('Alice', 'person')")
    conn.close()
    before = digest(fork)
    line = one_line_error(run("search", "alice", db=fork))
    assert f"`memfts import {fork}`" in line
    assert digest(fork) == before and pragma(fork, "journal_mode") == "delete"
    target = tmp_path / "memfts.db"
    done = run("import", str(fork), db=target)
    assert done.returncode == 0, done.stderr
    assert "Alice" in run("show", "Alice", db=target).stdout


def test_a_json_lines_file_given_as_the_database_gets_the_hint_to_import_it(
    tmp_path: Path,
) -> None:
    jsonl = tmp_path / "memory.jsonl"
    jsonl.write_bytes(OFFICIAL.read_bytes())
    before = digest(jsonl)
    for command in (["stats"], ["serve"]):
        line = one_line_error(run(*command, db=jsonl))
        assert "is a JSON memory file" in line and f"`memfts import {jsonl}`" in line
    assert digest(jsonl) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["memory.jsonl"]


def test_a_path_that_is_not_utf8_is_one_line(tmp_path: Path) -> None:
    """It crashed with a traceback (SQLite takes only UTF-8 file names): as the database,
    as a new database to create, as a SQLite file to import."""
    folder = os.fsencode(tmp_path) + b"/caf\xe9"
    os.mkdir(folder)
    existing = folder + b"/memory.db"
    Store(tmp_path / "made.db").close()
    os.rename(tmp_path / "made.db", existing)
    for args, db in (
        (["stats"], existing),
        (["import", str(OFFICIAL)], folder + b"/new.db"),
        (["import", existing], tmp_path / "good.db"),
    ):
        line = one_line_error(run(*args, db=db))
        assert "is not UTF-8 text" in line and "caf\ufffd" in line, line
    assert os.listdir(folder) == [b"memory.db"]
    assert not (tmp_path / "good.db").exists()


# ---- export never writes onto the database -------------------------------------------------


@pytest.fixture
def filled(tmp_path: Path) -> Path:
    path = tmp_path / "m.db"
    store = Store(path)
    store.create_entities([Entity(name="Alice", entityType="person", observations=["a note"])])
    store.close()
    return path


def test_export_refuses_to_write_onto_the_database_it_reads(filled: Path) -> None:
    """`memfts --db m.db export m.db --force` replaced the live database with JSONL (a running
    server then acknowledged 20 writes into the deleted file). Refused by device and inode:
    under its own name, through a symbolic link, through a hard link, onto its WAL."""
    folder = filled.parent
    (folder / "link.db").symlink_to(filled)
    os.link(filled, folder / "hard.db")
    for target in (filled, folder / "link.db", folder / "hard.db", folder / "./m.db"):
        line = one_line_error(run("export", str(target), "--force", db=filled))
        assert "is the database being copied" in line, line
    store = Store(filled)  # a server holding it open, so the WAL exists
    try:
        line = one_line_error(run("export", f"{filled}-wal", "--force", db=filled))
        assert "a file of the database being copied" in line
    finally:
        store.close()
    store = Store(filled)
    try:
        assert store.check().ok
        assert [e.name for e in store.read_graph().entities] == ["Alice"]
    finally:
        store.close()


def test_export_refuses_a_dangling_symbolic_link(filled: Path) -> None:
    """It wrote through it (to wherever it pointed), without --force."""
    elsewhere = filled.parent / "elsewhere"
    elsewhere.mkdir()
    link = filled.parent / "out.jsonl"
    link.symlink_to(elsewhere / "target.jsonl")
    for force in ([], ["--force"]):
        line = one_line_error(run("export", str(link), *force, db=filled))
        assert "symbolic link" in line and "does not exist" in line
    assert os.listdir(elsewhere) == []
    done = run("export", str(filled.parent / "fine.jsonl"), db=filled)
    assert done.returncode == 0 and "Alice" in (filled.parent / "fine.jsonl").read_text()
