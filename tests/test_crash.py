"""Crash safety: SIGKILL at any moment loses no acknowledged write and leaves no half call.

A server is killed at a random moment (while starting, migrating a new file, or with
writes in flight), restarted, and the file is checked: it opens, passes SQLite's and FTS5's
integrity checks, holds every write the client got an answer for, and holds each other call
either whole or not at all.
"""

from __future__ import annotations

import random
import signal
import threading
import time
from pathlib import Path
from typing import Any

from memfts.store import Store
from workers import RawServer, ServerGone

ROUNDS = 4
IN_FLIGHT = 6


def _call_for(round_: int, k: int) -> tuple[str, dict[str, Any]]:
    """The k-th write of a round: each kind of write, each touching several rows."""
    tag = f"r{round_}k{k}"
    if k % 3 == 2:
        return "add_observations", {
            "observations": [{"entityName": "hub", "contents": [f"{tag} one", f"{tag} two"]}]
        }
    if k % 3 == 1:
        return "create_relations", {
            "relations": [
                {"from": f"{tag}-x", "to": "hub", "relationType": "points at"},
                {"from": "hub", "to": f"{tag}-x", "relationType": "points back"},
            ]
        }
    return "create_entities", {
        "entities": [
            {
                "name": f"{tag}-a",
                "entityType": "crash",
                "observations": [f"{tag} a{i}" for i in range(3)],
            },
            {
                "name": f"{tag}-b",
                "entityType": "crash",
                "observations": [f"{tag} b{i}" for i in range(3)],
            },
        ]
    }


def _stored_parts(graph: Any, tool: str, arguments: dict[str, Any]) -> list[bool]:
    """For each row the call would write, whether the file holds it."""
    entities = {e.name: e for e in graph.entities}
    relations = {(r.from_, r.to, r.relationType) for r in graph.relations}
    if tool == "create_entities":
        parts = []
        for entity in arguments["entities"]:
            stored = entities.get(entity["name"])
            parts.append(stored is not None)
            parts += [
                stored is not None and o in stored.observations for o in entity["observations"]
            ]
        return parts
    if tool == "create_relations":
        return [
            (r["from"], r["to"], r["relationType"]) in relations for r in arguments["relations"]
        ]
    hub = entities["hub"].observations
    return [c in hub for c in arguments["observations"][0]["contents"]]


def _stream_until_killed(
    server: RawServer, round_: int, kill_after_ready: float | None
) -> tuple[list[Any], list[Any]]:
    """Send writes, several in flight, until the server dies; (acknowledged, unanswered).

    With ``kill_after_ready``, a SIGKILL is sent that many seconds after the handshake.
    """
    acknowledged: list[Any] = []
    sent: dict[int, Any] = {}
    k = 0
    try:
        server.initialize()
        if kill_after_ready is not None:
            _kill_later(server, kill_after_ready)
        server.call_ok("create_entities", {"entities": [{"name": "hub", "entityType": "hub"}]})
        while True:
            while len(sent) < IN_FLIGHT:
                tool, arguments = _call_for(round_, k)
                sent[server.send("tools/call", {"name": tool, "arguments": arguments})] = (
                    tool,
                    arguments,
                )
                k += 1
            request_id = min(sent)
            answer = server.wait(request_id)
            call = sent.pop(request_id)
            assert answer["result"]["isError"] is False, answer
            acknowledged.append(call)
    except (ServerGone, BrokenPipeError):
        pass
    return acknowledged, list(sent.values())


def _kill_later(server: RawServer, delay: float) -> threading.Timer:
    killer = threading.Timer(delay, server.proc.send_signal, (signal.SIGKILL,))
    killer.start()
    return killer


def test_sigkill_at_random_moments_loses_no_acknowledged_write(tmp_path: Path) -> None:
    seed = random.randrange(1_000_000)
    rng = random.Random(seed)
    db = tmp_path / "memory.db"  # new: the first kill may land while the schema is created
    acknowledged: list[Any] = []
    unanswered: list[Any] = []
    for round_ in range(ROUNDS):
        server = RawServer(db, initialize=False)
        if round_ == 0:  # at any moment of start-up: opening, creating the schema, handshake
            _kill_later(server, rng.uniform(0.05, 1.5))
            acked, lost = _stream_until_killed(server, round_, None)
        else:  # with writes streaming, several in flight
            acked, lost = _stream_until_killed(server, round_, rng.uniform(0.0, 0.4))
        assert server.proc.wait(timeout=10) == -signal.SIGKILL, f"seed {seed}"
        server.stderr_file.close()
        acknowledged += acked
        unanswered += lost

        if not db.exists():
            continue  # killed before SQLite created the file: nothing was acknowledged
        store = Store(db)  # a restart: opens the killed file, recovering its WAL
        try:
            report = store.check()
            assert report.ok, f"seed {seed}, round {round_}: {report}"
            graph = store.read_graph()
        finally:
            store.close()
        for tool, arguments in acknowledged:
            assert all(_stored_parts(graph, tool, arguments)), (
                f"seed {seed}, round {round_}: acknowledged {tool} {arguments} is not stored"
            )
        for tool, arguments in unanswered:
            parts = _stored_parts(graph, tool, arguments) if graph.entities else [False]
            assert all(parts) or not any(parts), (
                f"seed {seed}, round {round_}: half of {tool} {arguments} is stored: {parts}"
            )
    assert len(acknowledged) > 20, f"seed {seed}: too few writes got through to prove anything"

    # a real server restarted on the file serves all of it
    with RawServer(db) as server:
        names = {e["name"] for e in server.graph()["entities"]}
    for tool, arguments in acknowledged:
        if tool == "create_entities":
            assert {e["name"] for e in arguments["entities"]} <= names


def test_sigterm_closes_the_store_and_folds_the_wal_back(db_path: Path) -> None:
    """A client (or systemd, or docker stop) ending the server with SIGTERM gets the same
    clean close as stdin EOF: the WAL is checkpointed into the file and removed."""
    wal = Path(f"{db_path}-wal")
    server = RawServer(db_path)
    server.call_ok("create_entities", {"entities": [{"name": "kept", "entityType": "t"}]})
    assert wal.exists()
    server.proc.send_signal(signal.SIGTERM)
    server.proc.wait(timeout=10)
    deadline = time.monotonic() + 1
    while wal.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    server.stderr_file.close()
    assert not wal.exists(), "SIGTERM left the WAL behind: the store was not closed"
    store = Store(db_path)
    try:
        assert [e.name for e in store.read_graph().entities] == ["kept"]
    finally:
        store.close()
