"""memfts against the official server's linear JSONL search, side by side, per graph size.

    python bench/run.py                          # 1k, 10k, 100k entities (~10 min)
    python bench/run.py --sizes 200000           # 1M observations (once; ~5 min more)
    python bench/report.py                       # table + chart from the saved results

For each size it builds (once, cached in bench/data/) the same synthetic graph as a memfts
database and as the official server's JSONL file, then measures:

- bulk load of memfts with ``Store.import_batch`` (1,000 entities per transaction, FTS
  triggers active); file sizes on disk;
- search latency per query class at store level: ``Store.search_nodes`` (limit 20) against the
  Python re-implementation of the official ``searchNodes`` (``jsonl_baseline.py``);
- the same through MCP over stdio: memfts with ``mcp.Client(..., mode="legacy")``; the real
  official Node server (``@modelcontextprotocol/server-memory``, npm-installed in bench/data/)
  with a raw-pipe client, because the Python client is quadratic on its multi-MB results;
- server start-up (spawn -> initialized), RSS after start and peak RSS after a search soak;
- single-call write latency (add one observation; create one entity) in each system.

Raw figures go to ``bench/data/results.json`` (merged by size, so sizes can be run apart).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import anyio

from corpus import DATA_DIR, SEED, QuerySet, ensure_jsonl, read_jsonl
from jsonl_baseline import JsonlMemory
from measure import Summary, db_path, ensure_db, percentile, proc_status, time_calls
from memfts.models import ObservationAddition, ObservationDeletion
from memfts.store import Store
from protocol import (
    RawPipeClient,
    memfts_command,
    node_available,
    node_command,
    server_pid,
)
from revision import use_revision

RESULTS = DATA_DIR / "results.json"
CLASSES = ("rare", "medium", "common", "3-word")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def summary(seconds: Sequence[float]) -> dict[str, float]:
    s = Summary.of(seconds)
    return {"n": s.n, "p50_ms": s.p50_ms, "p95_ms": s.p95_ms, "max_ms": s.max_ms}


def capped(classes: dict[str, list[str]], per_class: int) -> dict[str, list[str]]:
    return {name: queries[:per_class] for name, queries in classes.items()}


def per_query(queries: Sequence[str], times: Sequence[float], into: dict[str, float]) -> None:
    """Median ms of each query, from times taken pass by pass over ``queries``."""
    for i, q in enumerate(queries):
        into[q] = statistics.median(times[i :: len(queries)]) * 1000


def time_classes(
    call: Callable[[str], object],
    classes: dict[str, list[str]],
    rounds: int,
    by_query: dict[str, float],
) -> tuple[dict[str, dict[str, float]], list[float]]:
    """Per-class summaries and every individual time (for the median over the mix)."""
    out: dict[str, dict[str, float]] = {}
    every: list[float] = []
    for name, queries in classes.items():
        times = time_calls(call, queries, rounds)
        out[name] = summary(times)
        per_query(queries, times, by_query)
        every += times
        log(f"    {name:7} {Summary.of(times)}")
    return out, every


def jsonl_queries_per_class(entities: int) -> int:
    """The baseline takes ~1-2 s per search at 100k entities: bound the run."""
    return 20 if entities <= 10_000 else 5 if entities <= 100_000 else 3


# ---- memfts through MCP (mcp.Client) ----------------------------------------------------


async def memfts_protocol(
    db: Path,
    classes: dict[str, list[str]],
    rounds: int,
    soak: int,
    soak_budget_s: float,
    write_name: str | None,
) -> dict[str, Any]:
    from mcp import Client, StdioServerParameters

    command, env = memfts_command(db)
    params = StdioServerParameters(command=command[0], args=command[1:], env=env)
    out: dict[str, Any] = {}
    start = time.perf_counter()
    async with Client(params, mode="legacy") as client:
        out["startup_s"] = time.perf_counter() - start
        pid = server_pid("memfts")
        out["rss_start_kib"] = proc_status(pid)["VmRSS"]
        if not classes:
            return out

        async def search(q: str) -> float:
            t = time.perf_counter()
            result = await client.call_tool("search_nodes", {"query": q})
            elapsed = time.perf_counter() - t
            assert not result.is_error, result
            return elapsed

        every: list[float] = []
        out["search"] = {}
        for name, queries in classes.items():
            for q in queries:  # warm-up pass
                await search(q)
            times = [await search(q) for _ in range(rounds) for q in queries]
            out["search"][name] = summary(times)
            per_query(queries, times, out.setdefault("per_query_ms", {}))
            every += times
            log(f"    {name:7} {Summary.of(times)}")
        out["search_mix_p50_ms"] = percentile(every, 50) * 1000

        # soak: many searches over the whole mix, then RSS; bounded in time
        mix = itertools.cycle([q for queries in classes.values() for q in queries])
        done = 0
        deadline = time.perf_counter() + soak_budget_s
        while done < soak and time.perf_counter() < deadline:
            await search(next(mix))
            done += 1
        status = proc_status(pid)
        out["soak_searches"] = done
        out["rss_after_soak_kib"] = status["VmRSS"]
        out["peak_rss_kib"] = status["VmHWM"]
        log(
            f"    RSS {out['rss_start_kib'] / 1024:.0f} MiB at start, "
            f"{status['VmRSS'] / 1024:.0f} MiB after {done} searches "
            f"(peak {status['VmHWM'] / 1024:.0f} MiB)"
        )

        if write_name is not None:
            marker = f"bench write {time.time_ns()}"
            add, create = [], []
            for i in range(30):
                t = time.perf_counter()
                r = await client.call_tool(
                    "add_observations",
                    {"observations": [{"entityName": write_name, "contents": [f"{marker} {i}"]}]},
                )
                add.append(time.perf_counter() - t)
                assert not r.is_error, r
            for i in range(30):
                t = time.perf_counter()
                r = await client.call_tool(
                    "create_entities",
                    {
                        "entities": [
                            {
                                "name": f"{marker} entity {i}",
                                "entityType": "bench",
                                "observations": [f"{marker} o{j}" for j in range(5)],
                            }
                        ]
                    },
                )
                create.append(time.perf_counter() - t)
                assert not r.is_error, r
            # put the cached database back as it was
            await client.call_tool(
                "delete_observations",
                {
                    "deletions": [
                        {
                            "entityName": write_name,
                            "observations": [f"{marker} {i}" for i in range(30)],
                        }
                    ]
                },
            )
            await client.call_tool(
                "delete_entities", {"entityNames": [f"{marker} entity {i}" for i in range(30)]}
            )
            out["add_observation"] = summary(add)
            out["create_entity"] = summary(create)
            log(f"    add 1 observation {Summary.of(add)}")
            log(f"    create 1 entity   {Summary.of(create)}")
    return out


# ---- a server through the raw pipe ------------------------------------------------------


def raw_protocol(
    command: tuple[list[str], dict[str, str]],
    classes: dict[str, list[str]],
    rounds: int,
    write_name: str | None,
    writes: int,
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with RawPipeClient(*command) as client:
        out["startup_s"] = client.startup_s
        out["rss_start_kib"] = proc_status(client.pid)["VmRSS"]
        if not classes:
            return out
        sizes: list[int] = []

        def search(q: str) -> None:
            _, size = client.call_tool("search_nodes", {"query": q})
            sizes.append(size)

        every: list[float] = []
        out["search"] = {}
        for name, queries in classes.items():
            sizes.clear()
            times = time_calls(search, queries, rounds)
            out["search"][name] = summary(times) | {"median_bytes": statistics.median(sizes)}
            per_query(queries, times, out.setdefault("per_query_ms", {}))
            every += times
            log(f"    {name:7} {Summary.of(times)}  response {statistics.median(sizes):,.0f} B")
        out["search_mix_p50_ms"] = percentile(every, 50) * 1000
        out["peak_rss_kib"] = proc_status(client.pid)["VmHWM"]
        if write_name is not None:
            add = []
            for i in range(writes):
                t = time.perf_counter()
                client.call_tool(
                    "add_observations",
                    {"observations": [{"entityName": write_name, "contents": [f"bench {i}"]}]},
                )
                add.append(time.perf_counter() - t)
            out["add_observation"] = summary(add)
            log(f"    add 1 observation {Summary.of(add)}")
    return out


# ---- one size ---------------------------------------------------------------------------


def run_size(entities: int, args: argparse.Namespace) -> dict[str, Any]:
    log(f"== {entities:,} entities")
    jsonl = ensure_jsonl(entities, args.seed)
    if args.rebuild:
        db_path(entities, args.seed).unlink(missing_ok=True)
    db, load = ensure_db(entities, args.seed)
    records = read_jsonl(jsonl)
    graph_entities = records[0]
    out: dict[str, Any] = {
        "entities": len(graph_entities),
        "observations": sum(len(e["observations"]) for e in graph_entities),  # type: ignore[arg-type]
        "relations": len(records[1]),
        "jsonl_bytes": jsonl.stat().st_size,
        "db_bytes": db.stat().st_size,
        "load": load.__dict__,
    }
    log(f"  memfts load: {load.seconds:.1f} s, {load.observations_per_s:,.0f} observations/s")
    classes = QuerySet.draw(graph_entities, args.per_class, args.seed).classes
    write_name = str(graph_entities[len(graph_entities) // 2]["name"])
    del records, graph_entities
    out["queries"] = classes
    few = capped(classes, jsonl_queries_per_class(entities))

    log("  store level: memfts Store.search_nodes (limit 20)")
    store = Store(db)
    totals: dict[str, list[int]] = {}
    try:

        def memfts_search(q: str) -> object:
            result = store.search_nodes(q, 20)
            totals.setdefault(q, []).append(result.total)
            return result

        out["memfts_store"], every = time_classes(
            memfts_search, classes, args.rounds, out.setdefault("memfts_store_per_query_ms", {})
        )
        out["memfts_store_mix_p50_ms"] = percentile(every, 50) * 1000
        out["memfts_hits"] = {
            name: statistics.median(totals[q][0] for q in queries)
            for name, queries in classes.items()
        }
        add = []
        for i in range(30):
            addition = ObservationAddition(entityName=write_name, contents=[f"store write {i}"])
            t = time.perf_counter()
            store.add_observations([addition])
            add.append(time.perf_counter() - t)
        store.delete_observations(
            [
                ObservationDeletion(
                    entityName=write_name, observations=[f"store write {i}" for i in range(30)]
                )
            ]
        )
        out["memfts_store_add_observation"] = summary(add)
        log(f"    add 1 observation {Summary.of(add)}")
    finally:
        store.close()

    log(f"  store level: JSONL linear search (Python re-implementation), {len(few['rare'])}/class")
    work = DATA_DIR / f"work-{entities}.jsonl"
    shutil.copyfile(jsonl, work)
    baseline = JsonlMemory(work)
    hits: dict[str, int] = {}

    def jsonl_search(q: str) -> object:
        result = baseline.search_nodes(q)
        hits[q] = len(result["entities"])
        return result

    out["jsonl_store"], every = time_classes(
        jsonl_search, few, 1, out.setdefault("jsonl_store_per_query_ms", {})
    )
    out["jsonl_store_mix_p50_ms"] = percentile(every, 50) * 1000
    out["jsonl_hits"] = {
        name: statistics.median(hits[q] for q in queries) for name, queries in few.items()
    }
    writes = 10 if entities <= 10_000 else 3
    add = []
    for i in range(writes):
        t = time.perf_counter()
        baseline.add_observations([{"entityName": write_name, "contents": [f"bench {i}"]}])
        add.append(time.perf_counter() - t)
    out["jsonl_store_add_observation"] = summary(add)
    log(f"    add 1 observation {Summary.of(add)}")

    log("  MCP stdio: memfts via mcp.Client (legacy)")
    rounds = args.rounds if entities <= 10_000 else 1
    out["memfts_mcp"] = anyio.run(
        memfts_protocol, db, classes, rounds, args.soak, args.soak_budget, write_name
    )
    log("  MCP stdio: memfts via raw pipe (the client the Node server is timed with)")
    out["memfts_raw"] = raw_protocol(memfts_command(db), classes, 1, None, 0)
    if node_available() and entities <= args.node_max:
        log(f"  MCP stdio: official Node server via raw pipe, {len(few['rare'])}/class")
        shutil.copyfile(jsonl, work)
        out["node_mcp"] = raw_protocol(node_command(work), few, 1, write_name, writes)
    work.unlink(missing_ok=True)
    return out


def empty_servers(args: argparse.Namespace) -> dict[str, Any]:
    """Start-up time and RSS of each server on an empty store, median of 5 spawns."""
    log("== empty stores: start-up (spawn -> initialized) and RSS, 5 spawns each")
    empty_db = DATA_DIR / "empty.db"
    empty_jsonl = DATA_DIR / "empty.jsonl"
    out: dict[str, Any] = {}
    runs = [anyio.run(memfts_protocol, empty_db, {}, 0, 0, 0.0, None) for _ in range(5)]
    out["memfts_mcp"] = {
        "startup_s": statistics.median(r["startup_s"] for r in runs),
        "startup_all_s": [r["startup_s"] for r in runs],
        "rss_start_kib": statistics.median(r["rss_start_kib"] for r in runs),
    }
    runs = [raw_protocol(memfts_command(empty_db), {}, 0, None, 0) for _ in range(5)]
    out["memfts_raw"] = {
        "startup_s": statistics.median(r["startup_s"] for r in runs),
        "startup_all_s": [r["startup_s"] for r in runs],
    }
    if node_available():
        empty_jsonl.unlink(missing_ok=True)
        runs = [raw_protocol(node_command(empty_jsonl), {}, 0, None, 0) for _ in range(5)]
        out["node_raw"] = {
            "startup_s": statistics.median(r["startup_s"] for r in runs),
            "startup_all_s": [r["startup_s"] for r in runs],
            "rss_start_kib": statistics.median(r["rss_start_kib"] for r in runs),
        }
    for name, r in out.items():
        log(
            f"    {name:10} start-up {r['startup_s'] * 1000:.0f} ms  "
            f"(all: {', '.join(f'{s * 1000:.0f}' for s in r['startup_all_s'])})"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sizes",
        default="1000,10000,100000",
        help="entity counts, comma-separated (200000 = 1M observations)",
    )
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--rev", help="measure this commit's src/ (default: the working tree)")
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3, help="timed passes (memfts)")
    parser.add_argument("--soak", type=int, default=1000, help="searches before reading RSS")
    parser.add_argument("--soak-budget", type=float, default=60.0, help="seconds at most")
    parser.add_argument(
        "--node-max",
        type=int,
        default=1_000_000,
        help="largest size the official Node server is run at",
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild cached databases")
    parser.add_argument("--no-empty", action="store_true", help="skip the start-up runs")
    args = parser.parse_args()
    code = use_revision(args.rev)
    print(f"memfts code measured: {code}", flush=True)

    results: dict[str, Any] = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results.setdefault("sizes", {})
    if not args.no_empty:
        results["empty"] = empty_servers(args)
        RESULTS.write_text(json.dumps(results, indent=1))
    for size in (int(s) for s in args.sizes.split(",")):
        results["sizes"][str(size)] = run_size(size, args) | {
            "measured_at": time.ctime(),
            "code": code,
            "load_average": os.getloadavg()[0],
        }
        RESULTS.write_text(json.dumps(results, indent=1))
    log(f"results in {RESULTS}; render with python bench/report.py")


if __name__ == "__main__":
    main()
