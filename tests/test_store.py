"""The store on real database files built from sql/: semantics of every operation.

The official memory server's rules (unique names, ordered unique observations, relations by
name, all-or-nothing add_observations) plus memfts' own promises: one transaction per write,
UPSERT never REPLACE (ids and order survive, the FTS indexes stay consistent), ranked search.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw
import pytest

from memfts.errors import EntityNotFoundError, InputTooLargeError
from memfts.models import (
    Entity,
    ObservationAddition,
    ObservationDeletion,
    Relation,
)
from memfts.store import Limits, Store


def E(name: str, entity_type: str, *observations: str) -> Entity:
    return Entity(name=name, entityType=entity_type, observations=list(observations))


def R(from_: str, to: str, relation_type: str) -> Relation:
    return Relation(from_=from_, to=to, relationType=relation_type)


def add(name: str, *contents: str) -> ObservationAddition:
    return ObservationAddition(entityName=name, contents=list(contents))


def rows(db_path: Path, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the file through a second, independent connection (what another process sees)."""
    conn = apsw.Connection(str(db_path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


def names(entities: list[Entity]) -> list[str]:
    return [e.name for e in entities]


def graph_of(store: Store) -> dict[str, Any]:
    return store.read_graph().model_dump(mode="json", by_alias=True)


def assert_consistent(store: Store) -> None:
    report = store.check()
    assert report.ok, report
    assert report.fts_integrity == "ok"
    assert report.sqlite_integrity == "ok"


def filler(count: int, entity_type: str = "filler") -> list[Entity]:
    """Unrelated rows: bm25 needs a corpus where the searched words are rare to rank at all."""
    return [
        E(f"filler{i:03d}", entity_type, f"unrelated note number {i} about weather and lunch")
        for i in range(count)
    ]


# ---- create_entities -----------------------------------------------------------------------


def test_create_entities_returns_created_and_reads_back(store: Store) -> None:
    created = store.create_entities([E("Alice", "person", "likes tea", "lives in Paris")])
    assert [e.model_dump() for e in created] == [
        {"name": "Alice", "entityType": "person", "observations": ["likes tea", "lives in Paris"]}
    ]
    assert graph_of(store) == {
        "entities": [
            {
                "name": "Alice",
                "entityType": "person",
                "observations": ["likes tea", "lives in Paris"],
            }
        ],
        "relations": [],
    }
    assert_consistent(store)


def test_create_entities_skips_existing_name_and_keeps_the_stored_one(
    store: Store, db_path: Path
) -> None:
    store.create_entities([E("Alice", "person", "first")])
    ids_before = rows(db_path, "SELECT id, entity_type FROM entities")
    obs_before = rows(db_path, "SELECT id, content FROM observations ORDER BY id")

    created = store.create_entities([E("Alice", "robot", "second"), E("Bob", "person")])

    assert names(created) == ["Bob"]
    assert rows(db_path, "SELECT id, entity_type FROM entities WHERE name = 'Alice'") == ids_before
    assert rows(db_path, "SELECT id, content FROM observations ORDER BY id") == obs_before
    assert store.open_nodes(["Alice"]).entities[0].model_dump() == {
        "name": "Alice",
        "entityType": "person",
        "observations": ["first"],
    }
    assert_consistent(store)


def test_create_entities_duplicate_names_in_one_call_keep_the_first(store: Store) -> None:
    created = store.create_entities(
        [E("Alice", "person", "one"), E("Bob", "person"), E("Alice", "cat", "two")]
    )
    assert [(e.name, e.entityType, e.observations) for e in created] == [
        ("Alice", "person", ["one"]),
        ("Bob", "person", []),
    ]
    assert [(e.name, e.entityType) for e in store.read_graph().entities] == [
        ("Alice", "person"),
        ("Bob", "person"),
    ]
    assert_consistent(store)


def test_names_are_case_sensitive_like_the_official_server(store: Store) -> None:
    created = store.create_entities([E("alice", "person"), E("Alice", "person")])
    assert names(created) == ["alice", "Alice"]
    assert names(store.open_nodes(["ALICE"]).entities) == []


def test_create_entities_repeated_observations_are_stored_once(store: Store) -> None:
    created = store.create_entities([E("Alice", "person", "tea", "tea", "coffee")])
    assert created[0].observations == ["tea", "coffee"]
    assert store.read_graph().entities[0].observations == ["tea", "coffee"]


def test_unicode_and_odd_text_round_trip_exactly(store: Store) -> None:
    odd = [
        "東京タワーに行きました",
        "emoji 🧠🚀 mixed",
        "quotes ' \" ` « » “ ” ‘ ’",
        "back\\slash and \t tab\nnewline",
        "  leading and trailing spaces  ",
        "'; DROP TABLE entities; --",
        "%_ like wildcards",
    ]
    store.create_entities([E("Ünïcødé 名前", "тип", *odd)])
    assert store.read_graph().entities[0].model_dump() == {
        "name": "Ünïcødé 名前",
        "entityType": "тип",
        "observations": odd,
    }
    assert_consistent(store)


# ---- create_relations ----------------------------------------------------------------------


def test_create_relations_skips_existing_and_in_call_duplicates(store: Store) -> None:
    store.create_entities([E("A", "t"), E("B", "t")])
    assert store.create_relations([R("A", "B", "knows")]) == [R("A", "B", "knows")]
    created = store.create_relations(
        [R("A", "B", "knows"), R("B", "A", "knows"), R("B", "A", "knows"), R("A", "B", "likes")]
    )
    assert created == [R("B", "A", "knows"), R("A", "B", "likes")]
    assert store.read_graph().relations == [
        R("A", "B", "knows"),
        R("B", "A", "knows"),
        R("A", "B", "likes"),
    ]
    assert_consistent(store)


def test_relation_to_a_not_yet_existing_entity_is_accepted(store: Store) -> None:
    store.create_entities([E("A", "t")])
    assert store.create_relations([R("A", "Later", "waits for"), R("Nobody", "Nowhere", "x")]) == [
        R("A", "Later", "waits for"),
        R("Nobody", "Nowhere", "x"),
    ]
    store.create_entities([E("Later", "t")])
    graph = store.open_nodes(["Later"])
    assert names(graph.entities) == ["Later"]
    assert graph.relations == [R("A", "Later", "waits for")]
    assert_consistent(store)


# ---- add_observations ----------------------------------------------------------------------


def test_add_observations_appends_in_insertion_order(store: Store) -> None:
    store.create_entities([E("A", "t", "zeta")])
    result = store.add_observations([add("A", "alpha", "mu", "beta")])
    assert [r.model_dump() for r in result] == [
        {"entityName": "A", "addedObservations": ["alpha", "mu", "beta"]}
    ]
    assert store.read_graph().entities[0].observations == ["zeta", "alpha", "mu", "beta"]
    assert_consistent(store)


def test_add_existing_observation_is_a_noop_keeping_ids_and_order(
    store: Store, db_path: Path
) -> None:
    store.create_entities([E("A", "t", "one", "two", "three")])
    before = rows(db_path, "SELECT id, entity_id, content FROM observations ORDER BY id")

    result = store.add_observations([add("A", "two", "four", "one")])

    assert result[0].addedObservations == ["four"]
    after = rows(db_path, "SELECT id, entity_id, content FROM observations ORDER BY id")
    assert after[:3] == before  # same ids, same rows: no REPLACE behind the scenes
    assert [r[2] for r in after] == ["one", "two", "three", "four"]
    assert_consistent(store)


def test_add_observations_to_missing_entity_fails_whole_call_and_saves_nothing(
    store: Store, db_path: Path
) -> None:
    store.create_entities([E("A", "t", "kept"), E("B", "t")])
    snapshot = graph_of(store)
    terms_before = rows(db_path, "SELECT term FROM search_terms ORDER BY term")

    with pytest.raises(EntityNotFoundError, match="Ghost") as error:
        store.add_observations([add("A", "xylophonist"), add("Ghost", "boo"), add("B", "quixotic")])

    assert str(error.value) == "Entity with name Ghost not found"  # the official wording
    assert graph_of(store) == snapshot
    assert rows(db_path, "SELECT term FROM search_terms ORDER BY term") == terms_before
    assert store.search_nodes("xylophonist").entities == []
    assert_consistent(store)


def test_re_adding_a_deleted_observation_puts_it_last(store: Store) -> None:
    store.create_entities([E("A", "t", "one", "two", "three")])
    store.delete_observations([ObservationDeletion(entityName="A", observations=["one"])])
    store.add_observations([add("A", "one")])
    assert store.read_graph().entities[0].observations == ["two", "three", "one"]


# ---- delete_entities -----------------------------------------------------------------------


def test_delete_entity_removes_its_observations_and_relations_both_ways(
    store: Store, db_path: Path
) -> None:
    store.create_entities([E("A", "t", "a1", "a2"), E("B", "t", "b1"), E("C", "t")])
    store.create_relations(
        [R("A", "B", "out"), R("C", "A", "in"), R("A", "A", "self"), R("B", "C", "other")]
    )

    deleted, not_found = store.delete_entities(["A", "Missing"])

    assert (deleted, not_found) == (["A"], ["Missing"])
    assert graph_of(store) == {
        "entities": [
            {"name": "B", "entityType": "t", "observations": ["b1"]},
            {"name": "C", "entityType": "t", "observations": []},
        ],
        "relations": [{"from": "B", "to": "C", "relationType": "other"}],
    }
    assert rows(db_path, "SELECT content FROM observations ORDER BY id") == [("b1",)]
    assert store.search_nodes("a1").entities == []
    assert_consistent(store)


def test_delete_entities_also_drops_relations_naming_a_never_created_entity(store: Store) -> None:
    store.create_entities([E("A", "t")])
    store.create_relations([R("A", "Future", "plans")])
    deleted, not_found = store.delete_entities(["Future"])
    assert (deleted, not_found) == ([], ["Future"])
    assert store.read_graph().relations == []  # as the official server: relations go by name


def test_delete_entities_naming_one_entity_twice_does_not_report_it_missing(
    store: Store,
) -> None:
    store.create_entities([E("A", "t"), E("B", "t")])
    deleted, not_found = store.delete_entities(["A", "A", "B"])
    assert not_found == []  # the official server: A was present, so it is not "not found"
    assert sorted(set(deleted)) == ["A", "B"]
    assert store.read_graph().entities == []


def test_delete_entities_then_recreate_gives_a_clean_entity(store: Store) -> None:
    store.create_entities([E("A", "t", "old")])
    store.delete_entities(["A"])
    store.create_entities([E("A", "u", "new")])
    assert store.read_graph().entities[0].model_dump() == {
        "name": "A",
        "entityType": "u",
        "observations": ["new"],
    }
    assert_consistent(store)


# ---- delete_observations / delete_relations -----------------------------------------------


def test_delete_observations_counts_and_reports_missing_entities(store: Store) -> None:
    store.create_entities([E("A", "t", "one", "two", "three"), E("B", "t", "x")])
    count, missing = store.delete_observations(
        [
            ObservationDeletion(entityName="A", observations=["two", "not there"]),
            ObservationDeletion(entityName="Ghost", observations=["x"]),
            ObservationDeletion(entityName="B", observations=["x"]),
        ]
    )
    assert (count, missing) == (2, ["Ghost"])
    assert [(e.name, e.observations) for e in store.read_graph().entities] == [
        ("A", ["one", "three"]),
        ("B", []),
    ]
    assert store.search_nodes("two").entities == []
    assert_consistent(store)


def test_delete_relations_matches_all_three_fields(store: Store) -> None:
    store.create_relations([R("A", "B", "knows"), R("A", "B", "likes"), R("B", "A", "knows")])
    count = store.delete_relations([R("A", "B", "knows"), R("A", "B", "hates")])
    assert count == 1
    assert store.read_graph().relations == [R("A", "B", "likes"), R("B", "A", "knows")]
    assert store.delete_relations([R("A", "B", "knows")]) == 0  # idempotent
    assert_consistent(store)


# ---- every write is one transaction ---------------------------------------------------------


def _install_tripwire(db_path: Path, sql: str) -> None:
    """A real trigger in the file that aborts the statement touching a marked row."""
    conn = apsw.Connection(str(db_path))
    conn.execute(sql)
    conn.close()


WriteCall = Callable[[Store], object]

TRIPWIRES: dict[str, tuple[str, WriteCall]] = {
    "create_entities": (
        "CREATE TRIGGER trip BEFORE INSERT ON observations WHEN new.content = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'tripwire'); END",
        lambda s: s.create_entities([E("New1", "t", "fine"), E("New2", "t", "boom")]),
    ),
    "create_relations": (
        "CREATE TRIGGER trip BEFORE INSERT ON relations WHEN new.relation_type = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'tripwire'); END",
        lambda s: s.create_relations([R("A", "B", "fine"), R("A", "B", "boom")]),
    ),
    "add_observations": (
        "CREATE TRIGGER trip BEFORE INSERT ON observations WHEN new.content = 'boom' "
        "BEGIN SELECT RAISE(ABORT, 'tripwire'); END",
        lambda s: s.add_observations([add("A", "fine"), add("B", "boom")]),
    ),
    "delete_entities": (
        "CREATE TRIGGER trip BEFORE DELETE ON entities WHEN old.name = 'B' "
        "BEGIN SELECT RAISE(ABORT, 'tripwire'); END",
        lambda s: s.delete_entities(["A", "B"]),
    ),
    "delete_observations": (
        "CREATE TRIGGER trip BEFORE DELETE ON observations WHEN old.content = 'b1' "
        "BEGIN SELECT RAISE(ABORT, 'tripwire'); END",
        lambda s: s.delete_observations(
            [
                ObservationDeletion(entityName="A", observations=["a1"]),
                ObservationDeletion(entityName="B", observations=["b1"]),
            ]
        ),
    ),
    "delete_relations": (
        "CREATE TRIGGER trip BEFORE DELETE ON relations WHEN old.relation_type = 'second' "
        "BEGIN SELECT RAISE(ABORT, 'tripwire'); END",
        lambda s: s.delete_relations([R("A", "B", "first"), R("B", "A", "second")]),
    ),
}


@pytest.mark.parametrize("operation", sorted(TRIPWIRES))
def test_a_write_failing_midway_leaves_nothing(store: Store, db_path: Path, operation: str) -> None:
    store.create_entities([E("A", "t", "a1"), E("B", "t", "b1")])
    store.create_relations([R("A", "B", "first"), R("B", "A", "second")])
    snapshot = graph_of(store)
    trigger, call = TRIPWIRES[operation]
    _install_tripwire(db_path, trigger)

    with pytest.raises(apsw.ConstraintError, match="tripwire"):
        call(store)

    assert graph_of(store) == snapshot
    assert_consistent(store)


# ---- UPSERT, never REPLACE: FTS stays consistent after every kind of write -----------------


def test_every_kind_of_write_keeps_the_fts_indexes_consistent(store: Store, db_path: Path) -> None:
    steps: list[tuple[str, WriteCall]] = [
        ("create", lambda s: s.create_entities([E("A", "t", "alpha"), E("B", "t", "beta")])),
        ("create again", lambda s: s.create_entities([E("A", "other type", "changed?")])),
        ("relate", lambda s: s.create_relations([R("A", "B", "knows"), R("A", "C", "waits")])),
        ("relate again", lambda s: s.create_relations([R("A", "B", "knows")])),
        ("observe", lambda s: s.add_observations([add("A", "gamma", "alpha")])),
        ("observe again", lambda s: s.add_observations([add("A", "gamma")])),
        (
            "forget",
            lambda s: s.delete_observations(
                [ObservationDeletion(entityName="A", observations=["alpha"])]
            ),
        ),
        ("unrelate", lambda s: s.delete_relations([R("A", "C", "waits")])),
        ("delete", lambda s: s.delete_entities(["B"])),
        ("import", lambda s: s.import_batch([E("A", "t", "delta"), E("D", "t", "eps")], [])),
    ]
    entity_ids: dict[str, int] = {}
    for label, step in steps:
        step(store)
        report = store.check()
        assert report.ok, f"after {label}: {report}"
        for name, entity_id in rows(db_path, "SELECT name, id FROM entities"):
            assert entity_ids.setdefault(name, entity_id) == entity_id, f"{name} re-created"
    assert store.open_nodes(["A"]).entities[0].model_dump() == {
        "name": "A",
        "entityType": "t",
        "observations": ["gamma", "delta"],
    }


# ---- open_nodes ----------------------------------------------------------------------------


def test_open_nodes_exact_names_unknown_skipped_relations_with_either_endpoint(
    store: Store,
) -> None:
    store.create_entities([E("A", "t", "a"), E("B", "t"), E("C", "t"), E("a", "t")])
    store.create_relations(
        [R("A", "B", "ab"), R("C", "A", "ca"), R("B", "C", "bc"), R("B", "Ghost", "bg")]
    )
    graph = store.open_nodes(["A", "Ghost", "nobody", "A "])
    assert names(graph.entities) == ["A"]  # not "a", not "A ", unknown names skipped
    assert graph.relations == [R("A", "B", "ab"), R("C", "A", "ca")]
    assert store.open_nodes([]).model_dump() == {"entities": [], "relations": []}
    assert store.open_nodes(["nobody"]).model_dump() == {"entities": [], "relations": []}


# ---- search_nodes --------------------------------------------------------------------------


def test_search_returns_relations_with_either_endpoint_in_the_result(store: Store) -> None:
    store.create_entities(
        [E("Alice", "person", "plays the theremin"), E("Bob", "person"), E("Carol", "person")]
    )
    store.create_relations(
        [R("Alice", "Bob", "knows"), R("Carol", "Alice", "admires"), R("Bob", "Carol", "x")]
    )
    result = store.search_nodes("theremin")
    assert names(result.entities) == ["Alice"]
    assert result.relations == [R("Alice", "Bob", "knows"), R("Carol", "Alice", "admires")]
    assert result.total == 1


@pytest.mark.parametrize(
    ("stored", "query"),
    [
        ("ÉCOLE", "école"),
        ("école", "ÉCOLE"),
        ("МОСКВА", "москва"),
        ("Ωμέγα", "ΩΜΈΓΑ"),
        ("naïve café", "NAIVE CAFE"),
        ("TypeScript", "typescript"),
    ],
)
def test_search_is_case_insensitive_across_unicode(store: Store, stored: str, query: str) -> None:
    store.create_entities([E("in name " + stored, "t"), E("x", stored), E("y", "t", stored)])
    store.create_entities(filler(5))
    assert sorted(names(store.search_nodes(query).entities)) == ["in name " + stored, "x", "y"]


def test_search_ranks_the_entity_named_so_first(store: Store) -> None:
    """A name weighs as much as a type or an observation (a heavier name let generic words in
    names outrank the answers: bench/RELEVANCE.md), but a name starting with the query's words
    gets a bonus: the entity named so comes first."""
    store.create_entities(filler(60))
    store.create_entities(
        [
            E("Obsy", "person", "writes zanzibarian poems"),
            E("Typy", "zanzibarian"),
            E("Zanzibarian", "language"),
            E("Zanzibarian Poetry Society", "organization"),
            E("Old Zanzibarian", "language"),
        ]
    )
    result = store.search_nodes("zanzibarian")
    assert names(result.entities)[0] == "Zanzibarian"
    assert result.total == 5
    assert names(store.search_nodes("zanzibarian poetry").entities)[0] == (
        "Zanzibarian Poetry Society"
    )


def test_search_whole_word_ranks_above_partial_word(store: Store) -> None:
    store.create_entities(filler(40))
    store.create_entities(
        [E("Partial", "t", "uses TypeScript daily"), E("Whole", "t", "uses script daily")]
    )
    assert names(store.search_nodes("script").entities) == ["Whole", "Partial"]


def test_search_finds_words_inside_longer_words(store: Store) -> None:
    store.create_entities(filler(5))
    store.create_entities([E("TypeScript", "language"), E("Jay", "person", "knows JavaScript")])
    store.add_observations([add("filler000", "wrote a manuscript")])
    result = store.search_nodes("script")
    assert sorted(names(result.entities)) == ["Jay", "TypeScript", "filler000"]
    assert names(store.search_nodes("Type").entities) == ["TypeScript"]  # word start
    assert names(store.search_nodes("SCRIPT", entity_type="language").entities) == ["TypeScript"]


def test_search_is_bounded_by_limit_and_total_counts_every_match(store: Store) -> None:
    store.create_entities(filler(30))
    store.create_entities([E("Other", "t", "nothing in common")])
    result = store.search_nodes("weather", limit=7)
    assert len(result.entities) == 7
    assert result.total == 30
    assert store.search_nodes("weather", limit=100).total == 30
    assert len(store.search_nodes("weather").entities) == 20  # default limit
    nothing = store.search_nodes("zebra")
    assert (nothing.entities, nothing.relations, nothing.total) == ([], [], 0)


def test_search_limit_out_of_range_is_refused_with_a_clear_message(store: Store) -> None:
    with pytest.raises(InputTooLargeError, match="limit"):
        store.search_nodes("x", limit=0)
    with pytest.raises(InputTooLargeError, match="limit"):
        store.search_nodes("x", limit=Limits().max_search_limit + 1)


def test_search_entity_type_filter(store: Store) -> None:
    store.create_entities(
        [
            E("Alice", "person", "likes tea"),
            E("Tea Room", "place", "serves tea"),
            E("Bob", "Person"),
        ]
    )
    result = store.search_nodes("tea", entity_type="person")
    assert names(result.entities) == ["Alice"]
    assert result.total == 1
    assert names(store.search_nodes("tea", entity_type="PLACE").entities) == ["Tea Room"]
    assert store.search_nodes("tea", entity_type="robot").total == 0
    assert sorted(names(store.search_nodes("", entity_type="PERSON").entities)) == ["Alice", "Bob"]


@pytest.mark.parametrize(
    ("stored_type", "asked_type"),
    [("Städte", "STÄDTE"), ("город", "ГОРОД"), ("École", "école"), ("Straße", "STRASSE")],
)
def test_search_entity_type_filter_is_case_insensitive_for_all_unicode(
    store: Store, stored_type: str, asked_type: str
) -> None:
    """The tool promises a case-insensitive filter; SQLite's NOCASE only folds ASCII."""
    store.create_entities([E("Hit", stored_type, "common word"), E("Miss", "other", "common word")])
    assert names(store.search_nodes("common", entity_type=asked_type).entities) == ["Hit"]
    assert names(store.search_nodes("", entity_type=asked_type).entities) == ["Hit"]


def test_multi_word_query_needs_all_words_in_any_order_and_field(store: Store) -> None:
    store.create_entities(filler(20))
    store.create_entities(
        [
            E("Alice", "person", "writes Rust at work"),
            E("Rusty", "dog", "barks"),
            E("Rust", "language", "memory safe"),
            E("Bob", "person", "plays chess"),
        ]
    )
    # "rust" in an observation, "person" in the type, "alice" in the name; order irrelevant
    result = store.search_nodes("person rust alice")
    assert names(result.entities)[0] == "Alice"
    assert result.withEveryWord == 1  # the others hold some of the words: they come after
    result = store.search_nodes("safe language")
    assert names(result.entities) == ["Rust"]
    assert result.withEveryWord is None  # every match holds every word


def test_multi_word_query_falls_back_to_any_word(store: Store) -> None:
    store.create_entities(filler(20))
    store.create_entities(
        [
            E("Alice", "person", "plays oboe"),
            E("Bob", "person", "plays oboe and harp"),
            E("Carol", "person", "plays harp"),
        ]
    )
    result = store.search_nodes("oboe harp kazoo")  # nobody has kazoo
    assert names(result.entities)[0] == "Bob"  # most words first
    assert sorted(names(result.entities)) == ["Alice", "Bob", "Carol"]
    assert result.total == 3


def test_empty_query_lists_most_recently_changed_entities(store: Store) -> None:
    for name in ("first", "second", "third", "fourth"):
        store.create_entities([E(name, "t")])
    store.add_observations([add("second", "touched")])  # an added observation is a change
    result = store.search_nodes("", limit=3)
    assert names(result.entities) == ["second", "fourth", "third"]
    assert result.total == 4
    store.delete_observations([ObservationDeletion(entityName="first", observations=["none"])])
    assert names(store.search_nodes("   ", limit=1).entities) == ["second"]  # no-op: no change
    store.delete_observations([ObservationDeletion(entityName="third", observations=["x"])])
    store.add_observations([add("third", "x")])
    assert names(store.search_nodes("\t\n", limit=2).entities) == ["third", "second"]


def test_empty_store_searches_and_reads_cleanly(store: Store) -> None:
    assert store.read_graph().model_dump() == {"entities": [], "relations": []}
    assert store.search_nodes("").total == 0
    assert store.search_nodes("anything").total == 0
    assert_consistent(store)


# ---- limits --------------------------------------------------------------------------------


def test_oversized_input_is_refused_before_anything_is_written(db_path: Path) -> None:
    store = Store(
        db_path, Limits(max_name_chars=10, max_observation_chars=20, max_items_per_call=3)
    )
    try:
        with pytest.raises(InputTooLargeError, match="MEMFTS_MAX_NAME_CHARS"):
            store.create_entities([E("ok", "t"), E("x" * 11, "t")])
        with pytest.raises(InputTooLargeError, match="MEMFTS_MAX_OBSERVATION_CHARS"):
            store.create_entities([E("ok", "t", "y" * 21)])
        with pytest.raises(InputTooLargeError, match="MEMFTS_MAX_ITEMS_PER_CALL"):
            store.create_entities([E(f"e{i}", "t") for i in range(4)])
        with pytest.raises(InputTooLargeError):
            store.add_observations([add("ok", "z" * 21)])
        assert store.read_graph().entities == []
    finally:
        store.close()


# ---- the file itself -----------------------------------------------------------------------


def test_data_survives_reopening(db_path: Path) -> None:
    first = Store(db_path)
    first.create_entities([E("A", "t", "persisted")])
    first.create_relations([R("A", "B", "r")])
    first.close()
    second = Store(db_path)
    try:
        assert graph_of(second) == {
            "entities": [{"name": "A", "entityType": "t", "observations": ["persisted"]}],
            "relations": [{"from": "A", "to": "B", "relationType": "r"}],
        }
        assert names(second.search_nodes("persisted").entities) == ["A"]
    finally:
        second.close()


def test_two_stores_on_one_file_see_each_others_writes(db_path: Path) -> None:
    one, two = Store(db_path), Store(db_path)
    try:
        one.create_entities([E("A", "t", "from one")])
        two.add_observations([add("A", "from two")])
        assert one.read_graph().entities[0].observations == ["from one", "from two"]
        assert names(two.search_nodes("one").entities) == ["A"]
        assert_consistent(one)
    finally:
        one.close()
        two.close()


def test_an_entity_whose_observation_positions_are_used_up_refuses_more(store: Store) -> None:
    """Observation ids are entity_id << 20 + position; past the last position the call fails
    with a clear error and stores nothing (the position is set directly: 2^20 adds are slow)."""
    store.create_entities([Entity(name="Hot", entityType="log", observations=["first"])])
    conn = store._db.conn
    entity_id = conn.execute("SELECT id FROM entities WHERE name = 'Hot'").get
    assert isinstance(entity_id, int)
    last = (entity_id << 20) + (1 << 20) - 1
    conn.execute(
        "INSERT INTO observations(id, entity_id, content) VALUES (?, ?, 'last')", (last, entity_id)
    )
    with pytest.raises(InputTooLargeError, match="'Hot' has been given 1,048,575 observations"):
        store.add_observations([ObservationAddition(entityName="Hot", contents=["one more"])])
    assert store.open_nodes(["Hot"]).entities[0].observations == ["first", "last"]


def test_an_import_that_adds_to_an_existing_entity_makes_it_recent(store: Store) -> None:
    store.create_entities(
        [Entity(name="Old", entityType="t"), Entity(name="Newer", entityType="t")]
    )
    assert [e.name for e in store.search_nodes("").entities] == ["Newer", "Old"]
    store.import_batch([Entity(name="Old", entityType="t", observations=["fresh news"])], [])
    assert [e.name for e in store.search_nodes("").entities] == ["Old", "Newer"]
    store.import_batch([Entity(name="Newer", entityType="t")], [])  # nothing added: unchanged
    assert [e.name for e in store.search_nodes("").entities] == ["Old", "Newer"]


def test_delete_observations_is_capped_like_add_observations(tmp_path: Path) -> None:
    """It had no cap on the observations of a group (the groups were counted, not what they
    held); now each group is capped as add_observations caps its groups, and the call's text
    as every call's: what one call adds, one call can delete."""
    store = Store(tmp_path / "m.db", Limits(max_items_per_call=10, max_call_chars=1_000))
    try:
        store.create_entities([Entity(name="a", entityType="t", observations=["x", "y"])])
        store.create_entities([Entity(name="b", entityType="t"), Entity(name="c", entityType="t")])
        added = [
            ObservationAddition(entityName=n, contents=[f"{n}{i}" for i in range(6)])
            for n in ("b", "c")
        ]
        store.add_observations(added)  # 12 observations in one call, 6 per group
        assert store.delete_observations(
            [ObservationDeletion(entityName=a.entityName, observations=a.contents) for a in added]
        ) == (12, [])
        many = [ObservationDeletion(entityName="a", observations=[f"o{i}" for i in range(11)])]
        with pytest.raises(InputTooLargeError, match="11 observations to delete in one call"):
            store.delete_observations(many)
        long = [ObservationDeletion(entityName="a", observations=["z" * 1_001])]
        with pytest.raises(InputTooLargeError, match="MEMFTS_MAX_CALL_CHARS"):
            store.delete_observations(long)
        assert store.delete_observations([ObservationDeletion(entityName="a", observations=["x"])])
        assert store.open_nodes(["a"]).entities[0].observations == ["y"]
    finally:
        store.close()
