"""Import from the official JSONL and SQLite forks, export back, and the round trip."""

from __future__ import annotations

import io
import json
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from memfts.models import Entity, Relation
from memfts.store import Store
from memfts.transfer import (
    ImportInterruptedError,
    JsonlSource,
    Problem,
    SqliteSource,
    TransferError,
    import_file,
    jsonl_line,
    open_source,
    parse_line,
    validate,
    write_jsonl,
)

DATA = Path(__file__).parent / "data"
OFFICIAL = DATA / "official-memory.jsonl"


def _graph(store: Store) -> tuple[list[tuple[str, str, list[str]]], list[tuple[str, str, str]]]:
    g = store.read_graph()
    return (
        [(e.name, e.entityType, list(e.observations)) for e in g.entities],
        [(r.from_, r.to, r.relationType) for r in g.relations],
    )


def _import(store: Store, path: Path, **kwargs: object) -> tuple[object, list[Problem]]:
    problems: list[Problem] = []
    result = import_file(store, path, on_problem=problems.append, **kwargs)  # type: ignore[arg-type]
    return result, problems


# ---- the official format -------------------------------------------------------------------


def test_official_file_round_trips_byte_for_byte(store: Store, tmp_path: Path) -> None:
    result, problems = _import(store, OFFICIAL)
    assert problems == []
    assert result.format == "jsonl"  # type: ignore[attr-defined]
    out = io.BytesIO()
    write_jsonl(store, out)
    assert out.getvalue() == OFFICIAL.read_bytes()


def test_reimport_adds_nothing(store: Store) -> None:
    first, _ = _import(store, OFFICIAL)
    before = _graph(store)
    second, _ = _import(store, OFFICIAL)
    c1, c2 = first.counts, second.counts  # type: ignore[attr-defined]
    assert c1.entities_added == 4 and c1.relations_added == 3 and c1.observations_added == 6
    assert (c2.entities_added, c2.observations_added, c2.relations_added) == (0, 0, 0)
    assert (c2.entities_skipped, c2.observations_skipped, c2.relations_skipped) == (4, 6, 3)
    assert _graph(store) == before


def test_import_merges_into_existing_entities(store: Store, tmp_path: Path) -> None:
    store.create_entities([Entity(name="Alice", entityType="person", observations=["Has a cat"])])
    _import(store, OFFICIAL)
    alice = store.open_nodes(["Alice"]).entities[0]
    assert alice.observations[0] == "Has a cat"  # kept, and the file's ones appended
    assert "Works at Acme Rockets" in alice.observations


def test_malformed_lines_are_reported_with_line_numbers_and_the_rest_imported(
    store: Store,
) -> None:
    result, problems = _import(store, DATA / "malformed.jsonl")
    where = {p.where: p.message for p in problems}
    assert set(where) == {f"line {n}" for n in (2, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14)}
    assert "not valid JSON" in where["line 2"]
    assert "without 'observations'" in where["line 4"]
    assert "name: must not be empty" in where["line 5"]
    assert "NUL" in where["line 6"]
    assert "relationType: Input should be a valid string" in where["line 7"]
    assert "unknown \"type\" 'note'" in where["line 8"]
    assert 'no "type"' in where["line 9"]
    assert "expected a JSON object" in where["line 10"]
    assert "observations.1: Input should be a valid string" in where["line 11"]
    assert "without 'to'" in where["line 12"]
    assert "not valid UTF-8" in where["line 13"]
    assert "Invalid control character" in where["line 14"]
    assert result.malformed == 12  # type: ignore[attr-defined]
    entities, relations = _graph(store)
    assert [e[0] for e in entities] == ["First", "Last"]  # line 3 is blank, 15 is valid
    assert relations == [("First", "Last", "knows")]


def test_odd_type_values_are_problems_not_crashes() -> None:
    for line in (b'{"type":["entity"]}', b'{"type":{"a":1}}', b'{"type":null}', b"{}"):
        item = parse_line(line, "line 1")
        assert isinstance(item, Problem), line
        assert '"type"' in item.message


def test_strict_stops_at_the_first_problem_and_validate_counts_all(store: Store) -> None:
    source = open_source(DATA / "malformed.jsonl")
    seen: list[Problem] = []
    assert validate(source, on_problem=seen.append) == 12
    result, problems = _import(store, DATA / "malformed.jsonl", strict=True)
    assert result.aborted  # type: ignore[attr-defined]
    assert [p.where for p in problems] == ["line 2"]
    assert _graph(store) == ([("First", "t", ["one"])], [])  # what came before, nothing after


def test_bom_crlf_and_legacy_json_name_are_read(store: Store, tmp_path: Path) -> None:
    legacy = tmp_path / "memory.json"
    legacy.write_bytes(b"\xef\xbb\xbf" + OFFICIAL.read_bytes().replace(b"\n", b"\r\n"))
    _, problems = _import(store, legacy)
    assert problems == []
    assert len(_graph(store)[0]) == 4


def test_batches_commit_as_they_go(store: Store, tmp_path: Path) -> None:
    big = tmp_path / "big.jsonl"
    with big.open("wb") as f:
        for i in range(2_500):
            f.write(jsonl_line(Entity(name=f"e{i}", entityType="t", observations=[f"o {i}"])))
        for i in range(1, 2_500):
            f.write(jsonl_line(Relation(from_=f"e{i - 1}", to=f"e{i}", relationType="next")))
    result, problems = _import(store, big, batch_entities=1_000)
    assert problems == []
    c = result.counts  # type: ignore[attr-defined]
    assert (c.entities_added, c.observations_added, c.relations_added) == (2_500, 2_500, 2_499)
    assert store.search_nodes("2499").entities[0].name == "e2499"


def test_a_failing_batch_keeps_the_ones_before_and_a_rerun_continues(tmp_path: Path) -> None:
    import apsw

    from memfts.store import Limits

    db = tmp_path / "busy.db"
    store = Store(db, Limits(busy_timeout_s=0.2))
    blocker = apsw.Connection(str(db))
    lines_read = 0

    @contextmanager
    def progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
        def advance(n: int) -> None:
            nonlocal lines_read
            lines_read += 1
            if lines_read == 3:  # batch 1 (lines 1-2) is in: now another process holds the lock
                blocker.execute("BEGIN IMMEDIATE")

        yield advance

    try:
        with pytest.raises(ImportInterruptedError, match=r"stopped after adding 2 entities, 4 obs"):
            import_file(store, OFFICIAL, progress=progress, batch_entities=2)
        assert [e[0] for e in _graph(store)[0]] == ["Alice", "Acme Rockets"]
        blocker.execute("ROLLBACK")
        result, _ = _import(store, OFFICIAL)
        assert result.counts.entities_added == 2 and result.counts.entities_skipped == 2  # type: ignore[attr-defined]
    finally:
        blocker.close()
        store.close()


def test_official_npm_release_file_without_final_newline(store: Store, tmp_path: Path) -> None:
    # @modelcontextprotocol/server-memory 2026.8.31 on npm writes lines.join("\n"), no final \n
    path = tmp_path / "memory.jsonl"
    path.write_bytes(OFFICIAL.read_bytes().rstrip(b"\n"))
    _, problems = _import(store, path)
    assert problems == []
    assert _graph(store)[1][-1] == ("Alice", "Café Crème", "visits")


def test_long_line_is_reported_not_read_whole(
    store: Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import memfts.transfer as transfer

    monkeypatch.setattr(transfer, "MAX_LINE_BYTES", 100)
    path = tmp_path / "long.jsonl"
    long_line = jsonl_line(Entity(name="Long", entityType="t", observations=["x" * 500]))
    short = jsonl_line(Entity(name="Short", entityType="t", observations=[]))
    path.write_bytes(long_line + short)
    _, problems = _import(store, path)
    assert [str(p) for p in problems] == ["line 1: longer than 0 MiB"]
    assert [e[0] for e in _graph(store)[0]] == ["Short"]


# ---- detection -----------------------------------------------------------------------------


def test_format_is_detected_from_content_not_extension(tmp_path: Path) -> None:
    jsonl_named_db = tmp_path / "memory.db"
    jsonl_named_db.write_bytes(OFFICIAL.read_bytes())
    assert isinstance(open_source(jsonl_named_db), JsonlSource)
    db_named_jsonl = tmp_path / "memory.jsonl"
    sqlite3.connect(db_named_jsonl).execute("CREATE TABLE entities(name, entity_type)")
    assert isinstance(open_source(db_named_jsonl), SqliteSource)
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert isinstance(open_source(empty), JsonlSource)
    other = tmp_path / "notes.txt"
    other.write_text("hello\n")
    with pytest.raises(TransferError, match="neither JSON lines"):
        open_source(other)
    with pytest.raises(TransferError, match="no such file"):
        open_source(tmp_path / "missing.jsonl")


def test_importing_a_database_into_itself_is_refused(store: Store) -> None:
    with pytest.raises(TransferError, match="being imported into"):
        import_file(store, store.path)


# ---- SQLite forks --------------------------------------------------------------------------
# Schemas as the public forks create them (see the comment in memfts/transfer.py).

ID_SCHEMA = """
CREATE TABLE entities (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT UNIQUE NOT NULL,
  entity_type TEXT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, entity_id INTEGER NOT NULL,
  content TEXT NOT NULL, created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  FOREIGN KEY (entity_id) REFERENCES entities(id) ON DELETE CASCADE, UNIQUE(entity_id, content));
CREATE TABLE relations (id INTEGER PRIMARY KEY AUTOINCREMENT, from_entity_id INTEGER NOT NULL,
  to_entity_id INTEGER NOT NULL, relation_type TEXT NOT NULL,
  created_at TIMESTAMP DEFAULT CURRENT_TIMESTAMP,
  FOREIGN KEY (from_entity_id) REFERENCES entities(id) ON DELETE CASCADE,
  FOREIGN KEY (to_entity_id) REFERENCES entities(id) ON DELETE CASCADE,
  UNIQUE(from_entity_id, to_entity_id, relation_type));
"""

NAME_SCHEMA = """
CREATE TABLE entities (name TEXT PRIMARY KEY, entity_type TEXT NOT NULL,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP);
CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, entity_name TEXT NOT NULL,
  content TEXT NOT NULL, created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  FOREIGN KEY (entity_name) REFERENCES entities(name));
CREATE TABLE relations (id INTEGER PRIMARY KEY AUTOINCREMENT, source TEXT NOT NULL,
  target TEXT NOT NULL, relation_type TEXT NOT NULL,
  created_at DATETIME DEFAULT CURRENT_TIMESTAMP,
  FOREIGN KEY (source) REFERENCES entities(name), FOREIGN KEY (target) REFERENCES entities(name));
"""

FROM_ENTITY_SCHEMA = """
CREATE TABLE entities (name TEXT PRIMARY KEY, entity_type TEXT NOT NULL);
CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, entity_name TEXT NOT NULL,
  content TEXT NOT NULL, UNIQUE(entity_name, content));
CREATE TABLE relations (id INTEGER PRIMARY KEY AUTOINCREMENT, from_entity TEXT NOT NULL,
  to_entity TEXT NOT NULL, relation_type TEXT NOT NULL,
  UNIQUE(from_entity, to_entity, relation_type));
"""

BARE_FK_TO_NAME_SCHEMA = """
CREATE TABLE entities (name TEXT PRIMARY KEY, entity_type TEXT NOT NULL);
CREATE TABLE observations (id INTEGER PRIMARY KEY, entity_name TEXT REFERENCES entities,
  content TEXT NOT NULL);
CREATE TABLE relations (id INTEGER PRIMARY KEY, from_entity TEXT REFERENCES entities,
  to_entity TEXT REFERENCES entities, relation_type TEXT NOT NULL);
"""

SOURCE_ID_NO_FK_SCHEMA = """
CREATE TABLE entities (id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL,
  entity_type TEXT NOT NULL, project TEXT NOT NULL DEFAULT '');
CREATE TABLE observations (id INTEGER PRIMARY KEY AUTOINCREMENT, entity_id INTEGER NOT NULL,
  content TEXT NOT NULL);
CREATE TABLE relations (id INTEGER PRIMARY KEY AUTOINCREMENT, source_id INTEGER NOT NULL,
  target_id INTEGER NOT NULL, relation_type TEXT NOT NULL);
"""

GRAPH = {
    "entities": [
        ("Alice", "person", ["Works at Acme", "Likes TypeScript"]),
        ("Acme", "company", ["Makes rockets"]),
        ("Bob", "person", []),
    ],
    "relations": [("Alice", "Acme", "works_at"), ("Bob", "Alice", "knows")],
}


def _fork_db(path: Path, schema: str) -> Path:
    """Fill a fork's schema the way that fork's server writes it (stdlib sqlite3, WAL)."""
    path.parent.mkdir(exist_ok=True)
    conn = sqlite3.connect(path)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.executescript(schema)
    ids: dict[str, int] = {}
    obs_cols = [r[1] for r in conn.execute("PRAGMA table_info(observations)")]
    rel_cols = [r[1] for r in conn.execute("PRAGMA table_info(relations)")][1:4]
    for name, etype, observations in GRAPH["entities"]:
        cur = conn.execute("INSERT INTO entities(name, entity_type) VALUES (?, ?)", (name, etype))
        ids[name] = cur.lastrowid  # type: ignore[assignment]
        for content in observations:
            link = ids[name] if "entity_id" in obs_cols else name
            conn.execute(f"INSERT INTO observations({obs_cols[1]}, content) VALUES (?, ?)",
                         (link, content))  # fmt: skip
    by_id = rel_cols[0].endswith("_id")
    for source, target, rtype in GRAPH["relations"]:
        ends = (ids[source], ids[target]) if by_id else (source, target)
        conn.execute(f"INSERT INTO relations({', '.join(rel_cols)}) VALUES (?, ?, ?)",
                     (*ends, rtype))  # fmt: skip
    conn.commit()
    conn.close()
    return path


@pytest.mark.parametrize(
    "schema",
    [ID_SCHEMA, NAME_SCHEMA, FROM_ENTITY_SCHEMA, BARE_FK_TO_NAME_SCHEMA, SOURCE_ID_NO_FK_SCHEMA],
    ids=["entity_id", "entity_name+source", "from_entity", "bare-fk-to-name", "source_id-no-fk"],
)
def test_sqlite_fork_imports_whole_graph(store: Store, tmp_path: Path, schema: str) -> None:
    source = _fork_db(tmp_path / "fork" / "memory.db", schema)
    result, problems = _import(store, source)
    assert problems == []
    assert result.format == "sqlite"  # type: ignore[attr-defined]
    entities, relations = _graph(store)
    assert entities == [(n, t, o) for n, t, o in GRAPH["entities"]]  # type: ignore[misc]
    assert relations == GRAPH["relations"]
    again, _ = _import(store, source)
    assert again.counts.entities_added == 0 and again.counts.relations_added == 0  # type: ignore[attr-defined]


def test_sqlite_bad_rows_are_reported_by_table_and_row(store: Store, tmp_path: Path) -> None:
    path = _fork_db(tmp_path / "fork" / "memory.db", ID_SCHEMA)
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO entities(id, name, entity_type) VALUES (10, '  ', 'x')")
    conn.execute("INSERT INTO observations(entity_id, content) VALUES (1, 'bad' || char(0))")
    conn.execute("PRAGMA foreign_keys=OFF")
    conn.execute(
        "INSERT INTO relations(id, from_entity_id, to_entity_id, relation_type) "
        "VALUES (9, 1, 999, 'ghost')"
    )
    conn.commit()
    conn.close()
    _, problems = _import(store, path)
    messages = {p.where: p.message for p in problems}
    assert "name: must not be empty" in messages["entities row 10"]
    assert "NUL" in messages["observations row 4"]
    assert messages["relations row 9"] == "target entity id 999 does not exist"
    entities, _ = _graph(store)
    assert entities[0] == ("Alice", "person", ["Works at Acme", "Likes TypeScript"])


def test_memfts_database_can_be_merged_into_another(store: Store, tmp_path: Path) -> None:
    other = Store(tmp_path / "other.db")
    other.import_batch(
        [Entity(name="Zed", entityType="dog", observations=["barks"])],
        [Relation(from_="Zed", to="Alice", relationType="likes")],
    )
    other.close()
    _, problems = _import(store, tmp_path / "other.db")
    assert problems == []
    assert _graph(store) == ([("Zed", "dog", ["barks"])], [("Zed", "Alice", "likes")])


def test_sqlite_without_entities_table_is_refused(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    sqlite3.connect(path).execute("CREATE TABLE memories(id, content)")
    with pytest.raises(TransferError, match="no entities table"):
        import_file(store, path)


def test_sqlite_unknown_columns_name_what_was_looked_for(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "odd.db"
    sqlite3.connect(path).execute("CREATE TABLE entities(label, kind)")
    with pytest.raises(TransferError, match=r"no column for the entity name .*label, kind"):
        import_file(store, path)


# ---- export --------------------------------------------------------------------------------


def test_export_lines_are_what_the_official_server_writes(store: Store) -> None:
    store.import_batch(
        [Entity(name="東京", entityType="city", observations=['say "hi"\n', "tab\there"])],
        [Relation(from_="東京", to="Japan", relationType="in")],
    )
    out = io.BytesIO()
    write_jsonl(store, out)
    # JSON.stringify output: no spaces, non-ASCII kept, control characters escaped
    assert out.getvalue().decode() == (
        '{"type":"entity","name":"東京","entityType":"city",'
        '"observations":["say \\"hi\\"\\n","tab\\there"]}\n'
        '{"type":"relation","from":"東京","to":"Japan","relationType":"in"}\n'
    )
    for line in out.getvalue().splitlines():
        assert json.loads(line)["type"] in ("entity", "relation")
