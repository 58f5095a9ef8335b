"""Relevance of ``search_nodes``: the hand-written sets, then the generated classes.

    python bench/relevance.py                      # both, memfts vs naive baseline vs official
    python bench/relevance.py --failures 10        # plus DEV queries whose answer is not first
    python bench/relevance.py --no-generated       # only the hand-written sets (a few seconds)
    python bench/relevance.py --summary            # plus hit@10 / MRR@10 side by side
    python bench/relevance.py --system fused=my_module:make_search   # add a ranking to compare
    python bench/relevance.py --pool "convert markdown to pdf"       # every system's top 30
    python bench/relevance.py --unjudged           # DEV results nobody judged yet

**Hand-written sets** (``tests/relevance_sets.py``, see bench/RELEVANCE.md): for each split (DEV,
then HELD-OUT) and each system, hit@1, hit@10, MRR@10 and nDCG@10 per kind of query and per
group. The systems: memfts, the code of this checkout, through ``Store.search_nodes(q,
limit=10)`` on a real database file; the naive FTS5 baseline and the official server's substring
search (``bench/baseline_fts.py``). ``judged@10`` is the share of each system's results whose
relevance was judged: well under 1 means the ranking surfaces entities nobody read for that
query, so its scores are a lower bound. Only aggregate figures are printed for HELD-OUT.

**Another ranking**: ``--system NAME=module:factory`` (the module importable from ``bench/`` or
``PYTHONPATH``) where ``factory(db_path, entities) -> search`` returns a callable taking the
query text and returning entity names, best first. ``db_path`` is the database memfts searches
(built with this checkout's code), ``entities`` the same graph as models. From Python::

    from relevance import hand_written_scores
    scores = hand_written_scores({"mine": my_search})   # {system: {split: {label: Metrics}}}

**Generated classes** (``tests/relevance.py``): memfts only, as before (hit@1, hit@10, MRR,
time per query).

The hand-written graph is imported once into ``bench/data/relevance-<hash>.db`` and reused;
the hash covers the data files, ``sql/`` and ``src/memfts``, so a change to either rebuilds it.
Set ``PYTHONPATH`` to another checkout's ``src`` to measure that code with the same sets.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import importlib.util
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import relevance_sets as sets  # noqa: E402
from baseline_fts import NaiveFts, OfficialSearch  # noqa: E402
from memfts import __file__ as memfts_file  # noqa: E402
from memfts.models import Entity  # noqa: E402
from memfts.store import Store  # noqa: E402

DATA_DIR = ROOT / "bench" / "data"
POOL_DEPTH = 30
"""How deep each system's results were read when judging a query."""

Factory = Callable[[Path, Sequence[Entity]], sets.Search]


# ---- the hand-written sets ----------------------------------------------------------------------


def code_digest() -> str:
    """A hash of what writes the database: the data files, ``sql/`` and the memfts sources."""
    h = hashlib.sha256(sets.data_digest().encode())
    src = Path(memfts_file).parent
    for path in sorted([*(ROOT / "sql").glob("*.sql"), *src.rglob("*.py"), *src.rglob("*.sql")]):
        h.update(path.name.encode())
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def database() -> Path:
    """The hand-written graph in a memfts database file, built once per :func:`code_digest`."""
    path = DATA_DIR / f"relevance-{code_digest()}.db"
    if path.exists():
        return path
    DATA_DIR.mkdir(parents=True, exist_ok=True)
    for old in DATA_DIR.glob("relevance-*.db*"):
        old.unlink()
    entities, relations = sets.corpus()
    partial = path.with_name(path.name + ".building")
    store = Store(partial)
    try:
        store.import_batch(entities, relations)
    finally:
        store.close()
    for suffix in ("-wal", "-shm"):
        Path(str(partial) + suffix).unlink(missing_ok=True)
    partial.rename(path)
    return path


def memfts_search(store: Store, limit: int = sets.LIMIT) -> sets.Search:
    def search(query: str) -> list[str]:
        return [e.name for e in store.search_nodes(query, limit=limit).entities]

    return search


def naive_search(fts: NaiveFts, limit: int = sets.LIMIT) -> sets.Search:
    return lambda query: fts.search(query, limit)


def official(entities: Sequence[Entity], limit: int = sets.LIMIT) -> sets.Search:
    index = OfficialSearch(entities)
    return lambda query: index.search(query, limit)


def load_factory(spec: str) -> tuple[str, Factory]:
    """``NAME=module:function`` -> (NAME, the function)."""
    name, sep, target = spec.partition("=")
    module_name, colon, function = target.partition(":")
    if not (sep and colon and name and module_name and function):
        raise SystemExit(f"--system wants NAME=module:function, not {spec!r}")
    sys.path.insert(0, str(ROOT / "bench"))
    factory: Factory = getattr(importlib.import_module(module_name), function)
    return name, factory


Scores = dict[str, dict[str, dict[str, sets.Metrics]]]
"""system -> split -> kind or group -> metrics."""


def hand_written_scores(
    extra: Mapping[str, sets.Search] | None = None,
    *,
    judged: dict[str, dict[str, float]] | None = None,
    results: dict[str, list[sets.Result]] | None = None,
) -> Scores:
    """Score memfts, the baselines and ``extra`` systems on both splits.

    ``judged`` (if given) receives system -> split -> judged@10; ``results`` receives the DEV
    results of each system, for listing failures.
    """
    entities, _ = sets.corpus()
    store = Store(database())
    try:
        systems: dict[str, sets.Search] = {
            "memfts": memfts_search(store),
            "naive": naive_search(NaiveFts(entities)),
            "official": official(entities),
            **(extra or {}),
        }
        rejected = sets.nonrelevant()
        out: Scores = {}
        for name, search in systems.items():
            out[name] = {}
            for split in sets.SPLITS:
                split_results = sets.evaluate(search, sets.queries(split))
                out[name][split] = sets.scores(split_results)
                if judged is not None:
                    judged.setdefault(name, {})[split] = sets.judged_share(split_results, rejected)
                if results is not None and split == "dev":
                    results[name] = split_results
        return out
    finally:
        store.close()


def print_summary(scores: Scores) -> None:
    for split in sets.SPLITS:
        title = "DEV" if split == "dev" else "HELD-OUT"
        print(f"\n{title}, hit@10 / MRR@10:\n")
        print(sets.compact_table({name: by_split[split] for name, by_split in scores.items()}))


def print_hand_written(scores: Scores, judged: dict[str, dict[str, float]]) -> None:
    counts = {split: len(sets.queries(split)) for split in sets.SPLITS}
    memory, _ = sets.memory_graph()
    print(
        f"hand-written sets: {len(memory)} agent-memory entities among "
        f"{len(sets.debian_entities())} Debian packages; {counts['dev']} DEV and "
        f"{counts['heldout']} HELD-OUT queries"
    )
    for split in sets.SPLITS:
        title = "DEV" if split == "dev" else "HELD-OUT (do not tune on it)"
        print(f"\n### {title}\n")
        print(sets.markdown_table({name: by_split[split] for name, by_split in scores.items()}))
        shares = ", ".join(f"{name} {by_split[split]:.3f}" for name, by_split in judged.items())
        print(f"\njudged@10: {shares}")


def print_unjudged(results: Mapping[str, Sequence[sets.Result]]) -> None:
    """DEV queries whose top 10 holds entities nobody judged, per system: what to judge next."""
    rejected = sets.nonrelevant()
    print("\nUnjudged entities in the top 10 of DEV queries (judge them, see RELEVANCE.md):")
    for system, system_results in results.items():
        for r in system_results:
            names = sets.unjudged(r, rejected)
            if names:
                print(f"- {system}: {r.query.kind}: {r.query.text!r}: {names}")


def print_failures(results: Sequence[sets.Result], limit: int) -> None:
    print(f"\nDEV queries whose answer memfts does not rank first (up to {limit} per kind):")
    shown: dict[str, int] = {}
    for r in results:
        if r.rank == 1 or shown.get(r.query.kind, 0) >= limit:
            continue
        shown[r.query.kind] = shown.get(r.query.kind, 0) + 1
        best = sorted(r.query.grades, key=lambda n: -r.query.grades[n])[:3]
        rank = "missed" if r.rank is None else f"rank {r.rank}"
        got = list(r.returned[:3])
        print(f"- {r.query.kind}: {r.query.text!r} -> {rank}; want {best}; got {got}")


def print_pool(query: str, extra: Mapping[str, sets.Search]) -> None:
    """Every system's top POOL_DEPTH for one query, with the judgments it has, if any."""
    entities, _ = sets.corpus()
    by_name = {e.name: e for e in entities}
    known = [q for q in sets.queries("dev") if q.text == query]
    grades = known[0].grades if known else {}
    store = Store(database())
    try:
        systems = {
            "memfts": memfts_search(store, POOL_DEPTH),
            "naive": naive_search(NaiveFts(entities), POOL_DEPTH),
            "official": official(entities, POOL_DEPTH),
            **extra,
        }
        seen: dict[str, list[str]] = {}
        for name, search in systems.items():
            for rank, entity in enumerate(search(query)[:POOL_DEPTH], start=1):
                seen.setdefault(entity, []).append(f"{name}#{rank}")
    finally:
        store.close()
    for entity, where in seen.items():
        e = by_name[entity]
        text = " | ".join(e.observations)[:140]
        grade = grades.get(entity, "-")
        print(f"[{grade}] {entity} ({e.entityType}) {' '.join(where)}: {text}")


# ---- the generated classes ----------------------------------------------------------------------


def _load_generated_set() -> ModuleType:
    # tests/relevance.py, loaded by path: this script's own name would shadow ``import relevance``
    spec = importlib.util.spec_from_file_location("relevance_set", ROOT / "tests" / "relevance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def print_generated(repeat: int, failures: int) -> None:
    rel = _load_generated_set()
    t0 = time.perf_counter()
    entities, relations = rel.build_corpus()
    queries = rel.build_queries(entities)
    built = time.perf_counter() - t0
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(Path(tmp) / "memory.db")
        try:
            t0 = time.perf_counter()
            store.import_batch(entities, relations)
            imported = time.perf_counter() - t0
            runs = [rel.run(store, queries) for _ in range(max(1, repeat))]
        finally:
            store.close()
    # same results every run; keep the fastest time of each query
    outcomes = [
        rel.Outcome(group[0].query, group[0].returned, min(o.seconds for o in group))
        for group in zip(*runs, strict=True)
    ]
    observations = sum(len(e.observations) for e in entities)
    print(
        f"\n## Generated classes (tests/relevance.py): {len(entities)} entities, {observations} "
        f"observations, {len(relations)} relations; {len(queries)} queries built in "
        f"{built:.1f} s, imported in {imported:.1f} s; each query run {repeat}x, fastest kept\n"
    )
    print(rel.markdown_table(rel.scores_by_class(outcomes)))
    print()
    print(rel.markdown_table(rel.scores_by_class(outcomes, sub=True)))
    if failures:
        _print_generated_failures(rel, outcomes, failures)


def _print_generated_failures(rel: ModuleType, outcomes: list[Any], per_group: int) -> None:
    print(f"\nQueries whose answer is not first (up to {per_group} per sub-class):")
    shown: dict[str, int] = {}
    for o in outcomes:
        label = f"{o.query.cls}/{o.query.sub}"
        if o.rank == 1 or shown.get(label, 0) >= per_group:
            continue
        shown[label] = shown.get(label, 0) + 1
        rank = "missed" if o.rank is None or o.rank > rel.LIMIT else f"rank {o.rank}"
        print(
            f"- {label}: {o.query.text!r} -> want {sorted(o.query.answers)}, {rank}; "
            f"got {list(o.returned[:3])}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--failures",
        type=int,
        default=0,
        metavar="N",
        help="list N DEV queries per kind (and generated queries per sub-class) not ranked first",
    )
    parser.add_argument(
        "--system",
        action="append",
        default=[],
        metavar="NAME=module:factory",
        help="another ranking to score beside memfts (repeatable)",
    )
    parser.add_argument("--pool", metavar="QUERY", help="print every system's top 30 for QUERY")
    parser.add_argument(
        "--unjudged",
        action="store_true",
        help="list DEV queries whose top 10 holds entities nobody judged (when judged@10 < 1)",
    )
    parser.add_argument("--no-generated", action="store_true", help="skip the generated classes")
    parser.add_argument(
        "--summary", action="store_true", help="also print hit@10 / MRR@10 side by side"
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per generated query (timing)")
    args = parser.parse_args()

    extra: dict[str, sets.Search] = {}
    if args.system:
        entities, _ = sets.corpus()
        path = database()
        for spec in args.system:
            name, factory = load_factory(spec)
            extra[name] = factory(path, entities)
    if args.pool:
        print_pool(args.pool, extra)
        return

    print(f"memfts from {Path(memfts_file).parent}\n")
    t0 = time.perf_counter()
    judged: dict[str, dict[str, float]] = {}
    results: dict[str, list[sets.Result]] = {}
    scores = hand_written_scores(extra, judged=judged, results=results)
    print_hand_written(scores, judged)
    if args.summary:
        print_summary(scores)
    print(f"\n(hand-written sets scored in {time.perf_counter() - t0:.1f} s)")
    if args.failures:
        print_failures(results["memfts"], args.failures)
    if args.unjudged:
        print_unjudged(results)
    if not args.no_generated:
        print_generated(args.repeat, args.failures)


if __name__ == "__main__":
    main()
