"""Switching from the official server by changing only the command: ``MEMORY_FILE_PATH`` kept.

The official server (the real one, from npm: ``tests/node``) writes its ``memory.jsonl``;
a client config that then launches ``memfts`` with the same environment must serve the same
graph, from a database kept beside that file, the file left as it was. Later starts merge what
the official server wrote since (it may still run for another client); what it deleted is not
deleted (a merge only adds).
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp
import pytest
from mcp import StdioServerParameters

from conftest import memfts_command, node_tool


def official_params(jsonl: Path) -> StdioServerParameters:
    env = {"PATH": os.environ["PATH"], "MEMORY_FILE_PATH": str(jsonl)}
    return StdioServerParameters(command=str(node_tool("mcp-server-memory")), env=env)


def memfts_env(tmp: Path, **extra: str) -> dict[str, str]:
    """What a client config that swapped the command gives memfts: the official variable."""
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp / "home")}
    env.update(extra)
    return env


def memfts_params(env: dict[str, str]) -> StdioServerParameters:
    command = memfts_command()
    return StdioServerParameters(command=command[0], args=command[1:], env=env)


def start(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """A memfts start as a client makes it, ended at once (stdin closed): its stderr."""
    return subprocess.run(
        memfts_command(), env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=120,
    )  # fmt: skip


@asynccontextmanager
async def client(params: StdioServerParameters) -> AsyncIterator[mcp.Client]:
    async with mcp.Client(params, mode="legacy") as connected:
        yield connected


async def call(params: StdioServerParameters, *calls: tuple[str, dict[str, Any]]) -> Any:
    """Make the calls in one session; the last one's structuredContent."""
    async with client(params) as session:
        result = None
        for tool, arguments in calls:
            result = await session.call_tool(tool, arguments)
            assert not result.is_error, f"{tool}: {result.content}"
        return None if result is None else result.structured_content


def entity(name: str, kind: str, *observations: str) -> dict[str, Any]:
    return {"name": name, "entityType": kind, "observations": list(observations)}


def relation(a: str, b: str, kind: str) -> dict[str, str]:
    return {"from": a, "to": b, "relationType": kind}


def test_a_config_that_only_swaps_the_command_serves_the_same_graph(tmp_path: Path) -> None:
    jsonl = tmp_path / "official" / "memory.jsonl"
    jsonl.parent.mkdir()
    official = official_params(jsonl)
    graph = anyio.run(
        call,
        official,
        ("create_entities", {"entities": [
            entity("Alice", "person", "Prefers TypeScript", "lives in Zürich"),
            entity("Acme", "company", "builds rockets"),
            entity("東京", "place"),
        ]}),
        ("create_relations", {"relations": [relation("Alice", "Acme", "works_at")]}),
        ("read_graph", {}),
    )  # fmt: skip
    written = jsonl.read_bytes()

    env = memfts_env(tmp_path, MEMORY_FILE_PATH=str(jsonl))
    done = start(env)
    assert done.returncode == 0, done.stderr
    db = jsonl.with_name("memory.memfts.db")
    assert done.stderr == (
        f"memfts: imported {jsonl} ($MEMORY_FILE_PATH, the official server's file; only read) "
        f"into {db} in one transaction: 3 entities, 3 observations and 1 relation added. "
        "Later starts merge what it gains; what is deleted there is not deleted here\n"
    )
    assert anyio.run(call, memfts_params(env), ("read_graph", {})) == graph
    found = anyio.run(call, memfts_params(env), ("search_nodes", {"query": "typescript"}))
    assert [e["name"] for e in found["entities"]] == ["Alice"]
    assert jsonl.read_bytes() == written  # only read
    assert not (tmp_path / "home" / ".local").exists()  # no database anywhere else

    again = start(env)  # nothing new: nothing said, nothing added
    assert (again.returncode, again.stderr) == (0, "")
    assert anyio.run(call, memfts_params(env), ("read_graph", {})) == graph


def test_later_starts_merge_what_the_official_server_wrote_since(tmp_path: Path) -> None:
    jsonl = tmp_path / "memory.jsonl"
    official = official_params(jsonl)
    anyio.run(
        call,
        official,
        ("create_entities", {"entities": [entity("Alice", "person", "one"), entity("Bob", "p")]}),
        ("create_relations", {"relations": [relation("Alice", "Bob", "knows")]}),
    )
    env = memfts_env(tmp_path, MEMORY_FILE_PATH=str(jsonl))
    assert start(env).returncode == 0
    # memfts' own write, kept whatever the official file says later
    anyio.run(call, memfts_params(env), ("create_entities", {"entities": [entity("Mine", "t")]}))

    # another client still on the official server goes on writing to its file
    anyio.run(
        call,
        official,
        ("create_entities", {"entities": [entity("Carol", "person", "new here")]}),
        ("add_observations", {"observations": [{"entityName": "Alice", "contents": ["two"]}]}),
        ("create_relations", {"relations": [relation("Carol", "Alice", "admires")]}),
        ("delete_entities", {"entityNames": ["Bob"]}),
    )
    done = start(env)
    assert done.stderr == (
        f"memfts: merged what {jsonl} gained since the last start (3 new or changed lines): "
        "1 entity, 2 observations and 1 relation added\n"
    )
    graph = anyio.run(call, memfts_params(env), ("read_graph", {}))
    assert graph == {
        "entities": [
            entity("Alice", "person", "one", "two"),
            entity("Bob", "p"),  # deleted there, not here: a merge only adds
            entity("Mine", "t"),
            entity("Carol", "person", "new here"),
        ],
        "relations": [relation("Alice", "Bob", "knows"), relation("Carol", "Alice", "admires")],
    }
    assert (start(env).stderr, start(env).returncode) == ("", 0)


def test_the_first_import_is_one_transaction(tmp_path: Path) -> None:
    """Killed in the middle of its first import, memfts leaves none of the file; the next start
    finishes the job (all of it, each line once)."""
    jsonl = tmp_path / "memory.jsonl"
    lines = [
        f'{{"type":"entity","name":"e{i}","entityType":"t","observations":["fact {i} a","b {i}"]}}'
        for i in range(20_000)
    ]
    jsonl.write_text("\n".join(lines))
    env = memfts_env(tmp_path, MEMORY_FILE_PATH=str(jsonl))
    db = tmp_path / "memory.memfts.db"
    wal = tmp_path / "memory.memfts.db-wal"
    server = subprocess.Popen(
        memfts_command(), env=env, stdin=subprocess.PIPE, stderr=subprocess.PIPE
    )
    # The kill lands while the import's one transaction is being written: its pages are in the
    # WAL (the schema's take ~0.3 MB; the whole import ~9 MB), never at a guessed moment, which
    # a fast machine had already passed.
    deadline = time.monotonic() + 60
    while not (wal.exists() and wal.stat().st_size > 1_500_000):
        assert server.poll() is None, "memfts ended before its import was under way"
        assert time.monotonic() < deadline, "the import never started"
        time.sleep(0.005)
    server.send_signal(signal.SIGKILL)
    server.wait(timeout=30)
    assert server.stderr is not None and b"imported" not in server.stderr.read()

    def counts() -> tuple[int, int]:
        if not db.exists():
            return 0, 0
        conn = sqlite3.connect(db)
        try:
            tables = {n for (n,) in conn.execute("SELECT name FROM sqlite_master")}
            if "followed_lines" not in tables:
                return 0, 0
            entities = conn.execute("SELECT count(*) FROM entities").fetchone()[0]
            lines_seen = conn.execute("SELECT count(*) FROM followed_lines").fetchone()[0]
            return entities, lines_seen
        finally:
            conn.close()

    assert counts() == (0, 0), counts()
    done = start(env)
    assert done.returncode == 0, done.stderr
    assert counts() == (20_000, 20_000)


def test_two_servers_starting_at_once_merge_each_line_once(tmp_path: Path) -> None:
    jsonl = tmp_path / "memory.jsonl"
    jsonl.write_text(
        '{"type":"entity","name":"A","entityType":"t","observations":["x","y"]}\n'
        '{"type":"relation","from":"A","to":"B","relationType":"r"}'
    )
    env = memfts_env(tmp_path, MEMORY_FILE_PATH=str(jsonl))
    servers = [
        subprocess.Popen(memfts_command(), env=env, stdin=subprocess.DEVNULL,
                         stderr=subprocess.PIPE, text=True)
        for _ in range(3)
    ]  # fmt: skip
    said = [s.communicate(timeout=60)[1] for s in servers]
    assert [s.returncode for s in servers] == [0, 0, 0]
    assert sum("imported" in text for text in said) == 1, said
    graph = anyio.run(call, memfts_params(env), ("read_graph", {}))
    assert graph == {
        "entities": [entity("A", "t", "x", "y")],
        "relations": [relation("A", "B", "r")],
    }


def test_memory_db_path_wins_and_the_file_is_then_left_alone(tmp_path: Path) -> None:
    jsonl = tmp_path / "memory.jsonl"
    jsonl.write_text('{"type":"entity","name":"A","entityType":"t","observations":[]}')
    db = tmp_path / "chosen.db"
    env = memfts_env(tmp_path, MEMORY_FILE_PATH=str(jsonl), MEMORY_DB_PATH=str(db))
    assert start(env).stderr == ""
    assert anyio.run(call, memfts_params(env), ("read_graph", {})) == {
        "entities": [],
        "relations": [],
    }
    assert db.exists() and not (tmp_path / "memory.memfts.db").exists()


def test_a_line_it_cannot_use_is_said_once_and_the_rest_comes_in(tmp_path: Path) -> None:
    jsonl = tmp_path / "memory.jsonl"
    jsonl.write_text(
        '{"type":"entity","name":"A","entityType":"t","observations":[]}\n'
        '{"type":"entity","name":"B",\n'
        '{"type":"relation","from":"A","to":"A","relationType":"self"}'
    )
    env = memfts_env(tmp_path, MEMORY_FILE_PATH=str(jsonl))
    first = start(env).stderr.splitlines()
    assert first[0].startswith("memfts: memory.jsonl line 2: not valid JSON")
    assert first[0].endswith("; skipped")
    assert "1 entity, 0 observations and 1 relation added" in first[1]
    os.utime(jsonl)  # touched, same lines: read again, nothing new to say
    assert start(env).stderr == ""


def test_a_missing_file_is_started_beside_and_a_sqlite_file_is_refused(tmp_path: Path) -> None:
    jsonl = tmp_path / "not yet" / "memory.jsonl"
    env = memfts_env(tmp_path, MEMORY_FILE_PATH=str(jsonl))
    done = start(env)
    assert (done.returncode, done.stderr) == (0, "")
    assert (tmp_path / "not yet" / "memory.memfts.db").exists()
    assert not jsonl.exists()

    sqlite_file = tmp_path / "memory.db"
    sqlite3.connect(sqlite_file).execute("CREATE TABLE t(x)").connection.close()
    done = start(memfts_env(tmp_path, MEMORY_FILE_PATH=str(sqlite_file)))
    assert done.returncode == 1
    assert done.stderr.strip().endswith(
        "(MEMORY_FILE_PATH) is a SQLite database, not the official server's JSON lines: set "
        "MEMORY_DB_PATH to it instead"
    )
    assert done.stderr.count("\n") == 1


@pytest.mark.parametrize("relative", ["memory.jsonl", "sub/memory.jsonl"])
def test_a_relative_path_is_taken_from_where_the_client_starts_memfts(
    tmp_path: Path, relative: str
) -> None:
    (tmp_path / relative).parent.mkdir(exist_ok=True)
    (tmp_path / relative).write_text(
        '{"type":"entity","name":"A","entityType":"t","observations":[]}'
    )
    env = memfts_env(tmp_path, MEMORY_FILE_PATH=relative)
    done = subprocess.run(
        memfts_command(), env=env, cwd=tmp_path, stdin=subprocess.DEVNULL, capture_output=True,
        text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "1 entity" in done.stderr
    assert (tmp_path / relative).with_name("memory.memfts.db").exists()
