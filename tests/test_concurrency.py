"""Many sessions, one memory: several real ``memfts`` processes on one file lose nothing.

Every test here runs real servers over stdio on a real SQLite file and checks the file
afterwards with a fresh connection, so a write that was acknowledged but not stored, or a
call that failed with "database is locked", fails the test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import apsw
import mcp
import pytest
from mcp import StdioServerParameters

from memfts.database import Database
from memfts.errors import StoreBusyError
from memfts.models import Entity
from memfts.store import Store
from workers import ForeignLock, RawServer, error_text, memfts_command, server_env

PROCESSES = 4
ROUNDS = 20


def _params(db: Path, **env: str) -> StdioServerParameters:
    command = memfts_command()
    return StdioServerParameters(command=command[0], args=command[1:], env=server_env(db, **env))


async def _session(
    db: Path, worker: int, acknowledged: list[tuple[str, Any]], failures: list[str]
) -> None:
    """One agent session: its own server process, writes and searches as fast as it can."""

    async def call(tool: str, arguments: dict[str, Any]) -> Any:
        result = await client.call_tool(tool, arguments)
        if result.is_error:
            failures.append(f"worker {worker} {tool}: {result.content}")
            return None
        acknowledged.append((tool, arguments))
        return result.structured_content

    async with mcp.Client(_params(db), mode="legacy", read_timeout_seconds=60) as client:
        # every session creates the shared entity: exactly one create wins, none fails
        await call("create_entities", {"entities": [{"name": "shared", "entityType": "hub"}]})
        for k in range(ROUNDS):
            name = f"w{worker}-e{k}"
            await call(
                "create_entities",
                {
                    "entities": [
                        {
                            "name": name,
                            "entityType": f"kind{worker}",
                            "observations": [f"marker{worker} round{k}", f"second {k}"],
                        }
                    ]
                },
            )
            await call(
                "add_observations",
                {"observations": [{"entityName": "shared", "contents": [f"from {name}"]}]},
            )
            await call(
                "create_relations",
                {"relations": [{"from": name, "to": "shared", "relationType": "feeds"}]},
            )
            # quoted: exact words, so semantic search (where installed) adds nothing to total
            found = await call("search_nodes", {"query": f'"marker{worker}"', "limit": 100})
            # a session reads its own writes: every entity it created so far is found
            if found is not None and found["total"] != k + 1:
                failures.append(f"worker {worker} round {k}: search found {found['total']}")


def test_processes_sharing_a_new_file_lose_no_write(tmp_path: Path) -> None:
    db = tmp_path / "shared" / "memory.db"  # does not exist: the servers race to create it
    acknowledged: list[tuple[str, Any]] = []
    failures: list[str] = []

    async def main() -> None:
        async with anyio.create_task_group() as tg:
            for worker in range(PROCESSES):
                tg.start_soon(_session, db, worker, acknowledged, failures)

    anyio.run(main)

    assert failures == []
    store = Store(db)
    try:
        graph = store.read_graph()
        assert store.check().ok
    finally:
        store.close()
    entities = {e.name: e for e in graph.entities}
    for worker in range(PROCESSES):
        for k in range(ROUNDS):
            name = f"w{worker}-e{k}"
            assert entities[name].observations == [f"marker{worker} round{k}", f"second {k}"]
    shared = entities["shared"].observations
    assert sorted(shared) == sorted(
        f"from w{w}-e{k}" for w in range(PROCESSES) for k in range(ROUNDS)
    )
    assert len(graph.relations) == PROCESSES * ROUNDS
    writes = [tool for tool, _ in acknowledged if tool != "search_nodes"]
    assert len(writes) == PROCESSES * (1 + 3 * ROUNDS)


def test_an_open_read_snapshot_never_blocks_writers(db_path: Path) -> None:
    """A reader that keeps its snapshot open as long as it likes (the longest possible
    read_graph) does not slow another process's writes, and does not see them."""
    reader = apsw.Connection(str(db_path))
    reader.execute("BEGIN")
    before = reader.execute("SELECT count(*) FROM entities").get
    with RawServer(db_path) as server:
        for k in range(40):
            started = time.monotonic()
            server.call_ok("create_entities", {"entities": [{"name": f"e{k}", "entityType": "t"}]})
            assert time.monotonic() - started < 2.0
        assert reader.execute("SELECT count(*) FROM entities").get == before
        reader.execute("COMMIT")
        assert reader.execute("SELECT count(*) FROM entities").get == before + 40
    reader.close()


def test_a_held_write_lock_fails_the_call_after_the_bound(db_path: Path) -> None:
    """Past MEMFTS_BUSY_TIMEOUT_S a write fails with a clear busy error, stores nothing, and
    reads go on meanwhile; once the lock is free, writes succeed again."""
    with RawServer(db_path, env={"MEMFTS_BUSY_TIMEOUT_S": "1.5"}) as server:
        server.call_ok("create_entities", {"entities": [{"name": "kept", "entityType": "t"}]})
        before = server.graph()
        holder = apsw.Connection(str(db_path))
        holder.execute("BEGIN IMMEDIATE")
        started = time.monotonic()
        result = server.call(
            "create_entities", {"entities": [{"name": "blocked", "entityType": "t"}]}
        )
        waited = time.monotonic() - started
        assert result["isError"] is True
        message = error_text(result)
        assert "busy" in message or "locked by other processes" in message
        assert "nothing was written" in message
        assert "MEMFTS_BUSY_TIMEOUT_S" in message
        assert 1.4 < waited < 10
        # a reader is not held up by the writer
        started = time.monotonic()
        assert server.graph() == before
        assert time.monotonic() - started < 1.0
        holder.execute("ROLLBACK")
        holder.close()
        server.call_ok("create_entities", {"entities": [{"name": "later", "entityType": "t"}]})
        names = [e["name"] for e in server.graph()["entities"]]
        assert names == ["kept", "later"]


def test_a_server_starting_while_the_file_is_held_waits_for_it(db_path: Path) -> None:
    """A lock held for a while (1 s here: longer than the first busy waits) is absorbed: the
    server opening the file, switching it to WAL and checking its schema just takes longer.
    An exclusive-mode connection holds every lock, so even reading the schema answers busy."""
    holder = apsw.Connection(str(db_path))
    holder.pragma("locking_mode", "EXCLUSIVE")
    holder.execute(
        "BEGIN IMMEDIATE; INSERT INTO relations(from_name, to_name, relation_type) "
        "VALUES ('a', 'b', 'c'); COMMIT"
    )  # in exclusive locking mode the lock stays after COMMIT

    def release() -> None:
        time.sleep(1.0)
        holder.pragma("locking_mode", "NORMAL")
        holder.execute("SELECT 1 FROM entities LIMIT 1")  # the next access drops the lock
        holder.close()

    releaser = threading.Thread(target=release)
    releaser.start()
    started = time.monotonic()
    with RawServer(db_path) as server:
        assert time.monotonic() - started > 0.9
        assert server.graph()["relations"] == [{"from": "a", "to": "b", "relationType": "c"}]
        server.call_ok("create_entities", {"entities": [{"name": "after", "entityType": "t"}]})
    releaser.join()


def test_wal_stays_bounded_and_is_folded_back_on_exit(db_path: Path) -> None:
    """Continuous writes do not grow the WAL without bound, and a server whose client hangs
    up (stdin EOF) checkpoints and removes it."""
    wal = Path(f"{db_path}-wal")
    biggest = 0
    payload = "lorem ipsum dolor sit amet " * 110  # ~3 KB, indexed word by word
    with RawServer(db_path) as server:
        for k in range(150):
            server.call_ok(
                "create_entities",
                {
                    "entities": [
                        {
                            "name": f"bulk{k}",
                            "entityType": "t",
                            "observations": [f"{payload} {k} {j}" for j in range(10)],
                        }
                    ]
                },
            )
            biggest = max(biggest, wal.stat().st_size if wal.exists() else 0)
        assert server.close() == 0
    written = os.path.getsize(db_path)
    assert written > 8 * 1024 * 1024  # far more went through the WAL than it ever held
    assert biggest < 8 * 1024 * 1024
    assert not wal.exists()


def test_wal_stays_bounded_while_connections_keep_writing_and_reading(db_path: Path) -> None:
    """Four connections (as four processes would) write and search without pause: some
    reader always pins the WAL and a writer is always queued, so SQLite's passive
    autocheckpoint alone never rewinds it (80 MB in 4 s here). It must stay bounded."""
    stop = time.monotonic() + 3.0
    wal = Path(f"{db_path}-wal")
    biggest = 0
    errors: list[BaseException] = []

    def session(worker: int) -> None:
        store = Store(db_path)
        try:
            k = 0
            while time.monotonic() < stop:
                notes = [f"note {worker} {k} {j} " + "lorem ipsum " * 50 for j in range(3)]
                store.create_entities(
                    [Entity(name=f"w{worker}k{k}", entityType="t", observations=notes)]
                )
                store.search_nodes(f"note {k}")
                k += 1
        except BaseException as exc:
            errors.append(exc)
        finally:
            store.close()

    threads = [threading.Thread(target=session, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    while any(t.is_alive() for t in threads):
        with contextlib.suppress(FileNotFoundError):
            biggest = max(biggest, wal.stat().st_size)
        time.sleep(0.01)
    assert errors == []
    assert biggest < 20 * 1024 * 1024, f"the WAL reached {biggest / 1024 / 1024:.1f} MB"


def test_a_busy_commit_is_retried_and_past_the_bound_rolled_back(db_path: Path) -> None:
    """COMMIT answering busy (rare in WAL, but SQLite allows it) keeps the transaction open
    and is tried again; past the bound the write is rolled back and reported busy."""
    database = Database(db_path, busy_timeout_s=0.3)
    insert = "INSERT INTO relations(from_name, to_name, relation_type) VALUES (?, 'b', 'c')"

    def flaky_commit(failures: int) -> Callable[[], None]:
        attempts = []

        def commit() -> None:
            attempts.append(1)
            assert not conn.get_autocommit(), "the transaction was dropped"
            if len(attempts) <= failures:
                raise apsw.BusyError("database is locked")
            database._commit(conn)

        return commit

    def stored() -> list[str]:
        reader = apsw.Connection(str(db_path))
        try:
            return [row[0] for row in reader.execute("SELECT from_name FROM relations")]
        finally:
            reader.close()

    conn = database.conn
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, ("kept",))
        database._retry(conn, flaky_commit(3), keep_open=True)
        assert stored() == ["kept"]
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(insert, ("dropped",))
        with pytest.raises(StoreBusyError, match="nothing was written"):
            database._retry(conn, flaky_commit(10**6), keep_open=True)
        assert conn.get_autocommit()
        assert stored() == ["kept"]
    finally:
        database.close()


def test_a_session_reads_its_own_writes_in_the_order_it_sent_them(db_path: Path) -> None:
    """Store calls run in threads now, so a read could overtake a write sent before it: a
    session's calls start once its earlier writes have ended, even a write that waits for
    another process's lock. Another session meanwhile (here another server process, over
    HTTP another client) is not held up."""
    env = {"MEMFTS_BUSY_TIMEOUT_S": "30"}
    with RawServer(db_path, env=env) as server, RawServer(db_path, env=env) as other:
        server.call_ok("create_entities", {"entities": [{"name": "kept", "entityType": "t"}]})
        with ForeignLock(db_path) as lock:
            write = server.send(
                "tools/call",
                {
                    "name": "create_entities",
                    "arguments": {"entities": [{"name": "queued", "entityType": "t"}]},
                },
            )
            read = server.send("tools/call", {"name": "search_nodes", "arguments": {"query": ""}})
            time.sleep(0.3)  # the write is waiting for the lock, the read behind it
            started = time.monotonic()
            found = other.call_ok("search_nodes", {"query": "kept"})["structuredContent"]
            assert [e["name"] for e in found["entities"]] == ["kept"]
            assert time.monotonic() - started < 3.0  # generous: CI machines are busy
            assert server.responses.empty(), server.responses.get()  # neither answered yet
            lock.release()
            assert server.wait(write)["result"]["isError"] is False
            answer = server.wait(read)["result"]["structuredContent"]
            assert [e["name"] for e in answer["entities"]] == ["queued", "kept"]


def test_sigterm_during_a_waiting_write_exits_at_once(db_path: Path) -> None:
    """SIGTERM while a write waits for another process's lock: the server stops waiting,
    closes the store and exits 0 within a moment (it used to wait 5 s on its own lock);
    the write was never acknowledged and is not stored."""
    server = RawServer(db_path, env={"MEMFTS_BUSY_TIMEOUT_S": "60"})
    with server, ForeignLock(db_path) as lock:
        server.send(
            "tools/call",
            {
                "name": "create_entities",
                "arguments": {"entities": [{"name": "never", "entityType": "t"}]},
            },
        )
        time.sleep(0.5)
        started = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        assert server.proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 4.5  # it took 9.5 s; at once on a quiet machine
        lock.release()
    store = Store(db_path)
    try:
        assert store.read_graph().entities == []
        assert store.check().ok
    finally:
        store.close()


def test_connections_of_threads_that_ended_are_closed(db_path: Path) -> None:
    """Each thread gets its own connection; when threads come and go (a pool's idle threads
    expire), the connections of those that ended are closed, not kept open for ever."""
    store = Store(db_path)
    try:
        for _ in range(20):
            worker = threading.Thread(target=store.stats)
            worker.start()
            worker.join()
        store.stats()
        assert len(store._db._handles) <= 2  # this thread's, and the last worker's
    finally:
        store.close()


def test_the_data_version_compares_whichever_thread_reads_it(db_path: Path) -> None:
    """Each connection counts commits for itself: read from the threads' own connections the
    numbers would differ with nothing written. One connection of its own answers."""
    store = Store(db_path)
    try:
        seen: list[int] = []
        for _ in range(3):
            worker = threading.Thread(target=lambda: seen.append(store.data_version()))
            worker.start()
            worker.join()
        seen.append(store.data_version())
        assert len(set(seen)) == 1, seen
        writer = threading.Thread(
            target=store.create_entities, args=([Entity(name="x", entityType="t")],)
        )
        writer.start()
        writer.join()
        after_own = store.data_version()
        assert after_own != seen[0]
        other = Store(db_path)  # another connection, as another process would be
        other.create_entities([Entity(name="y", entityType="t")])
        other.close()
        assert store.data_version() != after_own
    finally:
        store.close()


def test_an_export_read_slowly_does_not_pin_the_wal(db_path: Path) -> None:
    """A reader holding one snapshot pins the WAL: every write meanwhile piles up in it (277 MB
    over 1,500 writes). `memfts export | slow reader` held its snapshot as long as the pipe
    was full; now it reads into a spool file and lets go, and the WAL stays bounded."""
    import subprocess

    payload = "lorem ipsum dolor sit amet " * 110  # ~3 KB
    store = Store(db_path)
    store.create_entities(
        [Entity(name=f"old{i}", entityType="t", observations=[payload]) for i in range(100)]
    )
    store.close()
    wal = Path(f"{db_path}-wal")
    export = subprocess.Popen(
        [*memfts_command(), "--db", str(db_path), "export"],
        stdout=subprocess.PIPE,  # nobody reads it for now: the pipe fills (300 KB > 64 KB)
        stderr=subprocess.PIPE,
    )
    biggest = 0
    try:
        assert export.stdout is not None
        first = export.stdout.readline()  # its snapshot is open: it writes (and fills the pipe)
        with RawServer(db_path) as server:
            for k in range(250):
                server.call_ok(
                    "create_entities",
                    {
                        "entities": [
                            {
                                "name": f"new{k}",
                                "entityType": "t",
                                "observations": [f"{payload} {k} {j}" for j in range(10)],
                            }
                        ]
                    },
                )
                with contextlib.suppress(FileNotFoundError):
                    biggest = max(biggest, wal.stat().st_size)
        rest = export.stdout.read()  # through the same buffer as the first line
        assert export.stderr is not None
        err = export.stderr.read()
        export.wait(timeout=60)
    finally:
        if export.poll() is None:
            export.kill()
    assert export.returncode == 0, err
    lines = (first + rest).splitlines()
    assert len(lines) >= 100 and all(b'"name":"old' in line for line in lines[:100])
    assert biggest < 12 * 1024 * 1024, f"the WAL reached {biggest / 1024 / 1024:.1f} MB"
