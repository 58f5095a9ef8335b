"""Results sized for the context window, through a real client on a spawned ``memfts``.

Under the budget (``MEMFTS_MAX_RESULT_CHARS``) a result is exactly the official one; over it,
the first page, a ``nextCursor`` and a one-line note; following the cursors gives the whole
result exactly once. Budgets here are small so that small graphs need pages.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import apsw
import pytest
from mcp import StdioServerParameters

from conftest import build_schema, memfts_command, server_env
from mcp_session import Session, error_text, only_text, session
from memfts.models import Entity, Relation
from memfts.results import dump, official_json, search_page
from memfts.store import LOAD_CHUNKS, Store

BUDGET = 3_000


def params(db: Path, budget: int | None = BUDGET) -> StdioServerParameters:
    extra = {} if budget is None else {"MEMFTS_MAX_RESULT_CHARS": str(budget)}
    command = memfts_command()
    return StdioServerParameters(command=command[0], args=command[1:], env=server_env(db, **extra))


def fill(db: Path, entities: int, facts: int = 3, relations: int = 0) -> dict[str, Any]:
    """A graph written straight to the file; returns it as the official read_graph gives it."""
    build_schema(db)
    store = Store(db)
    try:
        store.create_entities(
            [
                Entity(
                    name=f"entity {i:04d}",
                    entityType=("person", "project", "tool")[i % 3],
                    observations=[f"fact {j} about entity {i}, rocket" for j in range(facts)],
                )
                for i in range(entities)
            ]
        )
        store.create_relations(
            [
                Relation(from_=f"entity {i % entities:04d}", to=f"entity {i * 7 % entities:04d}",
                         relationType=f"knows {i}")
                for i in range(relations)
            ]
        )  # fmt: skip
        return store.read_graph().model_dump(mode="json", by_alias=True)
    finally:
        store.close()


@pytest.fixture(scope="module")
def graph_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    db = tmp_path_factory.mktemp("pages") / "memory.db"
    return db, fill(db, entities=60, relations=80)


@pytest.fixture(scope="module")
def server(graph_db: tuple[Path, dict[str, Any]]) -> Iterator[Session]:
    with session(params(graph_db[0])) as s:
        yield s


def walk(server: Session, tool: str, arguments: dict[str, Any]) -> list[dict[str, Any]]:
    """Every page of a result, following nextCursor with the same arguments."""
    pages = []
    cursor = None
    while True:
        result = server.ok(tool, {**arguments, **({} if cursor is None else {"cursor": cursor})})
        page = result.structured_content
        assert page is not None
        assert json.loads(only_text(result)) == page  # the text block says the same
        pages.append({**page, "chars": len(only_text(result))})
        cursor = page.get("nextCursor")
        if cursor is None:
            return pages
        assert len(pages) < 1_000, "the walk does not end"


# ---- the budget ---------------------------------------------------------------------------


def test_a_result_at_the_budget_is_the_official_one_and_one_over_is_paged(
    tmp_path: Path,
) -> None:
    db = tmp_path / "memory.db"
    graph = fill(db, entities=12, relations=5)
    official = official_json(graph)
    with session(params(db, budget=len(official))) as exactly:
        result = exactly.ok("read_graph")
        assert only_text(result) == official
        assert result.structured_content == graph
    with session(params(db, budget=len(official) - 1)) as short:
        page = short.ok("read_graph").structured_content
        assert page is not None
        assert page["nextCursor"] and page["note"].startswith("Partial result")
        assert len(page["entities"]) < 12


def test_read_graph_over_the_budget_walks_to_exactly_the_whole_graph(
    server: Session, graph_db: tuple[Path, dict[str, Any]]
) -> None:
    _, graph = graph_db
    pages = walk(server, "read_graph", {})
    assert len(pages) > 3
    assert all(page["chars"] <= BUDGET for page in pages)
    assert [e for p in pages for e in p["entities"]] == graph["entities"]  # each once, in order
    assert [r for p in pages for r in p["relations"]] == graph["relations"]
    first = pages[0]
    assert "cut to fit 3,000 characters (MEMFTS_MAX_RESULT_CHARS)" in first["note"]
    assert "of 60 and 80 in all" in first["note"]
    assert "\n" not in first["note"]
    assert "nextCursor" not in pages[-1] and "note" not in pages[-1]


def test_limit_pages_and_a_cursor_alone_keeps_the_limit(
    server: Session, graph_db: tuple[Path, dict[str, Any]]
) -> None:
    _, graph = graph_db
    first = server.ok("read_graph", {"limit": 5}).structured_content
    assert first is not None
    assert first["entities"] == graph["entities"][:5] and first["relations"] == []
    assert "limit 5" in first["note"]
    second = server.ok("read_graph", {"cursor": first["nextCursor"]}).structured_content
    assert second is not None
    assert second["entities"] == graph["entities"][5:10]
    pages = walk(server, "read_graph", {"limit": 25})  # the budget cuts pages smaller still
    assert all(len(p["entities"]) + len(p["relations"]) <= 25 for p in pages)
    assert [e for p in pages for e in p["entities"]] == graph["entities"]
    assert [r for p in pages for r in p["relations"]] == graph["relations"]


def test_max_observations_gives_lighter_entities_saying_what_was_left_out(
    server: Session, graph_db: tuple[Path, dict[str, Any]]
) -> None:
    _, graph = graph_db
    pages = walk(server, "read_graph", {"maxObservations": 0})
    names = [e for p in pages for e in p["entities"]]
    assert names == [
        {"name": e["name"], "entityType": e["entityType"], "omittedObservations": 3}
        for e in graph["entities"]
    ]
    assert len(pages) < len(walk(server, "read_graph", {}))  # lighter: fewer pages
    two = server.ok("open_nodes", {"names": ["entity 0001"], "maxObservations": 2})
    assert two.structured_content == {
        "entities": [
            {
                "name": "entity 0001",
                "entityType": "project",
                "observations": ["fact 0 about entity 1, rocket", "fact 1 about entity 1, rocket"],
                "omittedObservations": 1,
            }
        ],
        "relations": [r for r in graph["relations"] if "entity 0001" in (r["from"], r["to"])],
    }


def test_open_nodes_pages_and_its_cursor_needs_the_same_names(
    server: Session, graph_db: tuple[Path, dict[str, Any]]
) -> None:
    _, graph = graph_db
    names = [f"entity {i:04d}" for i in range(0, 60, 2)] + ["Ghost"]
    pages = walk(server, "open_nodes", {"names": names})
    assert len(pages) > 1 and all(p["chars"] <= BUDGET for p in pages)
    wanted = set(names)
    assert [e for p in pages for e in p["entities"]] == [
        e for e in graph["entities"] if e["name"] in wanted
    ]
    assert [r for p in pages for r in p["relations"]] == [
        r for r in graph["relations"] if r["from"] in wanted or r["to"] in wanted
    ]
    assert "open_nodes with the same names" in pages[0]["note"]
    other = server.call("open_nodes", {"names": names[:3], "cursor": pages[0]["nextCursor"]})
    assert other.is_error
    assert error_text(other) == (
        "this cursor belongs to open_nodes with other names: pass the same names as the call "
        "that returned it"
    )


def test_search_nodes_with_a_large_limit_and_depth_comes_in_pages(server: Session) -> None:
    arguments = {"query": "rocket", "limit": 50, "depth": 1}
    pages = walk(server, "search_nodes", arguments)
    assert len(pages) > 1 and all(p["chars"] <= BUDGET for p in pages)
    assert all(p["total"] == 60 for p in pages)
    hits = [e["name"] for p in pages for e in p["entities"]]
    assert len(hits) == len(set(hits)) >= 50
    assert (
        "hits 1-" in pages[0]["note"] and "search_nodes with the same arguments" in pages[0]["note"]
    )
    for page in pages:  # each page carries the relations touching its own hits
        on_page = {e["name"] for e in page["entities"]}
        assert page["relations"] and all(
            r["from"] in on_page or r["to"] in on_page for r in page["relations"]
        )
    unpaged = server.ok("search_nodes", {"query": "rocket", "limit": 3}).structured_content
    assert unpaged is not None and "nextCursor" not in unpaged
    other = server.call(
        "search_nodes", {"query": "fact", "limit": 50, "cursor": pages[0]["nextCursor"]}
    )
    assert other.is_error and "belongs to another search" in error_text(other)


def test_a_search_result_at_the_budget_is_the_official_one_and_one_over_is_paged(
    tmp_path: Path,
) -> None:
    db = tmp_path / "memory.db"
    fill(db, entities=12, relations=5)
    store = Store(db)
    try:
        whole = official_json(dump(store.search_nodes("rocket", limit=50, depth=1)))
    finally:
        store.close()
    arguments = {"query": "rocket", "limit": 50, "depth": 1}
    with session(params(db, budget=len(whole))) as exactly:
        assert only_text(exactly.ok("search_nodes", arguments)) == whole
    with session(params(db, budget=len(whole) - 1)) as short:
        page = short.ok("search_nodes", arguments).structured_content
        assert page is not None
        assert page["nextCursor"] and page["note"].startswith("Partial result")
        assert len(page["entities"]) < 12


def test_a_page_of_a_search_loads_only_the_hits_it_holds(tmp_path: Path) -> None:
    """A search asking for 1,500 hits, with snippets and related entities, cut to a page of
    a few: what the page does not hold is never loaded, nor are related entities looked up."""
    db = tmp_path / "memory.db"
    fill(db, entities=1_500, facts=2, relations=300)
    loaded: list[int] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        if sql.startswith("SELECT id, name, entity_type FROM entities WHERE id IN"):
            loaded.extend(json.loads(bindings[0]))
        return True

    def hook(connection: apsw.Connection) -> None:
        connection.exec_trace = trace

    apsw.connection_hooks.append(hook)
    try:
        store = Store(db)
        try:
            options: dict[str, Any] = {"limit": 1_500, "depth": 2, "snippets": True}
            with store.walk_search("rocket", **options) as search:
                page = search_page(search, 0, {"query": "rocket", **options}, BUDGET)
                related = search.related
            whole = store.search_nodes("rocket", **options)
        finally:
            store.close()
    finally:
        apsw.connection_hooks.remove(hook)
    assert page.nextCursor is not None and 0 < len(page.entities) < 50
    assert [e.name for e in page.entities] == [e.name for e in whole.entities[: len(page.entities)]]
    assert related is None
    assert len(whole.entities) == 1_500
    assert len(loaded) - 1_500 <= LOAD_CHUNKS[0]  # the page's first chunk, then the whole


@pytest.mark.parametrize("cursor", ["", "not a cursor", "eyJ0b29sIjoic2VhcmNoX25vZGVzIn0"])
def test_a_cursor_it_did_not_give_is_one_line_error(server: Session, cursor: str) -> None:
    result = server.call("read_graph", {"cursor": cursor})
    assert result.is_error
    message = error_text(result)
    assert "is not one read_graph gave" in message and "\n" not in message


def test_an_entity_larger_than_the_budget_comes_alone_and_the_walk_goes_on(
    tmp_path: Path,
) -> None:
    db = tmp_path / "memory.db"
    build_schema(db)
    store = Store(db)
    store.create_entities(
        [
            Entity(name="small", entityType="t", observations=["a"]),
            Entity(name="huge", entityType="t", observations=["x" * 5_000]),
            Entity(name="after", entityType="t", observations=["b"]),
        ]
    )
    store.close()
    with session(params(db, budget=1_000)) as server:
        pages = walk(server, "read_graph", {})
    assert [[e["name"] for e in p["entities"]] for p in pages] == [["small"], ["huge"], ["after"]]


def test_budget_zero_is_unbounded_as_the_official_server(tmp_path: Path) -> None:
    db = tmp_path / "memory.db"
    graph = fill(db, entities=300, relations=100)
    assert len(official_json(graph)) > 30_000  # over the default budget
    with session(params(db, budget=0)) as unbounded:
        result = unbounded.ok("read_graph")
        assert result.structured_content == graph
        assert only_text(result) == official_json(graph)
    with session(params(db, budget=None)) as default:
        page = default.ok("read_graph")
        assert len(only_text(page)) <= 30_000
        assert page.structured_content is not None and page.structured_content["nextCursor"]


def test_read_graph_and_open_nodes_declare_the_paging_arguments(server: Session) -> None:
    tools = {t.name: t for t in server.run(server.client.list_tools).tools}
    for name in ("read_graph", "open_nodes"):
        schema = tools[name].input_schema
        assert {"limit", "cursor", "maxObservations"} <= set(schema["properties"])
        output = tools[name].output_schema
        assert output is not None
        assert {"nextCursor", "note"} <= set(output["properties"])
        entity = output["properties"]["entities"]["items"]["properties"]
        assert "omittedObservations" in entity
    assert "cursor" in tools["search_nodes"].input_schema["properties"]
    assert tools["read_graph"].input_schema.get("required", []) == []
