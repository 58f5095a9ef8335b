"""Print the relevance table of ``search_nodes`` on the relevance set of ``tests/relevance.py``.

    python bench/relevance.py                 # per-class and per-sub-class tables, timings
    python bench/relevance.py --failures 5    # plus 5 missed or misranked queries per sub-class

The corpus is imported into a fresh database in a temporary folder; each query runs
``--repeat`` times and its time is the fastest run (warm cache). Set ``PYTHONPATH`` to another
checkout's ``src`` to measure that code with the same set.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
import time
from pathlib import Path
from types import ModuleType
from typing import Any

from memfts import __file__ as memfts_file
from memfts.store import Store

ROOT = Path(__file__).resolve().parents[1]


def _load_relevance_set() -> ModuleType:
    # tests/relevance.py, loaded by path: this script's own name would shadow ``import relevance``
    spec = importlib.util.spec_from_file_location("relevance_set", ROOT / "tests" / "relevance.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being built
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--failures",
        type=int,
        default=0,
        metavar="N",
        help="show N queries per sub-class whose answer is not ranked first",
    )
    parser.add_argument("--repeat", type=int, default=3, help="runs per query for timing")
    args = parser.parse_args()
    rel = _load_relevance_set()

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
            runs = [rel.run(store, queries) for _ in range(max(1, args.repeat))]
        finally:
            store.close()
    # same results every run; keep the fastest time of each query
    outcomes = [
        rel.Outcome(group[0].query, group[0].returned, min(o.seconds for o in group))
        for group in zip(*runs, strict=True)
    ]

    observations = sum(len(e.observations) for e in entities)
    print(f"memfts from {Path(memfts_file).parent}")
    print(
        f"corpus: {len(entities)} entities, {observations} observations, {len(relations)} "
        f"relations; built with {len(queries)} queries in {built:.1f} s, imported in "
        f"{imported:.1f} s; each query run {args.repeat}x, fastest time kept\n"
    )
    print(rel.markdown_table(rel.scores_by_class(outcomes)))
    print()
    print(rel.markdown_table(rel.scores_by_class(outcomes, sub=True)))
    if args.failures:
        _print_failures(rel, outcomes, args.failures)


def _print_failures(rel: ModuleType, outcomes: list[Any], per_group: int) -> None:
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


if __name__ == "__main__":
    main()
