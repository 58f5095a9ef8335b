"""What the semantic extra gives and costs: relevance by kind, latency, memory, writes, file size.

    python bench/semantic.py --relevance           # lexical / semantic alone / hybrid, by kind
    python bench/semantic.py --entities 100000     # the cost at 100k entities through MCP

Both need the extra (``pip install -e '.[semantic]'``).

**Relevance**: ``bench/relevance.py``'s hand-written sets (its cached database, given its
vectors first), for three rankings of this checkout: the full-text ranking alone (``lexical``,
what memfts does without the extra), the nearest entities by meaning alone (``semantic``) and
their fusion (``hybrid``, what memfts does with the extra), beside the naive baseline. DEV:
hit@1, hit@10, MRR@10 and nDCG@10 by kind; HELD-OUT: only the groups (agent memory, needs,
all), so that nobody tunes on its kinds.

**Cost**: ``bench/run.py``'s synthetic graph (``corpus.py``), copied to a file of its own and
given its vectors with ``Store.embed_missing`` (timed: what ``memfts embed`` costs on an
existing file). Two real ``memfts`` servers over stdio on that file, one with
``MEMFTS_SEMANTIC=off`` and one with it on, answer the same ``search_nodes`` calls (the query
classes of ``run.py``, limit 20) in alternation, so both see the same machine load; then each
adds one observation to a random entity, in alternation (undone afterwards). Printed: p50/p95
per class and what the semantic arm adds, each server's RSS after the searches, the write
p50/p95, and the vectors' share of the file.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import apsw

from corpus import SEED, QuerySet, ensure_jsonl, read_jsonl
from measure import ensure_db, percentile, proc_status
from memfts.models import Entity
from memfts.store import Limits, Store
from protocol import RawPipeClient, memfts_command
from revision import use_revision

Search = Callable[[str], list[str]]

UNHURRIED = Limits(search_timeout_s=60.0)
"""Relevance is measured without the search time limit: on a busy machine a search cut short
returns the latest matches, not the ranked ones."""


def _names(store: Store, ids: Sequence[int]) -> list[str]:
    with store._read() as db:
        names = dict(
            db.execute(
                "SELECT id, name FROM entities WHERE id IN (SELECT value FROM json_each(?))",
                (str(list(ids)),),
            ).fetchall()
        )
    return [names[i] for i in ids]


def lexical(db_path: Path, entities: Sequence[Entity]) -> Search:
    """``--system`` factory for bench/relevance.py: the full-text ranking alone."""
    store = Store(db_path, UNHURRIED, semantic=False)
    return lambda query: [e.name for e in store.search_nodes(query, limit=10).entities]


def hybrid(db_path: Path, entities: Sequence[Entity]) -> Search:
    """``--system`` factory for bench/relevance.py: full text and meaning fused."""
    store = Store(db_path, UNHURRIED, semantic=True)
    store.embed_missing()
    return lambda query: [e.name for e in store.search_nodes(query, limit=10).entities]


def meaning(db_path: Path, entities: Sequence[Entity]) -> Search:
    """``--system`` factory for bench/relevance.py: the nearest entities by meaning alone."""
    store = Store(db_path, semantic=True)
    store.embed_missing()
    semantic = store._semantic  # the arm itself, without the fusion
    assert semantic is not None

    def search(query: str) -> list[str]:
        with store._read() as db:
            ids = [n.entity_id for n in semantic.nearest(db, query, 10)]
        return _names(store, ids)

    return search


def relevance() -> None:
    import relevance as bench_relevance
    import relevance_sets as sets

    db = bench_relevance.database()
    systems = {"lexical": lexical(db, []), "semantic": meaning(db, []), "hybrid": hybrid(db, [])}
    judged: dict[str, dict[str, float]] = {}
    scores = bench_relevance.hand_written_scores(systems, judged=judged)
    order = ["lexical", "semantic", "hybrid", "naive"]
    dev = {name: scores[name]["dev"] for name in order}
    print("### DEV\n")
    print(sets.markdown_table(dev))
    print("\njudged@10:", ", ".join(f"{n} {judged[n]['dev']:.3f}" for n in order))
    print("\nDEV, hit@10 / MRR@10:\n")
    print(sets.compact_table(dev))
    heldout = {
        name: {g: m for g, m in scores[name]["heldout"].items() if g in sets.GROUPS}
        for name in order
    }
    print("\n### HELD-OUT (groups only: do not tune on it)\n")
    print(sets.markdown_table(heldout))
    print("\njudged@10:", ", ".join(f"{n} {judged[n]['heldout']:.3f}" for n in order))


def ms(values: Sequence[float], p: float) -> float:
    return percentile(values, p) * 1e3


def cost(entities: int, rounds: int) -> None:
    switch = os.environ.get("MEMFTS_SEMANTIC")
    os.environ["MEMFTS_SEMANTIC"] = "off"  # the graph the other benchmarks share: no vectors
    try:
        cached, _ = ensure_db(entities, SEED)
    finally:
        if switch is None:
            del os.environ["MEMFTS_SEMANTIC"]
        else:
            os.environ["MEMFTS_SEMANTIC"] = switch
    path = cached.with_name(cached.stem + "-semantic.db")  # the cached graph stays vector-free
    if not path.exists():
        shutil.copyfile(cached, path)
    store = Store(path, semantic=True)
    try:
        missing = store.vectors_missing()
        start = time.perf_counter()
        store.embed_missing()
        print(f"memfts embed: {missing:,} entities in {time.perf_counter() - start:.1f} s")
    finally:
        store.close()
    records, _ = read_jsonl(ensure_jsonl(entities, SEED))
    queries = QuerySet.draw(records, 20, SEED).classes
    names = [str(e["name"]) for e in records]
    servers: dict[str, RawPipeClient] = {}
    for mode in ("off", "on"):
        command, env = memfts_command(path)
        env["MEMFTS_SEMANTIC"] = mode
        servers[mode] = RawPipeClient(command, env)
    try:
        first: dict[str, float] = {}
        for mode, client in servers.items():  # the first search reads every vector into memory
            start = time.perf_counter()
            client.call_tool("search_nodes", {"query": "warm up", "limit": 20})
            first[mode] = time.perf_counter() - start
        off_ms, on_ms = first["off"] * 1e3, first["on"] * 1e3
        print(f"first search of a server: off {off_ms:.0f} ms, on {on_ms:.0f} ms")
        times: dict[str, dict[str, list[float]]] = {m: {c: [] for c in queries} for m in servers}
        for _ in range(rounds):
            for cls, qs in queries.items():
                for q in qs:
                    for mode, client in servers.items():
                        start = time.perf_counter()
                        client.call_tool("search_nodes", {"query": q, "limit": 20})
                        times[mode][cls].append(time.perf_counter() - start)
        print(f"\nsearch_nodes through MCP (stdio), {entities:,} entities, limit 20, ms:")
        heads = ("off p50", "on p50", "added", "off p95", "on p95")
        print(f"{'class':12} " + " ".join(f"{h:>8}" for h in heads))
        rows = {cls: (times["off"][cls], times["on"][cls]) for cls in queries}
        rows["all"] = (
            [t for c in queries for t in times["off"][c]],
            [t for c in queries for t in times["on"][c]],
        )
        for cls, (off, on) in rows.items():
            print(
                f"{cls:12} {ms(off, 50):8.2f} {ms(on, 50):8.2f} {ms(on, 50) - ms(off, 50):8.2f} "
                f"{ms(off, 95):8.2f} {ms(on, 95):8.2f}"
            )
        rss = {m: proc_status(c.pid)["VmRSS"] / 1024 for m, c in servers.items()}
        print(
            f"\nRSS after the searches: off {rss['off']:.1f} MB, on {rss['on']:.1f} MB, "
            f"grown {rss['on'] - rss['off']:.1f} MB"
        )
        rng = random.Random(SEED)
        writes: dict[str, list[float]] = {m: [] for m in servers}
        undo: list[tuple[str, str, str]] = []
        for i in range(rounds * 40):
            for mode, client in servers.items():
                name = rng.choice(names)
                text = f"bench write {mode} {i} about the deployment pipeline"
                addition = {"observations": [{"entityName": name, "contents": [text]}]}
                start = time.perf_counter()
                client.call_tool("add_observations", addition)
                writes[mode].append(time.perf_counter() - start)
                undo.append((mode, name, text))
        for mode, name, text in undo:
            deletion = {"deletions": [{"entityName": name, "observations": [text]}]}
            servers[mode].call_tool("delete_observations", deletion)
        print("\nadd_observations of one observation through MCP, ms:")
        for mode in servers:
            print(f"  {mode:3} p50 {ms(writes[mode], 50):.2f}  p95 {ms(writes[mode], 95):.2f}")
    finally:
        for client in servers.values():
            client.close()
    store = Store(path, semantic=True)
    try:  # the off server's writes dropped the vectors of what they changed (sql/006)
        print(f"memfts embed after them: {store.embed_missing().embedded:,} vectors restored")
    finally:
        store.close()
    conn = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        count, total = conn.execute("SELECT count(*), sum(length(vector)) FROM entity_vectors").get
        pages = conn.execute(
            "SELECT sum(pgsize) FROM dbstat WHERE name IN ('entity_vectors', "
            "'sqlite_autoindex_entity_vectors_1')"
        ).get
    finally:
        conn.close()
    print(
        f"\nfile {path.stat().st_size / 1e6:.1f} MB (without vectors: "
        f"{cached.stat().st_size / 1e6:.1f} MB); vectors: {count:,} x "
        f"{total // max(count, 1)} bytes, table and index {pages / 1e6:.1f} MB"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--relevance", action="store_true", help="the relevance tables instead")
    parser.add_argument("--rev", help="measure this commit's src/ (default: the working tree)")
    args = parser.parse_args()
    print(f"code: {use_revision(args.rev)}")
    from memfts.semantic_setup import installed

    if not installed():
        sys.exit("bench/semantic.py needs the semantic extra: pip install -e '.[semantic]'")
    if args.relevance:
        relevance()
    else:
        cost(args.entities, args.rounds)


if __name__ == "__main__":
    main()
