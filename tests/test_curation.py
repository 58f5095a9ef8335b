"""Curation on real files: rename, retype, edit, delete, merge, likely duplicates, and the reads
the page shows (entity detail, neighbourhood, recent changes, change marker).

Each write is one transaction: a refused call changes nothing (checked through a second
connection), the full-text indexes stay consistent, search finds the new text and not the old.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
import threading
from pathlib import Path

import apsw
import pytest

from memfts.curation import Curation
from memfts.duplicates import name_key
from memfts.errors import (
    DuplicateObservationError,
    EntityNotFoundError,
    InputTooLargeError,
    InvalidInputError,
    NameTakenError,
    ObservationNotFoundError,
)
from memfts.store import OBSERVATION_ID_BITS, Limits, Store
from test_store import E, R, assert_consistent, graph_of, rows
from workers import RawServer, error_text


def relations_of(db: Path) -> set[tuple[str, str, str]]:
    return {
        (f, t, rt)
        for f, t, rt in rows(db, "SELECT from_name, to_name, relation_type FROM relations")
    }


def observations_of(db: Path, name: str) -> list[tuple[int, str]]:
    return [
        (oid, content)
        for oid, content in rows(
            db,
            "SELECT o.id, o.content FROM observations o JOIN entities e ON e.id = o.entity_id "
            "WHERE e.name = ? ORDER BY o.id",
            (name,),
        )
    ]


def found(store: Store, query: str) -> list[str]:
    return [hit.name for hit in store.search_nodes(query, limit=50).entities]


@pytest.fixture
def team(store: Store) -> Store:
    store.create_entities(
        [
            E("Ada", "person", "writes the compiler", "likes tea"),
            E("Bob", "person", "reviews the compiler"),
            E("Compiler", "project", "written in Rust"),
        ]
    )
    store.create_relations(
        [R("Ada", "Compiler", "works_on"), R("Bob", "Ada", "knows"), R("Ada", "Ada", "mentors")]
    )
    return store


@pytest.fixture
def curation(store: Store) -> Curation:
    return Curation(store)


# ---- rename ------------------------------------------------------------------------------


def test_rename_moves_relations_both_ways_and_search_follows(
    team: Store, db_path: Path, curation: Curation
) -> None:
    report = curation.rename_entity("Ada", "Ada Lovelace")
    assert (report.relations_moved, report.relations_merged) == (3, 0)
    assert relations_of(db_path) == {
        ("Ada Lovelace", "Compiler", "works_on"),
        ("Bob", "Ada Lovelace", "knows"),
        ("Ada Lovelace", "Ada Lovelace", "mentors"),
    }
    assert rows(db_path, "SELECT name FROM entities WHERE name LIKE 'Ada%'") == [("Ada Lovelace",)]
    assert found(team, "lovelace") == ["Ada Lovelace"]
    # the vocabulary learned the new word: a partial word finds it
    assert rows(db_path, "SELECT 1 FROM search_terms WHERE term = 'lovelace'") == [(1,)]
    assert found(team, "ovelac") == ["Ada Lovelace"]
    assert curation.recent_changes(1)[0].name == "Ada Lovelace"
    assert_consistent(team)


def test_agents_servers_running_meanwhile_find_the_curated_words_at_once(
    team: Store, db_path: Path, curation: Curation
) -> None:
    """A server that searched before keeps what it worked out about the vocabulary; a rename
    or an edit made by another process (the page, the CLI) must still be found by its very
    next search: by a part of a new word and by a misspelling of it."""

    def names(server: RawServer, query: str) -> list[str]:
        text = server.call_ok("search_nodes", {"query": query})["content"][0]["text"]
        return [e["name"] for e in json.loads(text)["entities"]]

    with RawServer(db_path) as agent:
        assert names(agent, "compil")[0] == "Compiler"
        assert names(agent, "zanzib") == []
        curation.rename_entity("Compiler", "Zanzibarqux")
        curation.edit_observation("Ada", "likes tea", "likes rooibos")
        assert names(agent, "anzibarq") == ["Zanzibarqux"]
        assert names(agent, "zanzibarqix") == ["Zanzibarqux"]
        assert names(agent, "ooibo") == ["Ada"]
        assert names(agent, "tea") == []


def test_rename_onto_a_name_only_relations_used_joins_them_without_repeats(
    store: Store, db_path: Path, curation: Curation
) -> None:
    store.create_entities([E("ada", "person")])
    # written before any entity was called "Ada", partly the same as ada's
    store.create_relations(
        [
            R("ada", "x", "knows"),
            R("Ada", "x", "knows"),
            R("ada", "ada", "self"),
            R("Ada", "ada", "self"),
            R("y", "Ada", "likes"),
        ]
    )
    before = relations_of(db_path)
    report = curation.rename_entity("ada", "Ada")
    expected = {("Ada" if f == "ada" else f, "Ada" if t == "ada" else t, rt) for f, t, rt in before}
    assert relations_of(db_path) == expected
    assert report.relations_merged == len(before) - len(expected)
    assert report.relations_moved == 3 - report.relations_merged
    assert_consistent(store)


def test_rename_onto_an_existing_entity_says_merge_and_changes_nothing(
    team: Store, db_path: Path, curation: Curation
) -> None:
    before = graph_of(team)
    with pytest.raises(NameTakenError, match=r"'Bob' exists already: merge 'Ada' into it"):
        curation.rename_entity("Ada", "Bob")
    with pytest.raises(EntityNotFoundError, match="Nobody"):
        curation.rename_entity("Nobody", "Someone")
    for bad, error in (
        ("   ", InvalidInputError),
        ("a\x00b", InvalidInputError),
        ("x" * 1001, InputTooLargeError),
    ):
        with pytest.raises(error):
            curation.rename_entity("Ada", bad)
    assert graph_of(team) == before


def test_rename_to_the_same_name_changes_nothing(team: Store, curation: Curation) -> None:
    before = curation.entity_detail("Ada")
    report = curation.rename_entity("Ada", "Ada")
    assert report.relations_moved == 0
    assert curation.entity_detail("Ada") == before


# ---- type, observations ------------------------------------------------------------------


def test_set_entity_type(team: Store, curation: Curation) -> None:
    curation.set_entity_type("Compiler", "software project")
    assert curation.entity_detail("Compiler").entityType == "software project"  # type: ignore[union-attr]
    assert [h.name for h in team.search_nodes("", entity_type="software project").entities] == [
        "Compiler"
    ]
    assert curation.recent_changes(1)[0].name == "Compiler"
    with pytest.raises(InvalidInputError):
        curation.set_entity_type("Compiler", "")


def test_edit_observation_keeps_its_place_and_reindexes(
    team: Store, db_path: Path, curation: Curation
) -> None:
    ids_before = [oid for oid, _ in observations_of(db_path, "Ada")]
    curation.edit_observation("Ada", "writes the compiler", "designs the interpreter")
    after = observations_of(db_path, "Ada")
    assert [oid for oid, _ in after] == ids_before
    assert [c for _, c in after] == ["designs the interpreter", "likes tea"]
    assert "Ada" in found(team, "interpreter")
    assert found(team, "writes") == []
    assert rows(db_path, "SELECT 1 FROM search_terms WHERE term = 'interpreter'") == [(1,)]
    assert curation.recent_changes(1)[0].name == "Ada"
    assert_consistent(team)


def test_edit_observation_refusals_change_nothing(team: Store, curation: Curation) -> None:
    before = graph_of(team)
    with pytest.raises(
        DuplicateObservationError, match=r"already has this observation \(number 2\)"
    ):
        curation.edit_observation("Ada", "writes the compiler", "likes tea")
    with pytest.raises(ObservationNotFoundError, match="may have changed meanwhile"):
        curation.edit_observation("Ada", "no such text", "new text")
    with pytest.raises(InvalidInputError, match="delete it instead"):
        curation.edit_observation("Ada", "likes tea", "  ")
    small = Store(team.path, Limits(max_observation_chars=10))
    try:
        with pytest.raises(InputTooLargeError, match="MEMFTS_MAX_OBSERVATION_CHARS"):
            Curation(small).edit_observation("Ada", "likes tea", "x" * 11)
    finally:
        small.close()
    assert graph_of(team) == before


def test_delete_observation(team: Store, db_path: Path, curation: Curation) -> None:
    curation.delete_observation("Ada", "writes the compiler")
    assert [c for _, c in observations_of(db_path, "Ada")] == ["likes tea"]
    with pytest.raises(ObservationNotFoundError):
        curation.delete_observation("Ada", "writes the compiler")
    assert_consistent(team)


# ---- delete, merge -----------------------------------------------------------------------


def test_delete_entity_dry_run_then_real(team: Store, db_path: Path, curation: Curation) -> None:
    before = graph_of(team)
    preview = curation.delete_entity("Ada", dry_run=True)
    assert (preview.observations, preview.relations) == (2, 3)
    assert graph_of(team) == before
    assert curation.delete_entity("Ada") == preview
    assert relations_of(db_path) == set()
    assert rows(db_path, "SELECT count(*) FROM observations") == [(2,)]
    assert_consistent(team)


def test_merge_appends_in_order_without_repeats_and_repoints(
    store: Store, db_path: Path, curation: Curation
) -> None:
    store.create_entities(
        [
            E("Postgres", "tool", "port 5432", "runs on db1"),
            E("PostgreSQL", "database", "runs on db1", "version 16", "port 5432 on prod"),
            E("App", "project"),
        ]
    )
    store.create_relations(
        [
            R("App", "Postgres", "uses"),
            R("App", "PostgreSQL", "uses"),  # the same as the first once merged
            R("PostgreSQL", "db1", "runs_on"),
            R("PostgreSQL", "Postgres", "same_as"),  # between the two: dropped
            R("Postgres", "PostgreSQL", "alias_of"),  # between the two: dropped
            R("PostgreSQL", "PostgreSQL", "self"),  # its own: kept, as the target's
        ]
    )
    target_id = rows(db_path, "SELECT id FROM entities WHERE name = 'Postgres'")[0][0]
    before = graph_of(store)
    preview = curation.merge_entities("PostgreSQL", "Postgres", dry_run=True)
    assert graph_of(store) == before
    report = curation.merge_entities("PostgreSQL", "Postgres")
    assert report == preview
    assert (report.observations_added, report.observations_shared) == (2, 1)
    assert (report.relations_moved, report.relations_shared, report.relations_between) == (
        2,
        1,
        2,
    )
    assert "2 observations appended to 'Postgres' (1 already there)" in report.summary()
    merged = observations_of(db_path, "Postgres")
    assert [c for _, c in merged] == ["port 5432", "runs on db1", "version 16", "port 5432 on prod"]
    assert all(oid >> OBSERVATION_ID_BITS == target_id for oid, _ in merged)
    assert relations_of(db_path) == {
        ("App", "Postgres", "uses"),
        ("Postgres", "db1", "runs_on"),
        ("Postgres", "Postgres", "self"),
    }
    assert rows(db_path, "SELECT count(*) FROM entities WHERE name = 'PostgreSQL'") == [(0,)]
    assert curation.entity_detail("Postgres").entityType == "tool"  # type: ignore[union-attr]
    assert found(store, "version 16") == ["Postgres"]
    assert curation.recent_changes(1)[0].name == "Postgres"
    assert_consistent(store)


def test_a_chain_of_merges_keeps_every_observation_once_in_order(
    store: Store, db_path: Path, curation: Curation
) -> None:
    store.create_entities(
        [E("A", "t", "a one", "shared"), E("B", "t", "b one", "shared"), E("C", "t", "c one")]
    )
    store.create_relations(
        [R("X", "A", "uses"), R("X", "B", "uses"), R("A", "B", "same_as"), R("B", "C", "same_as")]
    )
    before = curation.entity_detail("C").updated_at  # type: ignore[union-attr]
    curation.merge_entities("A", "B")
    curation.merge_entities("B", "C")
    assert [c for _, c in observations_of(db_path, "C")] == ["c one", "b one", "shared", "a one"]
    assert relations_of(db_path) == {("X", "C", "uses")}
    assert rows(db_path, "SELECT name FROM entities") == [("C",)]
    assert curation.entity_detail("C").updated_at > before  # type: ignore[union-attr]
    assert found(store, "one") == ["C"]
    assert_consistent(store)


def test_merge_refusals_change_nothing(team: Store, curation: Curation) -> None:
    before = graph_of(team)
    with pytest.raises(InvalidInputError, match="into itself"):
        curation.merge_entities("Ada", "Ada")
    with pytest.raises(EntityNotFoundError, match="Nobody"):
        curation.merge_entities("Ada", "Nobody")
    with pytest.raises(EntityNotFoundError, match="Nobody"):
        curation.merge_entities("Nobody", "Ada")
    assert graph_of(team) == before


def test_merge_that_overflows_the_target_changes_nothing(
    store: Store, db_path: Path, curation: Curation
) -> None:
    store.create_entities([E("a", "t", "one", "two"), E("b", "t", "three")])
    b_id = rows(db_path, "SELECT id FROM entities WHERE name = 'b'")[0][0]
    # the target's id range is used up to its last slot by other tools
    conn_rows = (b_id << OBSERVATION_ID_BITS) + (1 << OBSERVATION_ID_BITS) - 1
    conn = apsw.Connection(str(db_path))
    conn.execute(
        "INSERT INTO observations(id, entity_id, content) VALUES (?, ?, 'last')", (conn_rows, b_id)
    )
    conn.close()
    before = graph_of(store)
    with pytest.raises(InputTooLargeError, match="observations"):
        curation.merge_entities("a", "b")
    assert graph_of(store) == before


def test_a_merge_loses_no_observation_another_process_adds_meanwhile(
    store: Store, db_path: Path, curation: Curation
) -> None:
    """Agents keep adding to the duplicate while a person merges it: every acknowledged
    observation ends up on the target, none half-moved."""
    store.create_entities([E("dup", "t"), E("keep", "t")])
    acknowledged: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def agent(server: RawServer, worker: int) -> None:
        for k in itertools.count():
            if stop.is_set() or k > 400:
                return
            text = f"w{worker} note {k}"
            result = server.call("add_observations", {"observations": [
                {"entityName": "dup", "contents": [text]}]})  # fmt: skip
            if result.get("isError"):
                errors.append(error_text(result))
                return  # dup is gone: the merge happened
            acknowledged.append(text)

    with RawServer(db_path) as one, RawServer(db_path) as two:
        threads = [threading.Thread(target=agent, args=(s, i)) for i, s in enumerate((one, two))]
        for t in threads:
            t.start()
        while len(acknowledged) < 20 and all(t.is_alive() for t in threads):
            threading.Event().wait(0.01)
        report = curation.merge_entities("dup", "keep")
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert all("Entity with name dup not found" in e for e in errors), errors
    kept = [c for _, c in observations_of(db_path, "keep")]
    assert sorted(kept) == sorted(acknowledged)
    assert report.observations_added <= len(acknowledged)
    assert_consistent(store)


def test_a_rename_while_agents_write_to_the_entity_loses_nothing_and_is_never_half_done(
    store: Store, db_path: Path, curation: Curation
) -> None:
    """Two MCP servers keep adding observations to an entity and relations naming it, by its
    old name, while a person renames it. Each write lands wholly before the rename (and
    follows it) or wholly after (an observation refused, a relation naming the old name as
    the agent wrote it): none lost, none split between the two names."""
    store.create_entities([E("svc", "service", "first note")])
    acknowledged_notes: list[str] = []
    acknowledged_links: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def agent(server: RawServer, worker: int) -> None:
        for k in itertools.count():
            if stop.is_set() or k > 400:
                return
            other = f"w{worker}-client-{k}"
            linked = server.call("create_relations", {"relations": [
                {"from": other, "to": "svc", "relationType": "calls"}]})  # fmt: skip
            assert not linked.get("isError"), error_text(linked)
            acknowledged_links.append(other)
            text = f"w{worker} note {k}"
            noted = server.call("add_observations", {"observations": [
                {"entityName": "svc", "contents": [text]}]})  # fmt: skip
            if noted.get("isError"):
                refused.append(error_text(noted))
            else:
                acknowledged_notes.append(text)

    with RawServer(db_path) as one, RawServer(db_path) as two:
        threads = [threading.Thread(target=agent, args=(s, i)) for i, s in enumerate((one, two))]
        for t in threads:
            t.start()
        while len(acknowledged_links) < 30 and all(t.is_alive() for t in threads):
            threading.Event().wait(0.01)
        report = curation.rename_entity("svc", "billing-svc")
        while len(refused) < 10 and all(t.is_alive() for t in threads):
            threading.Event().wait(0.01)
        stop.set()
        for t in threads:
            t.join(timeout=60)
    assert all("Entity with name svc not found" in e for e in refused), refused
    kept = [c for _, c in observations_of(db_path, "billing-svc")]
    assert sorted(kept) == sorted(["first note", *acknowledged_notes])
    assert observations_of(db_path, "svc") == []
    links = rows(
        db_path, "SELECT id, from_name, to_name FROM relations WHERE relation_type = 'calls'"
    )
    assert sorted(f for _, f, _ in links) == sorted(acknowledged_links)  # none lost, none twice
    renamed = [i for i, _, to in links if to == "billing-svc"]
    written_after = [i for i, _, to in links if to == "svc"]
    assert len(renamed) == report.relations_moved
    assert written_after and max(renamed) < min(written_after)  # the rename is one moment
    assert_consistent(store)


# ---- likely duplicates -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("names", "same"),
    [
        (("PostgreSQL", "postgresql", "POSTGRESQL"), True),
        (("Café Nord", "Cafe Nord", "cafe-nord"), True),
        (("node.js", "Node JS", "nodejs", "Node_JS"), True),
        (("user_service", "UserService", "user service"), True),
        (("Project note", "project notes"), True),
        (("Library", "Libraries"), True),
        (("Case", "Cases"), True),
        (("Class", "Classes"), True),
        (("Box", "boxes"), True),
        (("Yıldız", "Yildiz"), True),
        (("Status", "Statuses"), True),
        (("Ada", "Bob"), False),
        (("Post", "Postgres"), False),
        (("Glass", "Glas"), False),
        (("?!", "??"), False),
    ],
)
def test_name_key(names: tuple[str, ...], same: bool) -> None:
    keys = {name_key(n) for n in names}
    assert (len(keys) == 1) is same, {n: name_key(n) for n in names}


def test_likely_duplicates_groups_and_suggests_the_fuller_entity(
    store: Store, curation: Curation
) -> None:
    store.create_entities(
        [
            E("Node.js", "tool", "runtime"),
            E("nodejs", "tool", "runtime", "v20", "by OpenJS"),
            E("Node JS", "technology"),
            E("Ada", "person"),
            E("Project notes", "document", "q3"),
            E("project note", "document"),
        ]
    )
    store.create_relations([R("Ada", "Node JS", "uses")])
    result = curation.likely_duplicates()
    assert result.total_groups == 2
    groups = {
        g.key: [(c.name, c.observations, c.relations) for c in g.entities] for g in result.groups
    }
    assert groups == {
        "nodej": [("nodejs", 3, 0), ("Node.js", 1, 0), ("Node JS", 0, 1)],
        "projectnote": [("Project notes", 1, 0), ("project note", 0, 0)],
    }
    # the group changed last comes first
    curation.set_entity_type("Node JS", "tool")
    assert curation.likely_duplicates().groups[0].key == "nodej"
    assert curation.likely_duplicates(limit=1).total_groups == 2


# ---- what the page reads -----------------------------------------------------------------


def test_entity_detail_lists_relations_both_ways_with_the_other_ends_type(
    team: Store, curation: Curation
) -> None:
    team.create_relations([R("Ada", "Nowhere", "visits")])
    detail = curation.entity_detail("Ada")
    assert detail is not None
    assert detail.observations == ["writes the compiler", "likes tea"]
    assert [(r.relationType, r.other, r.otherType) for r in detail.outgoing] == [
        ("works_on", "Compiler", "project"),
        ("mentors", "Ada", "person"),
        ("visits", "Nowhere", None),
    ]
    assert [(r.relationType, r.other) for r in detail.incoming] == [
        ("knows", "Bob"),
        ("mentors", "Ada"),
    ]
    assert (detail.outgoing_total, detail.incoming_total) == (3, 2)
    assert detail.updated_at > 0
    assert curation.entity_detail("Nobody") is None
    capped = curation.entity_detail("Ada", max_relations=1)
    assert capped is not None and len(capped.outgoing) == 1 and capped.outgoing_total == 3


def test_neighbourhood_depths_cap_and_missing_ends(store: Store, curation: Curation) -> None:
    store.create_entities([E("hub", "t")] + [E(f"n{i}", "t") for i in range(10)])
    store.create_relations(
        [R("hub", f"n{i}", "has") for i in range(10)]
        + [R(f"n{i}", f"m{i}", "has") for i in range(10)]  # m* are no entity
        + [R("n0", "n1", "knows")]
    )
    one = curation.neighbourhood("hub", depth=1)
    assert [n.name for n in one.nodes] == ["hub"] + [f"n{i}" for i in range(10)]
    assert {(r.from_, r.to) for r in one.relations} >= {("hub", "n0"), ("n0", "n1")}
    assert one.left_out == 0
    two = curation.neighbourhood("hub", depth=2)
    m0 = next(n for n in two.nodes if n.name == "m0")
    assert (m0.depth, m0.parent, m0.entityType) == (2, "n0", None)
    assert len(two.nodes) == 21
    # capped at depth 2: the first ring takes half the room (7), the second the rest
    capped = curation.neighbourhood("hub", depth=2, max_nodes=15)
    assert [n.depth for n in capped.nodes] == [0] + [1] * 7 + [2] * 7
    assert capped.left_out == 3  # n7, n8, n9
    # a second ring with little to show gives its room back to the first
    store.delete_relations([R(f"n{i}", f"m{i}", "has") for i in range(1, 10)])
    backfilled = curation.neighbourhood("hub", depth=2, max_nodes=8)
    assert [n.depth for n in backfilled.nodes] == [0] + [1] * 6 + [2]
    assert backfilled.left_out == 4
    assert curation.neighbourhood("m0", depth=1).nodes[1].name == "n0"  # no entity, a centre
    with pytest.raises(InvalidInputError):
        curation.neighbourhood("hub", depth=3)


def test_data_version_changes_when_another_process_writes(store: Store, db_path: Path) -> None:
    first = store.data_version()
    assert store.data_version() == first
    store.create_entities([E("mine", "t")])
    second = store.data_version()
    assert second != first
    script = (
        "import sys; from memfts.store import Store; from memfts.models import Entity; "
        "s = Store(sys.argv[1]); s.create_entities([Entity(name='theirs', entityType='t')]); "
        "s.close()"
    )
    subprocess.run([sys.executable, "-c", script, str(db_path)], check=True, timeout=60)
    assert store.data_version() != second


# ---- the same operations from the command line -------------------------------------------


def cli(*args: str, input: str | None = None) -> tuple[int, str, str]:
    from click.testing import CliRunner

    from memfts.cli import main

    result = CliRunner().invoke(main, list(args), input=input)
    return result.exit_code, result.stdout, result.stderr


def test_cli_rename_set_type_and_edit(team: Store, db_path: Path, curation: Curation) -> None:
    db = ("--db", str(db_path))
    code, out, err = cli("rename", *db, "Ada", "Ada Lovelace")
    assert code == 0, err
    assert out == "renamed 'Ada' to 'Ada Lovelace'; 3 relations follow it\n"
    code, _, err = cli("rename", *db, "Bob", "Ada Lovelace")
    assert code == 1
    assert (
        err == "Error: an entity named 'Ada Lovelace' exists already: merge 'Bob' into it instead\n"
    )
    assert cli("set-type", *db, "Compiler", "software")[0] == 0
    code, out, _ = cli("edit-observation", *db, "Ada Lovelace", "2", "likes coffee")
    assert (code, out) == (0, "observation 2 of 'Ada Lovelace' was: likes tea\n")
    code, _, err = cli("edit-observation", *db, "Ada Lovelace", "3", "x")
    assert code == 1 and "give a number from 1 to 2" in err
    detail = curation.entity_detail("Ada Lovelace")
    assert detail is not None and detail.observations == ["writes the compiler", "likes coffee"]
    assert curation.entity_detail("Compiler").entityType == "software"  # type: ignore[union-attr]


def test_cli_destructive_commands_ask_first(team: Store, db_path: Path) -> None:
    db = ("--db", str(db_path))
    before = graph_of(team)
    code, _, err = cli("delete", *db, "Ada", input="n\n")
    assert code == 1 and "nothing changed" in err
    assert "delete 'Ada' (person) with its 2 observations and 3 relations?" in err
    code, _, err = cli("delete", *db, "Bob", input="n\n")
    assert "delete 'Bob' (person) with its 1 observation and 1 relation?" in err
    code, out, err = cli("merge", *db, "Bob", "Ada", input="")  # stdin closed: no answer
    assert code == 1 and "pass --yes" in err and out == ""
    assert "merge 'Bob' into 'Ada': 1 observation appended to 'Ada';" in err
    code, _, err = cli("delete-observation", *db, "Ada", "1", input="no\n")
    assert code == 1
    assert graph_of(team) == before
    code, out, err = cli("delete-observation", *db, "Ada", "1", input="y\n")
    assert code == 0, err
    code, out, err = cli("merge", *db, "Bob", "Ada", "--yes")
    assert code == 0, err
    assert out.splitlines() == [
        "merged: 1 observation appended to 'Ada'; 0 relations moved to it "
        "(1 between the two dropped); 'Bob' deleted",
    ]
    code, out, err = cli("delete", *db, "Compiler", "-y")
    assert (code, out) == (0, "deleted 'Compiler', 1 observation, 1 relation\n")
    assert relations_of(db_path) == {("Ada", "Ada", "mentors")}
    assert [c for _, c in observations_of(db_path, "Ada")] == ["likes tea", "reviews the compiler"]


def test_cli_duplicates_suggests_merge_commands(
    store: Store, db_path: Path, curation: Curation
) -> None:
    store.create_entities([E("Node.js", "tool", "a", "b"), E("node js", "tool"), E("x", "t")])
    code, out, err = cli("duplicates", "--db", str(db_path))
    assert code == 0, err
    assert out.splitlines() == [
        "→ Node.js  tool  2 observations, 0 relations",
        "  node js  tool  0 observations, 0 relations",
        "    memfts merge 'node js' Node.js",
    ]
    code, out, _ = cli("duplicates", "--db", str(db_path), "--json")
    assert json.loads(out)["total_groups"] == 1
    curation.merge_entities("node js", "Node.js")
    assert cli("duplicates", "--db", str(db_path))[1] == "no likely duplicates\n"
