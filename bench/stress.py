"""Stress: N real ``memfts`` stdio servers on one file, mixed writes and searches, nothing lost.

Each session is its own ``python -m memfts`` process, driven over stdio by a hand-written
JSON-RPC client (tests/workers.py) so the client costs little CPU next to the servers. Every
call waits for its answer before the next one, as an agent does. Afterwards the file is opened
fresh and every acknowledged write is looked for.

    python bench/stress.py                      # 8 processes x 1,000 calls
    python bench/stress.py --processes 4 --calls 200
    python bench/stress.py --durability         # also: commit cost, synchronous NORMAL vs FULL
    python bench/stress.py --http               # one `serve --http`, 10 clients, 10k entities,
                                                # another process holding the write lock for 3 s

Prints calls/s, p50/p99 call latency per kind, lost writes, failed calls and the largest WAL
seen; with ``--http``, also the latency of the reads made while another process held the
write lock (half the clients only read; the writers' calls wait for the lock meanwhile).
Exits 1 if anything was lost or failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from memfts.models import Entity  # noqa: E402
from memfts.store import Store  # noqa: E402
from workers import RawServer, error_text  # noqa: E402

WORDS = [f"{a}{b}" for a in ("alpha", "beta", "gamma", "delta") for b in ("red", "blue", "green")]


def _agent_call(rng: random.Random, worker: int, k: int) -> tuple[str, dict[str, Any]]:
    """The next call of an agent: 40 % create, 20 % add, 10 % relate, 30 % search."""
    roll = rng.random()
    tag = f"w{worker}k{k}"
    if roll < 0.4:
        return "create_entities", {
            "entities": [
                {
                    "name": tag,
                    "entityType": f"kind{worker}",
                    "observations": [
                        f"{tag} {rng.choice(WORDS)} {rng.choice(WORDS)}",
                        f"{tag} second note about {rng.choice(WORDS)}",
                    ],
                }
            ]
        }
    if roll < 0.6:
        return "add_observations", {
            "observations": [{"entityName": "hub", "contents": [f"{tag} on the hub"]}]
        }
    if roll < 0.7:
        return "create_relations", {
            "relations": [{"from": tag, "to": "hub", "relationType": "touches"}]
        }
    return "search_nodes", {"query": f"{rng.choice(WORDS)} {rng.choice(WORDS)}", "limit": 10}


def _reader_call(rng: random.Random, worker: int, k: int) -> tuple[str, dict[str, Any]]:
    """The next call of a colleague looking things up: searches and open_nodes only."""
    if k % 2:
        return "open_nodes", {"names": [f"entity {rng.randrange(FILLER)}", "hub"]}
    return "search_nodes", {"query": f"topic{rng.randrange(97)} {rng.choice(WORDS)}", "limit": 10}


Call = tuple[str, float, float]
"""A call's tool, start and end (perf_counter seconds)."""


def _session(
    connect: Any,
    worker: int,
    calls: int,
    reader: bool,
    timings: list[Call],
    acknowledged: list[tuple[str, Any]],
    failures: list[str],
    ready: threading.Barrier,
) -> None:
    rng = random.Random(worker)
    with connect() as server:
        if not reader:
            server.call_ok("create_entities", {"entities": [{"name": "hub", "entityType": "hub"}]})
        ready.wait()
        for k in range(calls):
            tool, arguments = (_reader_call if reader else _agent_call)(rng, worker, k)
            started = time.perf_counter()
            try:
                result = server.call(tool, arguments, timeout=120)
            except Exception as exc:  # a dead or hung server is a failure, not a crash of the bench
                failures.append(f"worker {worker} {tool}: {exc!r}")
                return
            timings.append((tool, started, time.perf_counter()))
            if result.get("isError") is not False:
                failures.append(f"worker {worker} {tool}: {error_text(result)[:300]}")
            elif tool not in ("search_nodes", "open_nodes"):
                acknowledged.append((tool, arguments))


def _lost(db: Path, acknowledged: list[tuple[str, Any]]) -> list[str]:
    store = Store(db)
    try:
        assert store.check().ok, "integrity check failed"
        graph = store.read_graph()
    finally:
        store.close()
    entities = {e.name: e for e in graph.entities}
    relations = {(r.from_, r.to, r.relationType) for r in graph.relations}
    hub = set(entities["hub"].observations)
    lost = []
    for tool, arguments in acknowledged:
        if tool == "create_entities":
            for e in arguments["entities"]:
                stored = entities.get(e["name"])
                if stored is None or stored.observations != e["observations"]:
                    lost.append(e["name"])
        elif tool == "add_observations":
            lost += [c for c in arguments["observations"][0]["contents"] if c not in hub]
        else:
            lost += [
                str(r)
                for r in arguments["relations"]
                if (r["from"], r["to"], r["relationType"]) not in relations
            ]
    return lost


def _wal_watch(db: Path, stop: threading.Event, biggest: list[int]) -> None:
    wal = Path(f"{db}-wal")
    while not stop.wait(0.02):
        with contextlib.suppress(FileNotFoundError):
            biggest[0] = max(biggest[0], wal.stat().st_size)


def _ms(values: list[float], q: float) -> str:
    if not values:
        return "-"
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.1f}"


def _table(rows: list[tuple[str, list[float]]]) -> None:
    print(f"  {'call':18} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for name, values in rows:
        top = f"{max(values) * 1000:.1f}" if values else "-"
        print(f"  {name:18} {len(values):6} {_ms(values, 0.5):>8} {_ms(values, 0.99):>8} {top:>8}")


def _run_sessions(
    db: Path,
    connect: Any,
    sessions: int,
    readers: int,
    calls: int,
    during: Any = None,
) -> tuple[list[Call], list[tuple[str, Any]], list[str], float, int]:
    """Run the sessions (the last ``readers`` only read) until each made ``calls`` calls;
    ``during()`` runs meanwhile in this thread. Returns the timings, the acknowledged
    writes, the failures, the elapsed time and the largest WAL seen."""
    timings: list[Call] = []
    acknowledged: list[tuple[str, Any]] = []
    failures: list[str] = []
    ready = threading.Barrier(sessions + 1)
    threads = [
        threading.Thread(
            target=_session,
            args=(connect, w, calls, w >= sessions - readers, timings, acknowledged, failures),
            kwargs={"ready": ready},
        )
        for w in range(sessions)
    ]
    for t in threads:
        t.start()
    ready.wait()  # every server is up: time the calls only, not the interpreters' start-ups
    stop, biggest = threading.Event(), [0]
    watcher = threading.Thread(target=_wal_watch, args=(db, stop, biggest))
    watcher.start()
    started = time.perf_counter()
    if during is not None:
        during()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    stop.set()
    watcher.join()
    return timings, acknowledged, failures, elapsed, biggest[0]


def _report(
    db: Path,
    timings: list[Call],
    acknowledged: list[tuple[str, Any]],
    failures: list[str],
    elapsed: float,
    biggest: int,
) -> int:
    lost = _lost(db, acknowledged)
    tools = sorted({tool for tool, _, _ in timings})
    everything = [end - start for _, start, end in timings]
    print(f"  {len(everything)} calls in {elapsed:.1f} s: {len(everything) / elapsed:.0f} calls/s")
    _table(
        [(tool, [e - s for t, s, e in timings if t == tool]) for tool in tools]
        + [("all", everything)]
    )
    print(
        f"  acknowledged writes: {len(acknowledged)}, lost: {len(lost)}, "
        f"failed calls: {len(failures)}"
    )
    print(
        f"  largest WAL seen: {biggest / 1024 / 1024:.1f} MB; file: "
        f"{db.stat().st_size / 1024 / 1024:.1f} MB"
    )
    for line in failures[:10] + lost[:10]:
        print("   ", line)
    return 1 if lost or failures else 0


def stress(processes: int, calls: int, folder: Path) -> int:
    db = folder / "stress.db"
    result = _run_sessions(db, lambda: RawServer(db), processes, 0, calls)
    print(f"{processes} processes x {calls} calls on one file ({db})")
    return _report(db, *result)


FILLER = 10_000
"""Entities already in the memory for ``--http`` (the 10k of the latency target)."""


def _fill(db: Path, entities: int) -> None:
    store = Store(db)
    try:
        for start in range(0, entities, 2000):
            store.import_batch(
                [
                    Entity(
                        name=f"entity {i}",
                        entityType=f"type{i % 7}",
                        observations=[
                            f"note {i} about topic{i % 97} {WORDS[i % len(WORDS)]}",
                            f"word{i % 1013} shared text",
                        ],
                    )
                    for i in range(start, min(start + 2000, entities))
                ],
                [],
            )
    finally:
        store.close()


def stress_http(clients: int, calls: int, lock_s: float, folder: Path) -> int:
    """One ``memfts serve --http``; half the clients agents, half readers; after a second,
    another process takes the write lock for ``lock_s`` seconds."""
    import secrets
    import signal
    import socket
    import subprocess

    from workers import ForeignLock, HttpSession, memfts_command

    db = folder / "team.db"
    _fill(db, FILLER)
    token = secrets.token_urlsafe(24)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [*memfts_command(), "serve", "--http", "--db", str(db), "--port", str(port)],
        env={**os.environ, "MEMFTS_TOKEN": token},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if time.monotonic() > deadline or server.poll() is not None:
                    print("the server did not start")
                    return 1
                time.sleep(0.05)
        window: list[float] = []

        def hold_the_lock() -> None:
            time.sleep(1.0)
            with ForeignLock(db):
                window.append(time.perf_counter())
                time.sleep(lock_s)
                window.append(time.perf_counter())

        readers = clients // 2
        timings, acknowledged, failures, elapsed, biggest = _run_sessions(
            db, lambda: HttpSession(port, token), clients, readers, calls, hold_the_lock
        )
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)
    print(
        f"memfts serve --http, {clients} clients ({clients - readers} agents, {readers} readers)"
        f" x {calls} calls, {FILLER:,} entities; another process held the write lock for"
        f" {lock_s:g} s"
    )
    status = _report(db, timings, acknowledged, failures, elapsed, biggest)
    locked_from, locked_to = window
    print("  calls made while the other process held the write lock:")
    _table(
        [
            (
                tool,
                [e - s for t, s, e in timings if t == tool and locked_from <= s and e <= locked_to],
            )
            for tool in ("search_nodes", "open_nodes")
        ]
        + [("writes that waited", [e - s for t, s, e in timings if s < locked_to < e])]
    )
    return status


def durability(folder: Path, commits: int = 2000) -> None:
    """Median and p99 cost of one small write transaction with each synchronous setting."""
    print(f"one-entity write transactions, {commits} each, in-process (no MCP):")
    for mode in ("NORMAL", "FULL"):
        store = Store(folder / f"sync-{mode}.db")
        store._db.conn.pragma("synchronous", mode)
        times = []
        for i in range(commits):
            started = time.perf_counter()
            store.create_entities([Entity(name=f"e{i}", entityType="t", observations=[f"o {i}"])])
            times.append(time.perf_counter() - started)
        store.close()
        print(
            f"  synchronous={mode:6} p50 {statistics.median(times) * 1000:.3f} ms, "
            f"p99 {_ms(times, 0.99)} ms"
        )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--processes", type=int, default=8)
    parser.add_argument("--calls", type=int, default=1000)
    parser.add_argument("--durability", action="store_true")
    parser.add_argument("--http", action="store_true", help="one HTTP server, many clients")
    parser.add_argument("--clients", type=int, default=10, help="HTTP clients (with --http)")
    parser.add_argument("--lock-s", type=float, default=3.0, help="foreign lock (with --http)")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memfts-stress-") as tmp:
        if options.http:
            status = stress_http(options.clients, options.calls, options.lock_s, Path(tmp))
        else:
            status = stress(options.processes, options.calls, Path(tmp))
        if options.durability:
            durability(Path(tmp))
    return status


if __name__ == "__main__":
    sys.exit(main())
