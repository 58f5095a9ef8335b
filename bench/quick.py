"""Store-level search latency of memfts, per query class, on a cached synthetic graph.

    python bench/quick.py --entities 100000            # builds bench/data/ once, then ~1 min
    python bench/quick.py --entities 100000 --only common --profile
    python bench/quick.py --entities 100000 --statements   # SQL statements per search, by kind

For iterating on the search (``search.py``, ``vocabulary.py``, ``ranking.py``): it calls
``Store.search_nodes`` in-process (no MCP), so the figures are the search itself. The database
is built once per size and seed (``Store.import_batch``, 1,000 entities per transaction) and
reused; ``--rebuild`` redoes it.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import pstats
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

import apsw

from corpus import SEED, QuerySet, ensure_jsonl, read_jsonl
from measure import Summary, db_path, ensure_db, time_calls
from memfts.store import Store
from revision import use_revision


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--rev", help="measure this commit's src/ (default: the working tree)")
    parser.add_argument("--limit", type=int, default=20, help="search_nodes limit")
    parser.add_argument("--per-class", type=int, default=20, help="distinct queries per class")
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the queries")
    parser.add_argument("--only", help="one class: rare, medium, common or 3-word")
    parser.add_argument("--query", action="append", help="time these queries instead")
    parser.add_argument("--profile", action="store_true", help="cProfile the timed calls")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    parser.add_argument(
        "--statements", action="store_true", help="count SQL statements per search, by kind"
    )
    args = parser.parse_args()
    code = use_revision(args.rev)
    print(f"memfts code measured: {code}", flush=True)

    if args.rebuild:
        db_path(args.entities, args.seed).unlink(missing_ok=True)
    path, report = ensure_db(args.entities, args.seed)
    print(
        f"{path.name}: {report.entities:,} entities, {report.observations:,} "
        f"observations, {report.relations:,} relations in {report.seconds:.1f} s "
        f"({report.observations_per_s:,.0f} observations/s)"
    )
    entities, _ = read_jsonl(ensure_jsonl(args.entities, args.seed))
    classes = QuerySet.draw(entities, args.per_class, args.seed).classes
    if args.query:
        classes = {"given": args.query}
    elif args.only:
        classes = {args.only: classes[args.only]}
    del entities
    if args.statements:
        count_statements(path, classes, args.limit)
        return

    store = Store(path)
    profiler = cProfile.Profile() if args.profile else None
    print(f"search_nodes limit={args.limit}, rounds={args.rounds}")
    try:
        for name, queries in classes.items():
            hits: list[int] = []

            def search(q: str, hits: list[int] = hits) -> object:
                result = store.search_nodes(q, args.limit)
                hits.append(result.total)
                return result

            if profiler:
                profiler.enable()
            started = time.perf_counter()
            times = time_calls(search, queries, args.rounds)
            elapsed = time.perf_counter() - started
            if profiler:
                profiler.disable()
            print(
                f"  {name:7} {len(queries):3} queries  {Summary.of(times)}  "
                f"median total {statistics.median(hits):>9,.0f}  ({elapsed:.1f} s)"
            )
            sys.stdout.flush()
    finally:
        store.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)


STATEMENT_ROLES: list[tuple[str, Callable[[str], bool]]] = [
    (
        "transaction",
        lambda sql: sql.startswith(("BEGIN", "COMMIT", "ROLLBACK", "SELECT 1 FROM sqlite_schema")),
    ),
    ("words", lambda sql: "search_terms" in sql or "_vocab" in sql),
    ("snippets", lambda sql: "snippet(" in sql),
    ("load", lambda sql: "json_each" in sql),
    ("rank", lambda sql: "_fts" in sql),
]
"""What a statement is for, by the first rule its SQL fits (else "other")."""


def statement_kinds(classes: dict[str, list[str]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The kinds of search whose SQL statements are counted: (query, search_nodes options)."""
    medium, phrases = classes["medium"], classes["3-word"]
    rare, common = classes["rare"], classes["common"]
    return {
        "1 word": [(q, {}) for q in medium],
        "2 words": [(" ".join(p.split()[:2]), {}) for p in phrases],
        "3 words": [(p, {}) for p in phrases],
        "common word": [(q, {}) for q in common],
        "typo": [(q[:2] + q[3] + q[2] + q[4:], {}) for q in rare if len(q) > 4],
        "1 word + snippets": [(q, {"snippets": True}) for q in medium],
        "question, snippets, depth 1": [
            (f"how do we use {p} here", {"snippets": True, "depth": 1}) for p in phrases
        ],
    }


def count_statements(path: Any, classes: dict[str, list[str]], limit: int) -> None:
    """Mean SQL statements per ``search_nodes`` call, by kind of search and by role.

    Counted with APSW's exec trace on every connection the store opens (statements run by
    triggers are not counted: there are none in a search).
    """
    seen: list[str] = []

    def trace(cursor: apsw.Cursor, sql: str, bindings: Any) -> bool:
        seen.append(sql.lstrip())
        return True

    def hook(conn: apsw.Connection) -> None:
        conn.exec_trace = trace

    apsw.connection_hooks.append(hook)
    store = Store(path)
    apsw.connection_hooks.remove(hook)
    roles = [name for name, _ in STATEMENT_ROLES] + ["other"]
    print(f"SQL statements per search_nodes call (mean), limit={limit}")
    print(f"| kind | queries | statements | {' | '.join(roles)} |")
    print("|---|---:|---:|" + "---:|" * len(roles))
    try:
        for kind, calls in statement_kinds(classes).items():
            by_role: collections.Counter[str] = collections.Counter()
            for query, options in calls:
                seen.clear()
                store.search_nodes(query, limit, **options)
                for sql in seen:
                    role = next((n for n, fits in STATEMENT_ROLES if fits(sql)), "other")
                    by_role[role] += 1
            n = len(calls)
            cells = " | ".join(f"{by_role[r] / n:.1f}" for r in roles)
            print(f"| {kind} | {n} | {sum(by_role.values()) / n:.1f} | {cells} |")
    finally:
        store.close()


if __name__ == "__main__":
    main()
