"""Stress: N real ``memfts`` stdio servers on one file, mixed writes and searches, nothing lost.

Each session is its own ``python -m memfts`` process, driven over stdio by a hand-written
JSON-RPC client (tests/workers.py) so the client costs little CPU next to the servers. Every
call waits for its answer before the next one, as an agent does. Afterwards the file is opened
fresh and every acknowledged write is looked for.

    python bench/stress.py                      # 8 processes x 1,000 calls
    python bench/stress.py --processes 4 --calls 200
    python bench/stress.py --durability         # also: commit cost, synchronous NORMAL vs FULL

Prints calls/s, p50/p99 call latency per kind, lost writes, failed calls and the largest WAL
seen. Exits 1 if anything was lost or failed.
"""

from __future__ import annotations

import argparse
import contextlib
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


def _session(
    db: Path,
    worker: int,
    calls: int,
    latencies: dict[str, list[float]],
    acknowledged: list[tuple[str, Any]],
    failures: list[str],
    ready: threading.Barrier,
) -> None:
    rng = random.Random(worker)
    with RawServer(db) as server:
        server.call_ok("create_entities", {"entities": [{"name": "hub", "entityType": "hub"}]})
        ready.wait()
        for k in range(calls):
            roll = rng.random()
            tag = f"w{worker}k{k}"
            if roll < 0.4:
                tool, arguments = (
                    "create_entities",
                    {
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
                    },
                )
            elif roll < 0.6:
                tool, arguments = (
                    "add_observations",
                    {"observations": [{"entityName": "hub", "contents": [f"{tag} on the hub"]}]},
                )
            elif roll < 0.7:
                tool, arguments = (
                    "create_relations",
                    {"relations": [{"from": tag, "to": "hub", "relationType": "touches"}]},
                )
            else:
                tool, arguments = (
                    "search_nodes",
                    {
                        "query": f"{rng.choice(WORDS)} {rng.choice(WORDS)}",
                        "limit": 10,
                    },
                )
            started = time.perf_counter()
            try:
                result = server.call(tool, arguments, timeout=120)
            except Exception as exc:  # a dead or hung server is a failure, not a crash of the bench
                failures.append(f"worker {worker} {tool}: {exc!r}")
                return
            latencies[tool].append(time.perf_counter() - started)
            if result.get("isError") is not False:
                failures.append(f"worker {worker} {tool}: {error_text(result)[:300]}")
            elif tool != "search_nodes":
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


def stress(processes: int, calls: int, folder: Path) -> int:
    db = folder / "stress.db"
    latencies: dict[str, list[float]] = {
        t: [] for t in ("create_entities", "add_observations", "create_relations", "search_nodes")
    }
    acknowledged: list[tuple[str, Any]] = []
    failures: list[str] = []
    ready = threading.Barrier(processes + 1)
    threads = [
        threading.Thread(
            target=_session,
            args=(db, w, calls, latencies, acknowledged, failures, ready),
        )
        for w in range(processes)
    ]
    for t in threads:
        t.start()
    ready.wait()  # every server is up: time the calls only, not 8 interpreter start-ups
    stop, biggest = threading.Event(), [0]
    watcher = threading.Thread(target=_wal_watch, args=(db, stop, biggest))
    watcher.start()
    started = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    stop.set()
    watcher.join()
    lost = _lost(db, acknowledged)
    everything = [x for values in latencies.values() for x in values]
    print(f"{processes} processes x {calls} calls on one file ({db})")
    print(f"  {len(everything)} calls in {elapsed:.1f} s: {len(everything) / elapsed:.0f} calls/s")
    print(f"  {'call':18} {'n':>6} {'p50 ms':>8} {'p99 ms':>8} {'max ms':>8}")
    for tool, values in [*latencies.items(), ("all", everything)]:
        top = f"{max(values) * 1000:.1f}" if values else "-"
        print(f"  {tool:18} {len(values):6} {_ms(values, 0.5):>8} {_ms(values, 0.99):>8} {top:>8}")
    print(
        f"  acknowledged writes: {len(acknowledged)}, lost: {len(lost)}, "
        f"failed calls: {len(failures)}"
    )
    print(
        f"  largest WAL seen: {biggest[0] / 1024 / 1024:.1f} MB; file: "
        f"{db.stat().st_size / 1024 / 1024:.1f} MB"
    )
    for line in failures[:10] + lost[:10]:
        print("   ", line)
    return 1 if lost or failures else 0


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
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="memfts-stress-") as tmp:
        status = stress(options.processes, options.calls, Path(tmp))
        if options.durability:
            durability(Path(tmp))
    return status


if __name__ == "__main__":
    sys.exit(main())
