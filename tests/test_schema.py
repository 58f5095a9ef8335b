"""The schema: numbered sql/ files applied in order, once, tracked in PRAGMA user_version;
newer files refused untouched; the file stays usable by the stock sqlite3 3.40 shell."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import apsw
import pytest

from memfts import database
from memfts.errors import DatabaseOpenError
from memfts.models import Entity
from memfts.store import Store

ROOT = Path(__file__).resolve().parents[1]
SQL_FILES = sorted((ROOT / "sql").glob("[0-9][0-9][0-9]_*.sql"))
NEXT = len(SQL_FILES) + 1
"""The number a schema file added after the shipped ones takes."""
SQLITE3_SHELL = "/usr/bin/sqlite3"


def user_version(path: Path) -> int:
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return int(conn.pragma("user_version"))
    finally:
        conn.close()


def schema_of(path: Path) -> list[tuple[str, str, str]]:
    """Every schema object, as SQLite stores it (shadow tables of FTS5 included)."""
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(
            "SELECT type, name, coalesce(sql, '') FROM sqlite_schema ORDER BY type, name"
        ).fetchall()
    finally:
        conn.close()


def open_and_close(path: Path) -> None:
    Store(path).close()


@pytest.fixture
def custom_sql(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A schema folder of our own, holding a copy of the real files, used by Store instead."""
    folder = tmp_path / "sql"
    folder.mkdir()
    for file in SQL_FILES:
        shutil.copy(file, folder / file.name)
    monkeypatch.setattr(database, "sql_dir", lambda: folder)
    return folder


# ---- applying the files --------------------------------------------------------------------


def test_the_shipped_sql_files_are_numbered_from_001_without_gaps() -> None:
    assert SQL_FILES, "no sql/NNN_*.sql files"
    assert [int(f.name[:3]) for f in SQL_FILES] == list(range(1, len(SQL_FILES) + 1))
    assert [v for v, _ in database.migrations(ROOT / "sql")] == list(range(1, len(SQL_FILES) + 1))


def test_a_new_file_gets_every_schema_file_and_the_version(tmp_path: Path, db_path: Path) -> None:
    fresh = tmp_path / "sub" / "dir" / "fresh.db"
    open_and_close(fresh)
    assert user_version(fresh) == len(SQL_FILES)
    # the same schema a user gets by applying sql/ by hand (what conftest does)
    assert schema_of(fresh) == schema_of(db_path)
    conn = apsw.Connection(str(fresh), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        assert conn.pragma("journal_mode") == "wal"
    finally:
        conn.close()


def test_reopening_changes_nothing(db_path: Path) -> None:
    store = Store(db_path)
    store.create_entities([Entity(name="A", entityType="t", observations=["kept"])])
    store.close()
    schema, version = schema_of(db_path), user_version(db_path)

    for _ in range(3):
        open_and_close(db_path)

    assert schema_of(db_path) == schema
    assert user_version(db_path) == version == len(SQL_FILES)
    store = Store(db_path)
    try:
        assert [e.name for e in store.read_graph().entities] == ["A"]
        assert store.check().ok
    finally:
        store.close()


def test_files_are_applied_in_order_and_each_only_once(tmp_path: Path, custom_sql: Path) -> None:
    # the next file needs the shipped tables, the one after it the next one's column; re-running
    # any of them would fail ("duplicate column", "table already exists"), so a second
    # application cannot go unseen.
    (custom_sql / f"{NEXT:03d}_note.sql").write_text("ALTER TABLE entities ADD COLUMN note TEXT;\n")
    (custom_sql / f"{NEXT + 1:03d}_notes_index.sql").write_text(
        "CREATE TABLE applied(step INTEGER);\n"
        "INSERT INTO applied VALUES (3);\n"
        "CREATE INDEX entities_note ON entities(note);\n"
    )
    fresh = tmp_path / "fresh.db"
    open_and_close(fresh)
    open_and_close(fresh)
    assert user_version(fresh) == NEXT + 1
    conn = apsw.Connection(str(fresh))
    try:
        assert conn.execute("SELECT step FROM applied").fetchall() == [(3,)]
        assert "note" in [row[1] for row in conn.execute("PRAGMA table_info(entities)")]
    finally:
        conn.close()


def test_an_older_file_gets_only_the_missing_files(db_path: Path, custom_sql: Path) -> None:
    store = Store(db_path)  # at the shipped version, with data
    store.create_entities([Entity(name="A", entityType="t", observations=["before upgrade"])])
    store.close()
    (custom_sql / f"{NEXT:03d}_note.sql").write_text("ALTER TABLE entities ADD COLUMN note TEXT;\n")

    store = Store(db_path)
    try:
        assert user_version(db_path) == NEXT
        assert [e.observations for e in store.read_graph().entities] == [["before upgrade"]]
        assert store.check().ok
    finally:
        store.close()


def test_a_failing_schema_file_is_rolled_back_whole(db_path: Path, custom_sql: Path) -> None:
    (custom_sql / f"{NEXT:03d}_broken.sql").write_text(
        "CREATE TABLE half_done(x);\nTHIS IS NOT SQL;\n"
    )
    with pytest.raises(apsw.Error):
        Store(db_path)
    assert user_version(db_path) == NEXT - 1
    assert "half_done" not in [name for _, name, _ in schema_of(db_path)]


def test_a_gap_in_the_numbering_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "gappy"
    folder.mkdir()
    for name in ("001_a.sql", "003_c.sql"):
        (folder / name).write_text("SELECT 1;")
    (folder / "notes.txt").write_text("ignored")
    with pytest.raises(RuntimeError, match="no gap"):
        database.migrations(folder)


# ---- a newer file is refused, untouched ----------------------------------------------------


@pytest.mark.parametrize("journal_mode", ["wal", "delete"])
def test_a_newer_schema_is_refused_and_the_file_left_untouched(
    db_path: Path, journal_mode: str
) -> None:
    conn = apsw.Connection(str(db_path))
    conn.pragma("journal_mode", journal_mode)
    conn.pragma("user_version", 99)
    conn.close()
    before = db_path.read_bytes()
    siblings = sorted(p.name for p in db_path.parent.iterdir())

    with pytest.raises(DatabaseOpenError) as error:
        Store(db_path)

    assert db_path.read_bytes() == before, "the refused file was modified"
    # (checked before our own read-only look below, which leaves -wal/-shm files itself)
    assert sorted(p.name for p in db_path.parent.iterdir()) == siblings
    message = str(error.value)
    assert "99" in message and "newer" in message and "upgrade memfts" in message
    assert str(len(SQL_FILES)) in message
    assert user_version(db_path) == 99


def test_a_file_that_is_not_a_database_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_bytes(b"these are my notes, not a database\n" * 200)
    before = path.read_bytes()
    with pytest.raises(DatabaseOpenError, match="not a SQLite database"):
        Store(path)
    assert path.read_bytes() == before


# ---- the stock sqlite3 3.40 shell ----------------------------------------------------------


def sqlite3_shell(path: Path, sql: str) -> str:
    done = subprocess.run(
        [SQLITE3_SHELL, "-bail", "-batch", str(path)],
        input=sql,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0 and not done.stderr, done.stderr
    return done.stdout


def test_the_stock_shell_is_the_old_version_we_promise_to_support() -> None:
    version = sqlite3_shell(Path(":memory:"), "SELECT sqlite_version();").strip()
    assert version.startswith("3.40."), version


def test_the_file_is_readable_and_writable_by_the_stock_sqlite3_shell(db_path: Path) -> None:
    store = Store(db_path)
    try:
        store.create_entities(
            [
                Entity(name="Alice", entityType="person", observations=["writes TypeScript"]),
                Entity(name="Bob", entityType="person", observations=["plays chess"]),
            ]
        )
        # The server stays open while the shell works on the same file, as in real use.
        out = sqlite3_shell(
            db_path,
            """
            SELECT e.name FROM observations_fts
              JOIN observations o ON o.id = observations_fts.rowid
              JOIN entities e ON e.id = o.entity_id
             WHERE observations_fts MATCH 'typescript';
            SELECT name FROM entities_fts WHERE entities_fts MATCH 'bob';
            INSERT INTO observations(id, entity_id, content)
              SELECT (SELECT max(o.id) + 1 FROM observations o
                       WHERE o.id BETWEEN e.id << 20 AND (e.id << 20) + 1048575),
                     e.id, 'learned Haskell from the shell'
                FROM entities e WHERE e.name = 'Alice';
            INSERT INTO entities(name, entity_type) VALUES ('Carol', 'shell user');
            UPDATE observations SET content = 'plays go' WHERE content = 'plays chess';
            DELETE FROM observations WHERE content = 'writes TypeScript';
            INSERT INTO observations_fts(observations_fts, rank) VALUES ('integrity-check', 1);
            INSERT INTO entities_fts(entities_fts, rank) VALUES ('integrity-check', 1);
            SELECT count(*) FROM observations_fts WHERE observations_fts MATCH 'haskell';
            """,
        )
        assert out.split() == ["Alice", "Bob", "1"]

        report = store.check()
        assert report.ok, report
        assert [e.name for e in store.search_nodes("haskell").entities] == ["Alice"]
        assert [e.name for e in store.search_nodes("carol").entities] == ["Carol"]
        assert [e.name for e in store.search_nodes("go").entities] == ["Bob"]
        assert store.search_nodes("chess").total == 0
        assert store.search_nodes("typescript").total == 0
        assert store.open_nodes(["Alice"]).entities[0].observations == [
            "learned Haskell from the shell"
        ]
    finally:
        store.close()
    # and after memfts closed it, the shell still opens it cleanly
    assert sqlite3_shell(db_path, "PRAGMA integrity_check;").strip() == "ok"


def test_the_spelling_key_is_the_same_in_sql_and_in_python(db_path: Path) -> None:
    """sql/005 computes ``search_terms.loose`` in SQL; ``vocabulary.loose_key`` must agree,
    or a query word's key would miss the indexed words it is meant to find."""
    from memfts import vocabulary

    words = ["yıldız", "æbelø", "œuvre", "straße", "łódź", "đorđe", "þór", "καφές", "οδός", "plain"]
    words += ["mueller", "schroeder", "jaeger", "aalborg", "queue", "maeaae"]
    words += ["".join(vocabulary._LOOSE_LETTERS)]
    conn = apsw.Connection(str(db_path))
    try:
        conn.executemany("INSERT INTO search_terms(term) VALUES (?)", [(w,) for w in words])
        stored = dict(conn.execute("SELECT term, loose FROM search_terms").fetchall())
    finally:
        conn.close()
    assert stored == {w: vocabulary.loose_key(w) for w in words}
    assert stored["yıldız"] == "yildiz" and stored["οδός"] == "οδοσ"
    assert stored["mueller"] == "muller" and stored["aalborg"] == "alborg"
    assert stored["æbelø"] == "abelo"  # æ is ae, which is a


def test_an_observation_id_outside_its_entitys_range_is_refused(db_path: Path) -> None:
    """The search reads a hit's entity from its rowid (id >> 20): a row written by another
    tool with any other id must be refused, not silently attributed to the wrong entity."""
    conn = apsw.Connection(str(db_path))
    try:
        conn.execute("INSERT INTO entities(id, name, entity_type) VALUES (3, 'A', 't')")
        with pytest.raises(apsw.ConstraintError, match="CHECK"):
            conn.execute("INSERT INTO observations(entity_id, content) VALUES (3, 'no id')")
        conn.execute("INSERT INTO observations(id, entity_id, content) VALUES (3 << 20, 3, 'ok')")
        assert conn.execute("SELECT count(*) FROM observations").get == 1
    finally:
        conn.close()


# ---- deleted stays deleted -----------------------------------------------------------------


def test_an_entity_deleted_in_the_stock_shell_stays_deleted(db_path: Path) -> None:
    """The README suggests the sqlite3 shell for repairs, and its foreign keys are off: a
    DELETE there leaves the entity's observations behind. Entity ids used to be reused, so
    the next entity created inherited them ("bob's bank PIN" showed up on carol) and
    `memfts check` said healthy. Now the id is never given again, check finds the orphans,
    and --repair removes them (their full-text entries too)."""
    from test_cli import run  # a real `memfts` process

    store = Store(db_path)
    try:
        store.create_entities(
            [
                Entity(name="alice", entityType="person", observations=["likes tea"]),
                Entity(name="bob", entityType="person", observations=["bob's bank PIN is 4711"]),
            ]
        )
        sqlite3_shell(db_path, "DELETE FROM entities WHERE name = 'bob';")
        store.create_entities([Entity(name="carol", entityType="person")])
        assert store.open_nodes(["carol"]).entities[0].observations == []
        assert store.search_nodes("PIN").entities == []
        report = store.check()
        assert not report.ok and report.orphaned_rows == 1
    finally:
        store.close()

    done = run("check", db=db_path)
    assert done.returncode == 1
    assert "1 belong to nothing" in done.stdout and "memfts check --repair" in done.stdout
    done = run("check", "--repair", db=db_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "removed 1 orphaned rows" in done.stdout
    assert run("check", db=db_path).returncode == 0
    assert sqlite3_shell(db_path, "SELECT count(*) FROM observations;").strip() == "1"
    assert (
        sqlite3_shell(
            db_path, "SELECT count(*) FROM observations_fts WHERE observations_fts MATCH 'pin';"
        ).strip()
        == "0"
    )
    # and the shell can go on creating entities: ids still never come back
    sqlite3_shell(db_path, "DELETE FROM entities WHERE name = 'carol';")
    out = sqlite3_shell(
        db_path,
        "INSERT INTO entities(name, entity_type) VALUES ('dave', 'p'); "
        "SELECT id FROM entities WHERE name = 'dave';",
    )
    assert int(out) == 4


def test_ids_are_not_reused_after_the_upgrade_of_an_older_file(
    tmp_path: Path, custom_sql: Path
) -> None:
    """A file made before the rebuild, already holding an orphan (its entity deleted by the
    shell): the upgrade keeps every row and id, keeps the orphan for check to report, and
    counts the orphan's id as given, so no new entity lands on it."""
    path = tmp_path / "old.db"
    conn = apsw.Connection(str(path))
    rebuild = next(f for f in SQL_FILES if f.name.endswith("_entity_ids_never_reused.sql"))
    older = [f for f in SQL_FILES if f.name < rebuild.name]
    for i, file in enumerate(older, start=1):
        with conn:
            conn.execute(file.read_text())
            conn.pragma("user_version", i)
    conn.execute(
        "INSERT INTO entities(id, name, entity_type) VALUES (1, 'alice', 'p'), (2, 'bob', 'p');"
        "INSERT INTO observations(id, entity_id, content) VALUES (1 << 20, 1, 'tea'),"
        " (2 << 20, 2, 'secret');"
        "DELETE FROM entities WHERE id = 2"  # foreign keys off: bob's observation stays
    )
    conn.close()
    store = Store(path)
    try:
        assert [e.name for e in store.read_graph().entities] == ["alice"]
        assert store.check().orphaned_rows == 1
        store.create_entities([Entity(name="carol", entityType="p")])
        assert store.open_nodes(["carol"]).entities[0].observations == []
        assert store.check(repair=True).ok
        assert store.search_nodes("tea").entities[0].name == "alice"
    finally:
        store.close()
    assert "AUTOINCREMENT" in dict((n, s) for _, n, s in schema_of(path))["entities"]
    # the upgraded file has exactly the schema of a new one: every index and trigger on
    # entities (the full-text index's, the vectors') came back
    fresh = tmp_path / "fresh.db"
    Store(fresh).close()
    assert schema_of(path) == schema_of(fresh)
