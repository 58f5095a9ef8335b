"""Hostile and broken input over the wire: a clear error or a correct result, never a crash,
a hang or garbage stored; a rejected call leaves the stored graph exactly as it was.

One real server (stdio, hand-written JSON-RPC so that bytes a typed client refuses to send
can be sent) serves the whole module; every case compares read_graph before and after.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from memfts.store import Store
from workers import RawServer, error_text, initialize_request, server_env

MB = 1024 * 1024
OVER_ITEMS = 10_001  # one past the default MEMFTS_MAX_ITEMS_PER_CALL


def nested(depth: int) -> Any:
    value: Any = "deep"
    for _ in range(depth):
        value = [value]
    return value


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile") / "memory.db"


@pytest.fixture(scope="module")
def server(db: Path) -> Iterator[RawServer]:
    with RawServer(db) as running:
        running.call_ok(
            "create_entities",
            {
                "entities": [
                    {
                        "name": "alice",
                        "entityType": "person",
                        "observations": ["likes tea", "東京"],
                    },
                    {"name": "bob", "entityType": "person", "observations": ["C++ and node.js"]},
                ]
            },
        )
        running.call_ok(
            "create_relations",
            {"relations": [{"from": "alice", "to": "bob", "relationType": "knows"}]},
        )
        yield running
        assert running.proc.poll() is None, "the server died during the module"
    store = Store(db)
    try:
        assert store.check().ok
    finally:
        store.close()


# (tool, arguments, a phrase the error must contain); each must be refused, storing nothing
REFUSED: list[tuple[str, Any, str]] = [
    # wrong types and missing fields
    ("create_entities", {}, "entities"),
    ("create_entities", {"entities": None}, "valid list"),
    ("create_entities", {"entities": "not a list"}, "valid list"),
    ("create_entities", {"entities": [{"name": "x"}]}, "entityType"),
    ("create_entities", {"entities": [{"name": 5, "entityType": "t"}]}, "valid string"),
    (
        "create_entities",
        {"entities": [{"name": "x", "entityType": "t", "observations": "o"}]},
        "valid list",
    ),
    (
        "create_entities",
        {"entities": [{"name": "x", "entityType": "t", "observations": [None]}]},
        "valid string",
    ),
    ("create_entities", {"entities": nested(150)}, "entities"),
    ("create_relations", {"relations": [{"from": "alice", "to": "bob"}]}, "relationType"),
    (
        "create_relations",
        {"relations": {"from": "a", "to": "b", "relationType": "c"}},
        "valid list",
    ),
    (
        "add_observations",
        {"observations": [{"entityName": "alice", "contents": "x"}]},
        "valid list",
    ),
    ("add_observations", {"observations": [{"contents": ["x"]}]}, "entityName"),
    ("delete_entities", {"entityNames": [1, 2]}, "valid string"),
    ("delete_entities", {}, "entityNames"),
    ("delete_observations", {"deletions": [{"entityName": "alice"}]}, "observations"),
    ("delete_relations", {"relations": [{"from": "alice"}]}, "to"),
    ("search_nodes", {}, "query"),
    ("search_nodes", {"query": 5}, "valid string"),
    ("search_nodes", {"query": "tea", "limit": 0}, "greater than or equal to 1"),
    ("search_nodes", {"query": "tea", "limit": -5}, "greater than or equal to 1"),
    ("search_nodes", {"query": "tea", "limit": 10**15}, "less than or equal"),
    ("search_nodes", {"query": "tea", "limit": "many"}, "valid integer"),
    ("search_nodes", {"query": "tea", "entityType": ["person"]}, "valid string"),
    ("open_nodes", {"names": [None]}, "valid string"),
    ("open_nodes", {"names": "alice"}, "valid list"),
    ("no_such_tool", {}, "Tool no_such_tool not found"),
    # empty and blank names
    ("create_entities", {"entities": [{"name": "", "entityType": "t"}]}, "empty"),
    ("create_entities", {"entities": [{"name": " \t\n ", "entityType": "t"}]}, "empty"),
    ("create_entities", {"entities": [{"name": "x", "entityType": ""}]}, "empty"),
    ("create_relations", {"relations": [{"from": "", "to": "bob", "relationType": "r"}]}, "empty"),
    ("add_observations", {"observations": [{"entityName": "", "contents": ["x"]}]}, "empty"),
    # NUL bytes
    ("create_entities", {"entities": [{"name": "a\x00b", "entityType": "t"}]}, "NUL"),
    (
        "create_entities",
        {"entities": [{"name": "x", "entityType": "t", "observations": ["\x00"]}]},
        "NUL",
    ),
    (
        "add_observations",
        {"observations": [{"entityName": "alice", "contents": ["ok", "a\x00"]}]},
        "NUL",
    ),
    ("create_relations", {"relations": [{"from": "a", "to": "b", "relationType": "r\x00"}]}, "NUL"),
    ("delete_entities", {"entityNames": ["alice\x00"]}, "NUL"),
    # sizes: one oversized part refuses the whole call
    (
        "create_entities",
        {
            "entities": [
                {"name": "fine", "entityType": "t", "observations": ["small"]},
                {"name": "huge", "entityType": "t", "observations": ["x" * (5 * MB)]},
            ]
        },
        "MEMFTS_MAX_OBSERVATION_CHARS",
    ),
    (
        "add_observations",
        {"observations": [{"entityName": "alice", "contents": ["fine", "y" * (3 * MB)]}]},
        "MEMFTS_MAX_OBSERVATION_CHARS",
    ),
    (
        "create_entities",
        {"entities": [{"name": "n" * 5000, "entityType": "t"}]},
        "MEMFTS_MAX_NAME_CHARS",
    ),
    (
        "create_relations",
        {"relations": [{"from": "alice", "to": "bob", "relationType": "r" * 5000}]},
        "MEMFTS_MAX_NAME_CHARS",
    ),
    (
        "create_entities",
        {"entities": [{"name": f"bulk{i}", "entityType": "t"} for i in range(OVER_ITEMS)]},
        "MEMFTS_MAX_ITEMS_PER_CALL",
    ),
    (
        "add_observations",
        {
            "observations": [
                {"entityName": "alice", "contents": [f"o{i}" for i in range(OVER_ITEMS)]}
            ]
        },
        "MEMFTS_MAX_ITEMS_PER_CALL",
    ),
    ("delete_entities", {"entityNames": ["alice"] * OVER_ITEMS}, "MEMFTS_MAX_ITEMS_PER_CALL"),
    ("open_nodes", {"names": [f"n{i}" for i in range(200_000)]}, "MEMFTS_MAX_ITEMS_PER_CALL"),
    (
        "delete_relations",
        {"relations": [{"from": "alice", "to": "bob", "relationType": "knows"}] * OVER_ITEMS},
        "MEMFTS_MAX_ITEMS_PER_CALL",
    ),
    (
        "delete_observations",
        {"deletions": [{"entityName": "alice", "observations": ["likes tea"]}] * OVER_ITEMS},
        "MEMFTS_MAX_ITEMS_PER_CALL",
    ),
    ("search_nodes", {"query": "tea " * 25_001}, "100000"),
    ("search_nodes", {"query": "q" * (5 * MB)}, "100000"),
    # all or nothing: the first entity exists, the second does not
    (
        "add_observations",
        {
            "observations": [
                {"entityName": "alice", "contents": ["would be new"]},
                {"entityName": "nobody", "contents": ["x"]},
            ]
        },
        "Entity with name nobody not found",
    ),
]


def _case_id(case: tuple[str, Any, str]) -> str:
    tool, arguments, phrase = case
    return f"{tool}-{phrase}-{len(json.dumps(arguments))}"


@pytest.mark.parametrize(
    ("tool", "arguments", "phrase"), REFUSED, ids=[_case_id(c) for c in REFUSED]
)
def test_refused_with_a_clear_error_and_nothing_stored(
    server: RawServer, tool: str, arguments: Any, phrase: str
) -> None:
    before = server.graph()
    result = server.call(tool, arguments)
    assert result.get("isError") is True, f"accepted: {str(result)[:500]}"
    message = error_text(result)
    assert phrase in message, message[:1000]
    assert len(message) < 5000, "the error echoes the whole input back"
    assert server.graph() == before


# odd but valid: each must be answered correctly, without an error
ACCEPTED: list[tuple[str, Any]] = [
    ("search_nodes", {"query": 'NEAR( "unbalanced AND OR NOT * -x a:b ^c {d} C++'}),
    ("search_nodes", {"query": "\x00"}),
    ("search_nodes", {"query": "'; DROP TABLE entities; --"}),
    ("search_nodes", {"query": ""}),
    ("search_nodes", {"query": "tea", "limit": 10_000}),
    ("open_nodes", {"names": ["nobody", "alice", "alice"]}),
    ("open_nodes", {"names": []}),
    ("create_entities", {"entities": []}),
    ("read_graph", {"unexpected": "extra argument"}),
    ("delete_entities", {"entityNames": ["nobody"]}),
    ("delete_relations", {"relations": [{"from": "x", "to": "y", "relationType": "z"}]}),
]


@pytest.mark.parametrize(("tool", "arguments"), ACCEPTED, ids=[c[0] for c in ACCEPTED])
def test_odd_but_valid_calls_change_nothing_they_should_not(
    server: RawServer, tool: str, arguments: Any
) -> None:
    before = server.graph()
    result = server.call(tool, arguments)
    assert result.get("isError") is False, error_text(result)
    assert server.graph() == before


def test_stored_text_comes_back_byte_for_byte(server: RawServer) -> None:
    """Text that is valid but unusual is stored exactly: no garbage, no mangling."""
    odd = [
        "emoji 🧠 and ZWJ 👩‍👩‍👧",
        "RTL \u202e reversed",
        "combining e\u0301 vs é",
        "quotes \" ' ` and backslash \\ and \\u0000 as text",
        "x" * 100_000,  # exactly at the limit
        "\t\n\r control whitespace",
    ]
    server.call_ok(
        "create_entities",
        {"entities": [{"name": "odd 🧠", "entityType": "t", "observations": odd}]},
    )
    graph = server.call_ok("open_nodes", {"names": ["odd 🧠"]})["structuredContent"]
    assert graph["entities"][0]["observations"] == odd
    server.call_ok("delete_entities", {"entityNames": ["odd 🧠"]})


# ---- raw bytes a typed client would not send ------------------------------------------------


def _raw_call(server: RawServer, request_id: int, tool: str, arguments_json: bytes) -> None:
    server.send_line(
        b'{"jsonrpc":"2.0","id":%d,"method":"tools/call","params":{"name":"%s","arguments":%s}}'
        % (request_id, tool.encode(), arguments_json)
    )


@pytest.mark.parametrize(
    ("tool", "arguments_json"),
    [
        ("create_entities", rb'{"entities":[{"name":"x\ud800","entityType":"t"}]}'),
        (
            "create_entities",
            rb'{"entities":[{"name":"x","entityType":"t","observations":["\udc00"]}]}',
        ),
        (
            "add_observations",
            rb'{"observations":[{"entityName":"alice","contents":["ok","\ud83d"]}]}',
        ),
    ],
    ids=["name", "observation", "add"],
)
def test_lone_surrogate_over_the_wire_is_answered_and_refused(
    server: RawServer, tool: str, arguments_json: bytes
) -> None:
    """JSON allows the escape "\\ud800"; it is not Unicode text. The request must get an answer
    (a tool error or a JSON-RPC error, naming the problem), not silence the client waits on."""
    before = server.graph()
    _raw_call(server, 90_001, tool, arguments_json)
    answer = server.wait(90_001, timeout=3)
    text = error_text(answer.get("result", answer)).lower()
    assert answer.get("error") or answer["result"]["isError"] is True, answer
    assert "surrogate" in text or "unicode" in text, text
    assert server.graph() == before


@pytest.mark.parametrize(
    "bad", [b"\xff", b"\xc3", b"\xed\xa0\x80", b"caf\xe9"], ids=["ff", "cut", "cesu", "latin1"]
)
def test_a_line_that_is_not_utf8_is_refused_not_stored_as_replacement_characters(
    server: RawServer, bad: bytes
) -> None:
    """Invalid UTF-8 was stored as U+FFFD without a word, while a lone surrogate escape was
    refused: both are refused now, with the request's id and where the bad bytes are."""
    before = server.graph()
    _raw_call(
        server,
        90_020,
        "create_entities",
        b'{"entities":[{"name":"x' + bad + b'","entityType":"t"}]}',
    )
    answer = server.wait(90_020, timeout=5)
    assert answer["error"]["code"] == -32700
    assert "not UTF-8 text" in answer["error"]["message"]
    assert server.graph() == before  # and the session goes on


def test_escaped_nul_over_the_wire_is_refused(server: RawServer) -> None:
    before = server.graph()
    _raw_call(
        server, 90_010, "create_entities", rb'{"entities":[{"name":"a\u0000b","entityType":"t"}]}'
    )
    result = server.wait(90_010)["result"]
    assert result["isError"] is True and "NUL" in error_text(result)
    assert server.graph() == before


def test_deep_nesting_over_the_wire_is_answered(server: RawServer) -> None:
    """100,000 nested arrays: no crash, no hang; JSON-RPC says a request that cannot be
    parsed gets a Parse error (id null when the id cannot be read)."""
    before = server.graph()
    depth = 100_000
    _raw_call(server, 90_020, "open_nodes", b'{"names":' + b"[" * depth + b"]" * depth + b"}")
    answer = server.responses.get(timeout=3)
    assert answer is not None and "error" in answer, answer
    assert answer.get("id") in (90_020, None)
    assert server.graph() == before


def test_a_line_that_is_not_json_is_answered_and_the_session_goes_on(server: RawServer) -> None:
    before = server.graph()
    server.send_line(b'{"jsonrpc":"2.0","id":90030,"method":"tools/call","params":{"name":')
    answer = server.responses.get(timeout=3)
    assert answer is not None and answer.get("error", {}).get("code") == -32700, answer
    assert server.graph() == before


def test_the_server_survives_a_twenty_megabyte_line(server: RawServer) -> None:
    before = server.graph()
    result = server.call(
        "add_observations",
        {"observations": [{"entityName": "alice", "contents": ["z" * (20 * MB)]}]},
        timeout=60,
    )
    assert result["isError"] is True and "MEMFTS_MAX_OBSERVATION_CHARS" in error_text(result)
    assert server.graph() == before


def test_one_call_cannot_carry_unbounded_text(server: RawServer) -> None:
    """Per-item limits alone let one call carry 10,000 x 10,000 observations of 100,000
    characters; a bound on the whole call keeps a looping agent from storing gigabytes."""
    before = server.graph()
    contents = [f"{i} " + "w" * 99_990 for i in range(120)]  # 12 M characters, each under the limit
    try:
        result = server.call(
            "add_observations", {"observations": [{"entityName": "bob", "contents": contents}]}
        )
        assert result["isError"] is True and "MEMFTS_MAX_CALL_CHARS" in error_text(result)
        assert server.graph() == before
    finally:  # keep the module's graph small for the cases after this one
        server.call(
            "delete_observations", {"deletions": [{"entityName": "bob", "observations": contents}]}
        )


_NOISY_SERVER = """
import os, sys
import anyio
from memfts.server import build_server
from memfts.stdio import run_stdio
from memfts.store import Store

server = build_server(Store(sys.argv[1]))

@server.tool()
async def noisy() -> str:
    print("stray print")
    os.system("echo child process output")
    return "quiet on the wire"

anyio.run(run_stdio, server)
"""


def test_stray_output_from_a_tool_or_a_child_never_reaches_the_wire(tmp_path: Path) -> None:
    """One stray byte on stdout breaks the protocol: while serving, fd 1 is stderr."""
    lines = [
        initialize_request(),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "noisy"}},
    ]
    proc = subprocess.Popen(
        [sys.executable, "-c", _NOISY_SERVER, str(tmp_path / "memory.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None
    for message in lines:
        proc.stdin.write(json.dumps(message).encode() + b"\n")
    proc.stdin.flush()
    answers = [json.loads(proc.stdout.readline()) for _ in range(2)]
    proc.stdin.close()
    proc.wait(timeout=10)
    assert proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    assert out == b""
    assert answers[1]["id"] == 2
    assert answers[1]["result"]["content"][0]["text"] == "quiet on the wire"
    assert b"stray print" in err and b"child process output" in err


def test_a_batch_piped_in_at_once_is_answered_in_full_before_exit(tmp_path: Path) -> None:
    """`printf ... | memfts`: stdin ends right after the requests; each still gets its answer."""
    batch = [
        initialize_request(),
        {"jsonrpc": "2.0", "method": "notifications/initialized"},
        {"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
        {
            "jsonrpc": "2.0",
            "id": 2,
            "method": "tools/call",
            "params": {
                "name": "create_entities",
                "arguments": {"entities": [{"name": "piped", "entityType": "t"}]},
            },
        },
        {"jsonrpc": "2.0", "id": 3, "method": "tools/call", "params": {"name": "read_graph"}},
    ]
    done = subprocess.run(
        [sys.executable, "-m", "memfts", "--db", str(tmp_path / "memory.db")],
        input=b"".join(json.dumps(m).encode() + b"\n" for m in batch),
        capture_output=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    answers = [json.loads(line) for line in done.stdout.splitlines()]
    assert [a["id"] for a in answers] == [0, 1, 2, 3]
    graph = answers[3]["result"]["structuredContent"]
    assert [e["name"] for e in graph["entities"]] == ["piped"]


@pytest.mark.parametrize("stdin", ["devnull", "file"])
def test_stdin_that_is_not_a_pipe_is_served_and_ends_cleanly(tmp_path: Path, stdin: str) -> None:
    source = tmp_path / "requests.jsonl"
    source.write_text(json.dumps(initialize_request()) + "\n")
    with open(os.devnull if stdin == "devnull" else source, "rb") as handle:
        done = subprocess.run(
            [sys.executable, "-m", "memfts", "--db", str(tmp_path / "memory.db")],
            stdin=handle,
            capture_output=True,
            timeout=30,
        )
    assert done.returncode == 0, done.stderr
    assert b"Traceback" not in done.stderr
    expected_ids = [] if stdin == "devnull" else [0]
    assert [json.loads(line)["id"] for line in done.stdout.splitlines()] == expected_ids


def test_a_store_limited_below_twenty_results_still_answers_calls_without_a_limit(
    tmp_path: Path,
) -> None:
    db = tmp_path / "memory.db"
    with RawServer(db, env=server_env(db, MEMFTS_MAX_SEARCH_LIMIT="2")) as server:
        entities = [{"name": f"tea {i}", "entityType": "t"} for i in range(5)]
        server.call_ok("create_entities", {"entities": entities})
        found = server.call_ok("search_nodes", {"query": "tea"})["structuredContent"]
        assert len(found["entities"]) == 2 and found["total"] == 5
        over = server.call("search_nodes", {"query": "tea", "limit": 3})
        assert over["isError"] is True and "less than or equal to 2" in error_text(over)


def test_a_client_that_stops_reading_ends_the_server_quietly(tmp_path: Path) -> None:
    """A client that closes its end of stdout (it crashed, or lost interest) must not make the
    server die with a traceback: it ends normally once stdin closes too."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "memfts", "--db", str(tmp_path / "memory.db")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
    proc.stdin.write(json.dumps(initialize_request()).encode() + b"\n")
    proc.stdin.flush()
    assert json.loads(proc.stdout.readline())["id"] == 0
    proc.stdout.close()
    for request_id in range(1, 4):
        line = {"jsonrpc": "2.0", "id": request_id, "method": "tools/list"}
        proc.stdin.write(json.dumps(line).encode() + b"\n")
    proc.stdin.close()
    assert proc.wait(timeout=20) == 0
    assert b"Traceback" not in proc.stderr.read()


@pytest.mark.parametrize("bad_id", ["1.0", "null", "true", "[1]"])
def test_a_request_with_an_id_that_is_not_a_string_or_integer_is_answered(
    server: RawServer, bad_id: str
) -> None:
    """Such a line parses as a notification, which gets no answer: the client would wait."""
    before = server.graph()
    server.send_line(
        b'{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"create_entities",'
        b'"arguments":{"entities":[{"name":"sneaky","entityType":"t"}]}}}' % bad_id.encode()
    )
    answer = server.responses.get(timeout=5)
    assert answer["id"] is None and answer["error"]["code"] == -32600, answer
    assert server.graph() == before
