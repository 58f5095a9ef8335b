"""Store-level search latency of memfts, per query class, on a cached synthetic graph.

    python bench/quick.py --entities 100000            # builds bench/data/ once, then ~1 min
    python bench/quick.py --entities 100000 --only common --profile

For iterating on ``search.py``/``store.py``: it calls ``Store.search_nodes`` in-process (no
MCP), so the figures are the search itself. The database is built once per size and seed
(``Store.import_batch``, 1,000 entities per transaction) and reused; ``--rebuild`` redoes it.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import statistics
import sys
import time

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


if __name__ == "__main__":
    main()
