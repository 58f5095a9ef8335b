"""Where bulk-import time goes: ``Store.import_batch`` with and without its index upkeep.

    python bench/load.py --entities 200000              # 1M observations, ~2-3 min
    python bench/load.py --entities 20000 --profile     # cProfile of the import

Loads the cached synthetic graph into fresh temporary databases (bench/data/load-*.db,
deleted afterwards) in several variants, so the cost of each part shows by difference:

- ``store``: ``Store.import_batch`` as it is (FTS triggers and search-term upkeep active);
- ``no-fts``: the same calls with the three FTS insert triggers dropped first, then a one-off
  ``'rebuild'`` of each FTS index, timed apart: what a "bulk import = load, then rebuild" path
  would cost;
- ``sql``: plain ``executemany`` of the same rows with the triggers active and no Python
  per-row work: the floor SQLite itself sets for this schema.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time
from pathlib import Path

from corpus import DATA_DIR, SEED, ensure_jsonl, read_jsonl
from measure import load_store
from memfts.store import Store
from revision import use_revision

FTS_INSERT_TRIGGERS = ("entities_ai", "observations_ai", "search_terms_ai")
FTS_TABLES = ("entities_fts", "observations_fts", "search_terms_trigram")


def fresh(name: str) -> Path:
    path = DATA_DIR / f"load-{name}.db"
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)
    return path


def drop(path: Path) -> None:
    for p in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
        p.unlink(missing_ok=True)


def variant_store(records, batch: int, profile: bool) -> None:  # type: ignore[no-untyped-def]
    path = fresh("store")
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    report = load_store(path, records, batch)
    if profiler:
        profiler.disable()
    print(
        f"  store    import_batch, triggers on      {report.seconds:7.1f} s  "
        f"{report.observations_per_s:9,.0f} obs/s   file {path.stat().st_size / 1e6:6.0f} MB"
    )
    drop(path)
    if profiler:
        pstats.Stats(profiler).sort_stats("tottime").print_stats(15)


def variant_no_fts(records, batch: int) -> None:  # type: ignore[no-untyped-def]
    path = fresh("nofts")
    store = Store(path)  # creates the schema
    with store._db.write() as db:
        for trigger in FTS_INSERT_TRIGGERS:
            db.execute(f"DROP TRIGGER {trigger}")
    store.close()
    report = load_store(path, records, batch)
    print(
        f"  no-fts   import_batch, no FTS triggers  {report.seconds:7.1f} s  "
        f"{report.observations_per_s:9,.0f} obs/s"
    )
    store = Store(path)
    total = 0.0
    for table in FTS_TABLES:
        start = time.perf_counter()
        with store._db.write() as db:
            db.execute(f"INSERT INTO {table}({table}) VALUES ('rebuild')")
        took = time.perf_counter() - start
        total += took
        print(f"           + rebuild {table:22} {took:7.1f} s")
    store.close()
    print(
        f"           = load then rebuild           {report.seconds + total:7.1f} s  "
        f"{report.observations / (report.seconds + total):9,.0f} obs/s   "
        f"file {path.stat().st_size / 1e6:6.0f} MB"
    )
    drop(path)


def variant_sql(records, batch: int) -> None:  # type: ignore[no-untyped-def]
    entities, _ = records
    path = fresh("sql")
    store = Store(path)
    db = store._db.conn
    start = time.perf_counter()
    next_id = 1
    for i in range(0, len(entities), batch):
        chunk = entities[i : i + batch]
        with store._db.write():
            db.executemany(
                "INSERT INTO entities(id, name, entity_type) VALUES (?, ?, ?)",
                ((next_id + k, e["name"], e["entityType"]) for k, e in enumerate(chunk)),
            )
            db.executemany(
                "INSERT INTO observations(id, entity_id, content) VALUES (?, ?, ?)",
                (
                    (((next_id + k) << 20) + j, next_id + k, o)
                    for k, e in enumerate(chunk)
                    for j, o in enumerate(e["observations"])
                ),
            )
        next_id += len(chunk)
    seconds = time.perf_counter() - start
    observations = sum(len(e["observations"]) for e in entities)
    store.close()
    print(
        f"  sql      executemany, triggers on       {seconds:7.1f} s  "
        f"{observations / seconds:9,.0f} obs/s   (no search_terms upkeep)"
    )
    drop(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--batch", type=int, default=1000, help="entities per transaction")
    parser.add_argument("--rev", help="measure this commit's src/ (default: the working tree)")
    parser.add_argument("--variants", default="store,no-fts,sql")
    parser.add_argument("--profile", action="store_true", help="cProfile the store variant")
    args = parser.parse_args()
    print(f"memfts code measured: {use_revision(args.rev)}")
    records = read_jsonl(ensure_jsonl(args.entities, args.seed))
    n_obs = sum(len(e["observations"]) for e in records[0])  # type: ignore[arg-type]
    print(f"{len(records[0]):,} entities, {n_obs:,} observations, batch {args.batch}")
    variants = args.variants.split(",")
    if "store" in variants:
        variant_store(records, args.batch, args.profile)
    if "no-fts" in variants:
        variant_no_fts(records, args.batch)
    if "sql" in variants:
        variant_sql(records, args.batch)


if __name__ == "__main__":
    main()
