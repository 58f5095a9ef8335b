"""The full-text indexes' segments: read from FTS5's structure record, kept few by writes,
merged whole by an import, on real database files."""

from __future__ import annotations

import json
from pathlib import Path

import apsw

from memfts import segments
from memfts.database import Database
from memfts.models import Entity
from memfts.store import Store
from memfts.transfer import import_file


def _segment_ids(db: apsw.Connection, index: str) -> int:
    """The segments of ``index`` counted the slow way: the distinct segment ids of its b-tree."""
    return int(db.execute(f"SELECT count(DISTINCT segid) FROM {index}_idx").get or 0)


def _fragment(path: Path, writes: int) -> None:
    """``writes`` one-entity transactions on a plain connection: the file's triggers index
    them, each adding a segment, with no memfts upkeep to merge them."""
    db = apsw.Connection(str(path))
    try:
        for n in range(writes):
            with db:
                db.execute(
                    "INSERT INTO entities(name, entity_type) VALUES (?, 'note')", (f"note {n}",)
                )
                entity_id = db.last_insert_rowid()
                db.execute(
                    "INSERT INTO observations(id, entity_id, content) VALUES (?, ?, ?)",
                    (entity_id << 20, entity_id, f"deploy number {n} of the billing service"),
                )
    finally:
        db.close()


def _structures(path: Path) -> dict[str, segments.Structure | None]:
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return {index: segments.structure(db, index) for index in segments.INDEXES}
    finally:
        db.close()


def test_structure_record_counts_what_the_index_holds(db_path: Path) -> None:
    _fragment(db_path, 60)
    db = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        for index in ("entities_fts", "observations_fts"):
            found = segments.structure(db, index)
            assert found is not None
            assert found.segments == _segment_ids(db, index)
            assert found.segments > segments.MAX_SEGMENTS  # what writes leave without upkeep
        assert segments.structure(db, "no_such_index") is None
    finally:
        db.close()


def test_unknown_structure_records_are_left_alone() -> None:
    assert segments._decode(b"\x00\x00\x00\x01") is None  # cut short
    assert segments._decode(b"\x00\x00\x00\x01\x01\x05\x00\x00\x01\x01\x01\x01") is None


def test_writes_keep_every_index_within_bound(store: Store) -> None:
    for n in range(120):
        store.create_entities(
            [Entity(name=f"note {n}", entityType="note", observations=[f"deploy number {n}"])]
        )
        for index, found in _structures(store.path).items():
            assert found is not None
            assert found.segments <= segments.MAX_SEGMENTS, (n, index, found)
    assert store.search_nodes("deploy number 77").entities[0].name == "note 77"
    db = apsw.Connection(str(store.path), flags=apsw.SQLITE_OPEN_READONLY)
    try:  # set by the upkeep's first merge, in the index's own settings: no schema change
        for index in segments.INDEXES:
            usermerge = f"SELECT v FROM {index}_config WHERE k = 'usermerge'"
            assert db.execute(usermerge).fetchall() == [(segments.USERMERGE,)]
    finally:
        db.close()


def test_merging_changes_no_search(db_path: Path) -> None:
    _fragment(db_path, 40)
    store = Store(db_path)
    try:
        queries = ["billing", "deploy 17", "number -service", "servic", "bilin"]
        before = [store.search_nodes(q, 50).model_dump() for q in queries]
        store.merge_indexes()
        assert all(s is not None and s.segments <= 1 for s in _structures(db_path).values())
        assert [store.search_nodes(q, 50).model_dump() for q in queries] == before
        assert store.check().ok
    finally:
        store.close()


def test_an_import_ends_with_merged_indexes(store: Store, tmp_path: Path) -> None:
    source = tmp_path / "graph.jsonl"
    lines = [
        {"type": "entity", "name": f"n{i}", "entityType": "t", "observations": [f"word{i} text"]}
        for i in range(50)
    ]
    source.write_text("".join(json.dumps(line) + "\n" for line in lines))
    import_file(store, source, batch_entities=1)
    assert all(s is not None and s.segments <= 1 for s in _structures(store.path).values())
    assert store.search_nodes("word33").entities[0].name == "n33"


def test_a_small_import_leaves_the_indexes_to_the_upkeep(store: Store, tmp_path: Path) -> None:
    for n in range(12):
        store.create_entities([Entity(name=f"note {n}", entityType="note", observations=["x"])])
    before = _structures(store.path)["observations_fts"]
    assert before is not None and before.segments > 1
    source = tmp_path / "two.jsonl"
    source.write_text(
        "".join(
            json.dumps({"type": "entity", "name": f"n{i}", "entityType": "t", "observations": []})
            + "\n"
            for i in range(2)
        )
    )
    import_file(store, source)  # one batch: no rewrite of whole indexes for two entities
    after = _structures(store.path)["observations_fts"]
    assert after is not None and after.segments > 1


def test_upkeep_runs_after_changes_only_and_never_costs_a_write(db_path: Path) -> None:
    db = Database(db_path)
    calls: list[int] = []

    def failing_step(conn: apsw.Connection) -> None:
        calls.append(1)
        conn.execute("INSERT INTO no_such_table VALUES (1)")

    db.after_write(failing_step)
    try:
        with db.write() as conn:
            assert conn.execute("SELECT count(*) FROM entities").get == 0
        assert calls == []  # nothing changed: no upkeep, the file is as it was
        with db.write() as conn:
            conn.execute("INSERT INTO entities(name, entity_type) VALUES ('kept', 'note')")
        assert calls == [1]  # ran, failed, and was rolled back on its own
        with db.read() as conn:
            assert conn.execute("SELECT name FROM entities").get == "kept"
        with db.write() as conn:  # the connection is usable after the failed upkeep
            conn.execute("INSERT INTO entities(name, entity_type) VALUES ('next', 'note')")
        assert calls == [1, 1]
    finally:
        db.close()
