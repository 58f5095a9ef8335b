"""memfts over MCP, as a client sees it: a real `python -m memfts` spawned over stdio.

The 9 tools must look and answer like `@modelcontextprotocol/server-memory` (names, titles,
descriptions, argument names, output schemas, annotations, structuredContent and the JSON
text block), so that switching servers is one line of client configuration.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from conftest import semantic_on
from mcp_session import Session, emptied, error_text, only_text, params_for, session, text_json
from memfts.models import ObservationAddition
from memfts.store import Store

# --- what the official server declares (src/memory/index.ts) ---------------------------------

WRITE = {
    "readOnlyHint": False,
    "destructiveHint": False,
    "idempotentHint": False,
    "openWorldHint": False,
}
DELETE = {
    "readOnlyHint": False,
    "destructiveHint": True,
    "idempotentHint": True,
    "openWorldHint": False,
}
READ = {
    "readOnlyHint": True,
    "destructiveHint": False,
    "idempotentHint": True,
    "openWorldHint": False,
}

OFFICIAL: dict[str, dict[str, Any]] = {
    "create_entities": {
        "title": "Create Entities",
        "description": "Create multiple new entities in the knowledge graph",
        "annotations": WRITE,
        "input": ["entities"],
        "output": ["entities"],
    },
    "create_relations": {
        "title": "Create Relations",
        "description": "Create multiple new relations between entities in the knowledge graph. "
        "Relations should be in active voice",
        "annotations": WRITE,
        "input": ["relations"],
        "output": ["relations"],
    },
    "add_observations": {
        "title": "Add Observations",
        "description": "Add new observations to existing entities in the knowledge graph",
        "annotations": WRITE,
        "input": ["observations"],
        "output": ["results"],
    },
    "delete_entities": {
        "title": "Delete Entities",
        "description": "Delete multiple entities and their associated relations from the "
        "knowledge graph",
        "annotations": DELETE,
        "input": ["entityNames"],
        "output": ["success", "message"],
    },
    "delete_observations": {
        "title": "Delete Observations",
        "description": "Delete specific observations from entities in the knowledge graph",
        "annotations": DELETE,
        "input": ["deletions"],
        "output": ["success", "message"],
    },
    "delete_relations": {
        "title": "Delete Relations",
        "description": "Delete multiple relations from the knowledge graph",
        "annotations": DELETE,
        "input": ["relations"],
        "output": ["success", "message"],
    },
    "read_graph": {
        "title": "Read Graph",
        "description": "Read the entire knowledge graph",
        "annotations": READ,
        "input": [],
        "output": ["entities", "relations"],
    },
    "search_nodes": {
        "title": "Search Nodes",
        "description": "Search for nodes in the knowledge graph based on a query",
        "annotations": READ,
        "input": ["query"],
        "output": ["entities", "relations"],
    },
    "open_nodes": {
        "title": "Open Nodes",
        "description": "Open specific nodes in the knowledge graph by their names",
        "annotations": READ,
        "input": ["names"],
        "output": ["entities", "relations"],
    },
}

GRAPH_URI = "memory://knowledge-graph"


def official_json(value: Any) -> str:
    """What the official server's `JSON.stringify(value, null, 2)` prints."""
    return json.dumps(value, indent=2, ensure_ascii=False)


def entity(name: str, entity_type: str, *observations: str) -> dict[str, Any]:
    return {"name": name, "entityType": entity_type, "observations": list(observations)}


def relation(from_: str, to: str, relation_type: str) -> dict[str, str]:
    return {"from": from_, "to": to, "relationType": relation_type}


@pytest.fixture(scope="module")
def db_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("protocol") / "memory.db"


@pytest.fixture(scope="module")
def server(db_file: Path) -> Iterator[Session]:
    """One memfts process for the whole module (a spawn costs ~0.6 s)."""
    with session(params_for(db_file)) as s:
        yield s


@pytest.fixture
def mcp(server: Session) -> Session:
    """The shared server, emptied through its own tools so each test starts from nothing."""
    return emptied(server)


@pytest.fixture(scope="module")
def tools(server: Session) -> dict[str, dict[str, Any]]:
    listed = server.run(server.client.list_tools)
    return {
        t.name: t.model_dump(mode="json", by_alias=True, exclude_none=True) for t in listed.tools
    }


def schema_properties(schema: dict[str, Any]) -> dict[str, Any]:
    return dict(schema.get("properties", {}))


def refs_in(node: Any) -> list[str]:
    """Every ``$ref`` and ``$defs`` key anywhere in a schema."""
    if isinstance(node, list):
        return [found for item in node for found in refs_in(item)]
    if not isinstance(node, dict):
        return []
    here = [key for key in node if key in ("$ref", "$defs")]
    return here + [found for value in node.values() for found in refs_in(value)]


# ---- tools/list ---------------------------------------------------------------------------


def test_exactly_the_nine_official_tools(tools: dict[str, dict[str, Any]]) -> None:
    assert sorted(tools) == sorted(OFFICIAL)


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_tool_title_description_annotations_and_schemas(
    tools: dict[str, dict[str, Any]], name: str
) -> None:
    tool, official = tools[name], OFFICIAL[name]
    assert tool["title"] == official["title"]
    assert tool["annotations"] == official["annotations"]
    if name == "search_nodes":
        # starts as the official one, then documents what ranked search does
        assert tool["description"].startswith(official["description"])
        for word in ("Ranked", "limit", "total"):
            assert word in tool["description"]
    else:
        assert tool["description"] == official["description"]

    assert tool["inputSchema"]["type"] == "object"
    inputs = schema_properties(tool["inputSchema"])
    for argument in official["input"]:
        assert argument in inputs, f"{name} lacks argument {argument}"
        assert argument in tool["inputSchema"].get("required", [])
    assert "outputSchema" in tool, f"{name} declares no outputSchema"
    assert tool["outputSchema"]["type"] == "object"
    outputs = schema_properties(tool["outputSchema"])
    assert sorted(official["output"]) == sorted(set(outputs) & set(official["output"]))
    required = set(official["output"])
    if name == "search_nodes":
        # relations may be left out on request (compact results); by default they are sent,
        # which test_search_nodes_structured_and_text checks on the wire
        required -= {"relations"}
    assert required <= set(tool["outputSchema"]["required"])


def test_search_nodes_arguments(tools: dict[str, dict[str, Any]]) -> None:
    schema = tools["search_nodes"]["inputSchema"]
    props = schema_properties(schema)
    assert schema["required"] == ["query"]  # extras are optional: official clients still work
    assert props["query"]["type"] == "string"
    assert props["query"]["maxLength"] == 100_000
    assert props["limit"]["minimum"] == 1
    assert schema_properties(tools["search_nodes"]["outputSchema"])["total"]["type"] == "integer"


def test_no_extra_required_arguments(tools: dict[str, dict[str, Any]]) -> None:
    for name, official in OFFICIAL.items():
        assert sorted(tools[name]["inputSchema"].get("required", [])) == sorted(official["input"])


@pytest.mark.parametrize(
    ("tool", "argument", "fields"),
    [
        ("create_entities", "entities", ["name", "entityType", "observations"]),
        ("create_relations", "relations", ["from", "to", "relationType"]),
        ("delete_relations", "relations", ["from", "to", "relationType"]),
        ("add_observations", "observations", ["entityName", "contents"]),
        ("delete_observations", "deletions", ["entityName", "observations"]),
    ],
)
def test_nested_argument_field_names_are_written_inline(
    tools: dict[str, dict[str, Any]], tool: str, argument: str, fields: list[str]
) -> None:
    """As the official server writes them: the item's fields right there, no ``$ref`` for a
    client to follow (some MCP clients do not resolve it)."""
    schema = tools[tool]["inputSchema"]
    assert schema["properties"][argument]["type"] == "array"
    items = schema["properties"][argument]["items"]
    assert items["type"] == "object"
    props = schema_properties(items)
    assert sorted(props) == sorted(fields)  # `from`, never `from_`
    assert all(props[f]["type"] in ("string", "array") for f in fields)
    assert set(items["required"]) >= set(fields) - {"observations"}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_no_schema_uses_ref_or_defs(tools: dict[str, dict[str, Any]], name: str) -> None:
    assert refs_in(tools[name]["inputSchema"]) == []
    assert refs_in(tools[name]["outputSchema"]) == []


@pytest.mark.parametrize("tool", ["read_graph", "open_nodes", "search_nodes", "create_relations"])
def test_output_relations_use_from_not_from_(tools: dict[str, dict[str, Any]], tool: str) -> None:
    relation_schema = tools[tool]["outputSchema"]["properties"]["relations"]
    if "anyOf" in relation_schema:  # optional in search results (compact mode)
        [relation_schema] = [s for s in relation_schema["anyOf"] if s.get("type") == "array"]
    assert sorted(relation_schema["items"]["properties"]) == ["from", "relationType", "to"]


@pytest.mark.parametrize("name", ["delete_entities", "open_nodes"])
def test_name_list_arguments(tools: dict[str, dict[str, Any]], name: str) -> None:
    (argument,) = OFFICIAL[name]["input"]
    prop = tools[name]["inputSchema"]["properties"][argument]
    assert prop["type"] == "array" and prop["items"] == {"type": "string"}


# ---- the write tools ----------------------------------------------------------------------


def test_create_entities_result_and_text(mcp: Session) -> None:
    entities = [entity("Alice", "person", "lives in 東京", "likes “quotes”"), entity("Bob", "dog")]
    result = mcp.ok("create_entities", {"entities": entities})
    assert result.structured_content == {"entities": entities}
    assert only_text(result) == official_json(entities)

    again = mcp.ok("create_entities", {"entities": [entities[0], entity("Carol", "cat")]})
    assert again.structured_content == {"entities": [entity("Carol", "cat")]}
    assert only_text(again) == official_json([entity("Carol", "cat")])

    none = mcp.ok("create_entities", {"entities": [entities[1]]})
    assert none.structured_content == {"entities": []}
    assert only_text(none) == "[]"


def test_create_entities_without_observations_gets_an_empty_list(mcp: Session) -> None:
    result = mcp.ok("create_entities", {"entities": [{"name": "Bare", "entityType": "t"}]})
    assert result.structured_content == {"entities": [entity("Bare", "t")]}


def test_create_relations_result_and_text(mcp: Session) -> None:
    mcp.ok("create_entities", {"entities": [entity("A", "t"), entity("B", "t")]})
    relations = [relation("A", "B", "knows"), relation("B", "Not yet", "waits for")]
    result = mcp.ok("create_relations", {"relations": relations})
    assert result.structured_content == {"relations": relations}
    assert only_text(result) == official_json(relations)
    assert '"from": "A"' in only_text(result)

    again = mcp.ok("create_relations", {"relations": [relations[0], relations[0]]})
    assert again.structured_content == {"relations": []}
    assert only_text(again) == "[]"


def test_add_observations_result_and_text(mcp: Session) -> None:
    mcp.ok("create_entities", {"entities": [entity("A", "t", "old"), entity("B", "t")]})
    result = mcp.ok(
        "add_observations",
        {
            "observations": [
                {"entityName": "A", "contents": ["old", "new", "ñew"]},
                {"entityName": "B", "contents": []},
            ]
        },
    )
    expected = [
        {"entityName": "A", "addedObservations": ["new", "ñew"]},
        {"entityName": "B", "addedObservations": []},
    ]
    assert result.structured_content == {"results": expected}
    assert only_text(result) == official_json(expected)
    graph = mcp.ok("open_nodes", {"names": ["A"]}).structured_content
    assert graph == {"entities": [entity("A", "t", "old", "new", "ñew")], "relations": []}


def test_add_observations_to_a_missing_entity_is_a_tool_error_and_saves_nothing(
    mcp: Session,
) -> None:
    mcp.ok("create_entities", {"entities": [entity("A", "t", "old")]})
    result = mcp.call(
        "add_observations",
        {
            "observations": [
                {"entityName": "A", "contents": ["would be new"]},
                {"entityName": "Ghost", "contents": ["boo"]},
            ]
        },
    )
    assert result.is_error
    assert error_text(result) == "Entity with name Ghost not found"  # the official wording
    assert mcp.ok("read_graph").structured_content == {
        "entities": [entity("A", "t", "old")],
        "relations": [],
    }


# ---- the delete tools ----------------------------------------------------------------------


def assert_message(result: Any, message: str) -> None:
    assert only_text(result) == message
    assert result.structured_content == {"success": True, "message": message}


def test_delete_entities_messages(mcp: Session) -> None:
    mcp.ok("create_entities", {"entities": [entity("A", "t"), entity("B", "t"), entity("C", "t")]})
    mcp.ok("create_relations", {"relations": [relation("A", "B", "r"), relation("C", "A", "r")]})
    assert_message(
        mcp.ok("delete_entities", {"entityNames": ["A"]}), "Entities deleted successfully"
    )
    assert mcp.ok("read_graph").structured_content == {
        "entities": [entity("B", "t"), entity("C", "t")],
        "relations": [],
    }
    assert_message(
        mcp.ok("delete_entities", {"entityNames": ["B", "Ghost", "Nobody"]}),
        "Deleted 1 of 3 entities. Not found: Ghost, Nobody",
    )
    mcp.ok("create_entities", {"entities": [entity("D", "t")]})
    assert_message(
        mcp.ok("delete_entities", {"entityNames": ["D", "D"]}), "Entities deleted successfully"
    )


def test_delete_observations_messages(mcp: Session) -> None:
    mcp.ok("create_entities", {"entities": [entity("A", "t", "one", "two", "three")]})
    assert_message(
        mcp.ok(
            "delete_observations", {"deletions": [{"entityName": "A", "observations": ["one"]}]}
        ),
        "Observations deleted successfully",
    )
    assert_message(
        mcp.ok(
            "delete_observations",
            {
                "deletions": [
                    {"entityName": "A", "observations": ["two", "absent"]},
                    {"entityName": "Ghost", "observations": ["x"]},
                ]
            },
        ),
        "Deleted 1 of 3 observations. Entities not found: Ghost",
    )
    assert mcp.ok("open_nodes", {"names": ["A"]}).structured_content == {
        "entities": [entity("A", "t", "three")],
        "relations": [],
    }


def test_delete_relations_messages(mcp: Session) -> None:
    mcp.ok("create_relations", {"relations": [relation("A", "B", "r"), relation("B", "A", "r")]})
    assert_message(
        mcp.ok("delete_relations", {"relations": [relation("A", "B", "r")]}),
        "Relations deleted successfully",
    )
    assert_message(
        mcp.ok(
            "delete_relations", {"relations": [relation("B", "A", "r"), relation("A", "B", "r")]}
        ),
        "Deleted 1 of 2 relations. The rest matched nothing.",
    )
    assert mcp.ok("read_graph").structured_content == {"entities": [], "relations": []}


# ---- the read tools ------------------------------------------------------------------------


def build_small_graph(mcp: Session) -> None:
    mcp.ok(
        "create_entities",
        {
            "entities": [
                entity("Alice", "person", "plays the theremin", "lives in Zürich"),
                entity("Bob", "person", "bakes bread"),
                entity("Theremin", "instrument"),
            ]
        },
    )
    mcp.ok(
        "create_relations",
        {
            "relations": [
                relation("Alice", "Bob", "knows"),
                relation("Alice", "Theremin", "plays"),
                relation("Carol", "Alice", "admires"),
            ]
        },
    )


def test_read_graph_structured_and_text(mcp: Session) -> None:
    build_small_graph(mcp)
    result = mcp.ok("read_graph")
    expected = {
        "entities": [
            entity("Alice", "person", "plays the theremin", "lives in Zürich"),
            entity("Bob", "person", "bakes bread"),
            entity("Theremin", "instrument"),
        ],
        "relations": [
            relation("Alice", "Bob", "knows"),
            relation("Alice", "Theremin", "plays"),
            relation("Carol", "Alice", "admires"),
        ],
    }
    assert result.structured_content == expected
    assert only_text(result) == official_json(expected)


def test_open_nodes_structured_and_text(mcp: Session) -> None:
    build_small_graph(mcp)
    result = mcp.ok("open_nodes", {"names": ["Bob", "Ghost"]})
    expected = {
        "entities": [entity("Bob", "person", "bakes bread")],
        "relations": [relation("Alice", "Bob", "knows")],
    }
    assert result.structured_content == expected
    assert only_text(result) == official_json(expected)


def test_text_is_json_stringify_for_every_kind_of_character(mcp: Session) -> None:
    odd = [
        "control \x01 \x1f and del \x7f",
        'quotes " \\ / and \n\t\r\b\f',
        "line separators \u2028 \u2029",
        "école 東京 🧠",
        "",
    ]
    mcp.ok("create_entities", {"entities": [entity("odd", "t", *odd)]})
    result = mcp.ok("open_nodes", {"names": ["odd"]})
    assert result.structured_content == {"entities": [entity("odd", "t", *odd)], "relations": []}
    assert only_text(result) == official_json(result.structured_content)


def test_search_nodes_structured_and_text(mcp: Session) -> None:
    build_small_graph(mcp)
    result = mcp.ok("search_nodes", {"query": "zurich"})
    structured = result.structured_content
    # By default: the official graph shape plus `total` (and, where semantic search is on,
    # what found each hit), and no null placeholders for optional extras (they would cost
    # every caller tokens and confuse strict parsers).
    alice = entity("Alice", "person", "plays the theremin", "lives in Zürich")
    if semantic_on():
        alice["foundBy"] = ["lexical", "semantic"]
    assert structured == {
        "entities": [alice],
        "relations": [
            relation("Alice", "Bob", "knows"),
            relation("Alice", "Theremin", "plays"),
            relation("Carol", "Alice", "admires"),
        ],
        "total": 1,
    }
    assert only_text(result) == official_json(structured)


def test_search_nodes_ranks_and_limits_over_the_wire(mcp: Session) -> None:
    build_small_graph(mcp)
    result = mcp.ok("search_nodes", {"query": "THEREMIN", "limit": 1})
    assert [e["name"] for e in result.structured_content["entities"]] == ["Theremin"]
    assert result.structured_content["total"] == 2
    typed = mcp.ok("search_nodes", {"query": "", "entityType": "Person"})
    assert sorted(e["name"] for e in typed.structured_content["entities"]) == ["Alice", "Bob"]


# ---- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tool", "arguments", "expected"),
    [
        ("create_entities", {"entities": [{"name": "", "entityType": "t"}]}, ["name", "empty"]),
        ("create_entities", {"entities": [{"name": "  ", "entityType": "t"}]}, ["name", "empty"]),
        ("create_entities", {"entities": [{"name": "A", "entityType": ""}]}, ["entityType"]),
        ("create_entities", {"entities": [{"name": "A"}]}, ["entityType", "required"]),
        ("create_entities", {"entities": "Alice"}, ["entities", "list"]),
        ("create_entities", {"entities": [{"name": 3, "entityType": "t"}]}, ["name", "string"]),
        ("create_entities", {"entities": [entity("A", "t", "nul\x00byte")]}, ["NUL"]),
        ("create_relations", {"relations": [{"from": "A", "to": "B"}]}, ["relationType"]),
        ("create_relations", {"relations": [relation("", "B", "r")]}, ["from", "empty"]),
        ("add_observations", {"observations": [{"entityName": "A"}]}, ["contents"]),
        ("add_observations", {}, ["observations", "required"]),
        ("delete_entities", {"entityNames": "A"}, ["entityNames", "list"]),
        ("open_nodes", {"names": [1, 2]}, ["names", "string"]),
        ("search_nodes", {}, ["query", "required"]),
        ("search_nodes", {"query": 42}, ["query", "string"]),
        ("search_nodes", {"query": "x", "limit": 0}, ["limit"]),
        ("search_nodes", {"query": "x", "limit": "many"}, ["limit"]),
    ],
)
def test_bad_arguments_are_tool_errors_naming_what_was_wrong(
    mcp: Session, tool: str, arguments: dict[str, Any], expected: list[str]
) -> None:
    result = mcp.call(tool, arguments)
    assert result.is_error
    assert result.structured_content is None
    message = error_text(result)
    # the official server's wording, then one line per problem instead of zod's JSON dump
    assert message.startswith(f"Input validation error: Invalid arguments for tool {tool}: ")
    for word in expected:
        assert word in message, f"{word!r} missing from {message!r}"
    assert "\n" not in message and "errors.pydantic.dev" not in message, message  # one line
    assert mcp.ok("read_graph").structured_content == {"entities": [], "relations": []}


def test_unknown_tool_is_a_tool_error(mcp: Session) -> None:
    result = mcp.call("drop_everything", {})
    assert result.is_error
    assert error_text(result) == "Tool drop_everything not found"  # the official wording


def test_the_server_survives_errors(mcp: Session) -> None:
    for _ in range(3):
        assert mcp.call("add_observations", {"observations": [{"entityName": "X"}]}).is_error
    assert mcp.ok("create_entities", {"entities": [entity("Alive", "t")]}).structured_content


# ---- the resource --------------------------------------------------------------------------


def test_knowledge_graph_resource_lists_and_reads(mcp: Session) -> None:
    build_small_graph(mcp)
    listed = mcp.run(mcp.client.list_resources).resources
    [resource] = [r for r in listed if str(r.uri) == GRAPH_URI]
    assert resource.name == "knowledge-graph"
    assert resource.mime_type == "application/json"

    read = mcp.run(mcp.client.read_resource, GRAPH_URI)
    [content] = read.contents
    assert str(content.uri) == GRAPH_URI
    assert content.mime_type == "application/json"
    graph = mcp.ok("read_graph").structured_content
    assert content.text == official_json(graph)  # type: ignore[union-attr]


def test_resource_follows_writes(mcp: Session) -> None:
    mcp.ok("create_entities", {"entities": [entity("Fresh", "t", "just now")]})
    [content] = mcp.run(mcp.client.read_resource, GRAPH_URI).contents
    assert json.loads(content.text) == {  # type: ignore[union-attr]
        "entities": [entity("Fresh", "t", "just now")],
        "relations": [],
    }


def test_the_server_works_on_the_real_file_shared_with_other_processes(
    mcp: Session, db_file: Path
) -> None:
    """What the server writes is in the file for another process, and the other way round."""
    mcp.ok("create_entities", {"entities": [entity("Durable", "t", "on disk")]})
    other = Store(db_file)
    try:
        assert other.open_nodes(["Durable"]).model_dump(by_alias=True) == {
            "entities": [entity("Durable", "t", "on disk")],
            "relations": [],
        }
        other.add_observations([ObservationAddition(entityName="Durable", contents=["2nd"])])
    finally:
        other.close()
    assert text_json(mcp.ok("open_nodes", {"names": ["Durable"]}))["entities"] == [
        entity("Durable", "t", "on disk", "2nd")
    ]


def test_input_over_a_limit_is_a_tool_error_naming_the_limit(mcp: Session) -> None:
    result = mcp.call("create_entities", {"entities": [entity("n" * 1001, "t")]})
    assert result.is_error
    assert "MEMFTS_MAX_NAME_CHARS" in error_text(result)
    assert not error_text(result).startswith("Error executing tool")  # the message alone
    assert mcp.ok("read_graph").structured_content == {"entities": [], "relations": []}


def test_concurrent_calls_on_one_session_all_land(mcp: Session) -> None:
    """Sync tools run in worker threads: the store must serialize them without losing any."""
    mcp.ok("create_entities", {"entities": [entity("Hub", "t")]})

    async def burst() -> list[Any]:
        results: list[Any] = []

        async def call(tool: str, arguments: dict[str, Any]) -> None:
            results.append(await mcp.client.call_tool(tool, arguments))

        async with anyio.create_task_group() as group:
            for i in range(20):
                group.start_soon(call, "create_entities", {"entities": [entity(f"E{i}", "t")]})
                group.start_soon(
                    call,
                    "add_observations",
                    {"observations": [{"entityName": "Hub", "contents": [f"obs {i}"]}]},
                )
                group.start_soon(call, "search_nodes", {"query": "obs"})
        return results

    results = mcp.run(burst)
    assert len(results) == 60
    assert [error_text(r) for r in results if r.is_error] == []
    graph = mcp.ok("read_graph").structured_content
    assert sorted(e["name"] for e in graph["entities"]) == sorted(
        ["Hub", *(f"E{i}" for i in range(20))]
    )
    [hub] = [e for e in graph["entities"] if e["name"] == "Hub"]
    assert sorted(hub["observations"]) == sorted(f"obs {i}" for i in range(20))
