"""Search latency of memfts per query class, and SQL statements per search, on a cached graph.

    python bench/quick.py --entities 100000                # synthetic graph, in-process
    python bench/quick.py --corpus debian                  # ~63,000 Debian packages (real text)
    python bench/quick.py --corpus debian --mcp            # through a real stdio server
    python bench/quick.py --corpus debian --mcp --written 300  # after 300 one-entity writes
    python bench/quick.py --entities 100000 --statements   # SQL statements per search, by kind
    python bench/quick.py --entities 100000 --only common --profile
    python bench/quick.py --entities 100000 --adversarial  # the inputs of test_search_bounds
    python bench/quick.py --adversarial --mcp              # the same through a real server

For iterating on the search (``search.py``, ``vocabulary.py``, ``ranking.py``). In-process it
calls ``Store.search_nodes`` (the search itself); with ``--mcp`` it times ``tools/call``
round trips to a ``memfts`` stdio server through a raw pipe (``protocol.RawPipeClient``),
which adds the MCP layer and the JSON of the result. The databases are built once and reused
(``--rebuild`` redoes them): the synthetic graph of ``corpus.py`` per size and seed, and the
Debian graph from this machine's apt index (``apt-cache dumpavail``: name = package, type =
section, one observation = the description, cached in ``bench/data/debian-full.jsonl.gz``).

Query classes. Synthetic: ``rare`` (the rarest word of an entity), ``medium`` (Zipf rank
100-1,000), ``common`` (the 5 commonest words), ``2-4 words`` (2, 3 or 4 consecutive words of an
observation). Debian: ``rare``, ``2-4 words`` the same way from descriptions, ``common`` (the 5
commonest words of the descriptions that are not stopwords: "library", "module"...).
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import gzip
import json
import os
import pstats
import random
import re
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import apsw

from corpus import DATA_DIR, SEED, QuerySet, ensure_jsonl, read_jsonl
from measure import LoadReport, Summary, db_path, ensure_db, load_store, schema_tag, time_calls
from memfts import results, segments
from memfts.models import Entity
from memfts.search import STOPWORDS
from memfts.store import Store
from protocol import RawPipeClient, memfts_command
from revision import use_revision

DEBIAN_FILE = DATA_DIR / "debian-full.jsonl.gz"
"""The apt index as official-JSONL entities (shared with relevance_debian.py --full)."""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", choices=("synthetic", "debian"), default="synthetic")
    parser.add_argument("--entities", type=int, default=100_000, help="synthetic graph size")
    parser.add_argument("--seed", type=int, default=SEED)
    parser.add_argument("--rev", help="measure this commit's src/ (default: the working tree)")
    parser.add_argument("--limit", type=int, default=20, help="search_nodes limit")
    parser.add_argument(
        "--per-class",
        type=int,
        default=100,
        help="distinct queries per class (over 20, a p95 is the second-slowest query's time)",
    )
    parser.add_argument("--rounds", type=int, default=3, help="timed passes over the queries")
    parser.add_argument("--only", help="one class: rare, medium, common, 2-4 words")
    parser.add_argument("--query", action="append", help="time these queries instead")
    parser.add_argument("--mcp", action="store_true", help="through a real stdio server")
    parser.add_argument(
        "--written",
        type=int,
        default=0,
        metavar="N",
        help="on a copy after N more writes of one entity each (segments as writes leave them)",
    )
    parser.add_argument("--profile", action="store_true", help="cProfile the timed calls")
    parser.add_argument("--rebuild", action="store_true", help="rebuild the cached database")
    parser.add_argument(
        "--statements", action="store_true", help="count SQL statements per search, by kind"
    )
    parser.add_argument(
        "--adversarial", action="store_true", help="time inputs built to make a search slow"
    )
    args = parser.parse_args()
    code = use_revision(args.rev)
    print(f"memfts code measured: {code}", flush=True)

    if args.corpus == "debian":
        path, report, classes = debian(args.per_class, args.seed, args.rebuild)
    else:
        path, report, classes = synthetic(args.entities, args.per_class, args.seed, args.rebuild)
    print(
        f"{path.name}: {report.entities:,} entities, {report.observations:,} "
        f"observations, {report.relations:,} relations, loaded in {report.seconds:.1f} s"
    )
    if args.written:
        path = written_copy(path, args.written, args.seed)
        print(f"{path.name}: after {args.written:,} more writes of one entity each")
    print(f"full-text index segments: {segment_counts(path)}")
    if args.query:
        classes = {"given": args.query}
    elif args.only:
        classes = {args.only: classes[args.only]}
    if args.adversarial:
        time_adversarial(path, classes, args.rounds, args.mcp)
    elif args.statements:
        count_statements(path, classes, args.limit)
    elif args.mcp:
        time_mcp(path, classes, args.limit, args.rounds)
    else:
        time_store(path, classes, args.limit, args.rounds, args.profile)


# ---- the graphs and their queries ------------------------------------------------------------


def synthetic(
    entities: int, per_class: int, seed: int, rebuild: bool
) -> tuple[Path, LoadReport, dict[str, list[str]]]:
    if rebuild:
        db_path(entities, seed).unlink(missing_ok=True)
    path, report = ensure_db(entities, seed)
    records, _ = read_jsonl(ensure_jsonl(entities, seed))
    classes = QuerySet.draw(records, per_class, seed).classes
    rng = random.Random(seed)
    observations = [o for r in rng.sample(records, per_class * 4) for o in r["observations"]]  # type: ignore[union-attr]
    classes["2-4 words"] = consecutive_words(observations, per_class, rng)
    del classes["3-word"]
    return path, report, classes


def debian(
    per_class: int, seed: int, rebuild: bool
) -> tuple[Path, LoadReport, dict[str, list[str]]]:
    records = debian_records()
    path = DATA_DIR / f"memfts-debian-{schema_tag()}.db"
    load_file = path.with_suffix(".load.json")
    if rebuild:
        path.unlink(missing_ok=True)
    if path.exists() and load_file.exists():
        report = LoadReport(**json.loads(load_file.read_text()))
    else:
        tmp = path.with_name(path.stem + ".building.db")
        for leftover in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
            leftover.unlink(missing_ok=True)
        report = load_store(tmp, (records, []), 1000)
        tmp.rename(path)
        load_file.write_text(json.dumps(report.__dict__))
    rng = random.Random(seed)
    descriptions = [str(r["observations"][0]) for r in records]  # type: ignore[index]
    counts = collections.Counter(
        w for d in descriptions for w in set(words_of(d)) if w not in STOPWORDS and len(w) > 2
    )
    sample = rng.sample(descriptions, per_class * 4)
    rare = list(dict.fromkeys(min(words_of(d), key=lambda w: counts[w]) for d in sample))
    return (
        path,
        report,
        {
            "rare": rare[:per_class],
            "common": [w for w, _ in counts.most_common(5)],
            "2-4 words": consecutive_words(sample, per_class, rng),
        },
    )


def written_copy(path: Path, writes: int, seed: int) -> Path:
    """A copy of the database after ``writes`` more ``create_entities`` calls of one entity
    each (words drawn from its own observations): its full-text indexes as a graph in use
    holds them, each write adding a segment and the writes' upkeep merging them
    (``memfts.segments``), where a freshly imported graph has one segment per index."""
    copy = path.with_name(f"{path.stem}.written{writes}-s{seed}.db")
    if not copy.exists():
        tmp = copy.with_name(copy.name + ".building")
        shutil.copyfile(path, tmp)
        db = apsw.Connection(str(tmp))
        try:
            sample = db.execute("SELECT content FROM observations ORDER BY id DESC LIMIT 500")
            words = [w for (content,) in sample for w in str(content).split()]
        finally:
            db.close()
        rng = random.Random(seed)
        store = Store(tmp)
        try:
            for n in range(writes):
                text = " ".join(rng.choices(words, k=8))
                store.create_entities(
                    [Entity(name=f"written {n}", entityType="note", observations=[text])]
                )
        finally:
            store.close()
        tmp.rename(copy)
    return copy


def segment_counts(path: Path) -> str:
    """Segments of each full-text index of the file: a search looks each word up in each."""
    db = apsw.Connection(str(path), flags=apsw.SQLITE_OPEN_READONLY)
    try:
        counts = {index: segments.structure(db, index) for index in segments.INDEXES}
    finally:
        db.close()
    return ", ".join(
        f"{i} {c.segments} ({c.pages:,} pages)" if c else f"{i} ?" for i, c in counts.items()
    )


def debian_records() -> list[dict[str, object]]:
    """Every package of the apt index as an entity, cached in ``bench/data/``."""
    if not DEBIAN_FILE.exists():
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        from relevance_debian import full_index  # builds the cache from apt-cache dumpavail

        full_index()
    with gzip.open(DEBIAN_FILE, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def words_of(text: str) -> list[str]:
    return [w.lower() for w in re.findall(r"[A-Za-z][A-Za-z0-9]+", text)]


def consecutive_words(texts: list[str], count: int, rng: random.Random) -> list[str]:
    """``count`` queries of 2, 3 or 4 consecutive words of the texts, as written."""
    queries: list[str] = []
    for text in texts:
        words = re.findall(r"[\w+#.-]+", text)
        k = rng.choice((2, 3, 4))
        if len(words) >= k:
            start = rng.randrange(len(words) - k + 1)
            queries.append(" ".join(w.strip(",.!") for w in words[start : start + k]))
    return list(dict.fromkeys(queries))[:count]


# ---- timing ------------------------------------------------------------------------------------


def time_store(
    path: Path, classes: dict[str, list[str]], limit: int, rounds: int, profile: bool
) -> None:
    store = Store(path)
    profiler = cProfile.Profile() if profile else None
    print(f"in-process Store.search_nodes, limit={limit}, rounds={rounds}")
    try:
        for name, queries in classes.items():
            totals: list[int] = []

            def search(q: str, totals: list[int] = totals) -> object:
                result = store.search_nodes(q, limit)
                totals.append(result.total)
                return result

            if profiler:
                profiler.enable()
            started = time.perf_counter()
            times = time_calls(search, queries, rounds)
            elapsed = time.perf_counter() - started
            if profiler:
                profiler.disable()
            print(
                f"  {name:10} {len(queries):3} queries  {Summary.of(times)}  "
                f"median total {statistics.median(totals):>9,.0f}  ({elapsed:.1f} s)"
            )
            sys.stdout.flush()
    finally:
        store.close()
    if profiler:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(20)


def time_mcp(path: Path, classes: dict[str, list[str]], limit: int, rounds: int) -> None:
    command, env = memfts_command(path)
    with RawPipeClient(command, env) as client:
        print(f"MCP tools/call search_nodes over stdio (raw pipe), limit={limit}, rounds={rounds}")
        for name, queries in classes.items():
            sizes: list[int] = []

            def call(q: str, sizes: list[int] = sizes) -> object:
                result, size = client.call_tool("search_nodes", {"query": q, "limit": limit})
                sizes.append(size)
                return result

            for q in queries:  # warm-up, as time_calls does
                call(q)
            cpu_before = server_cpu_s(client.pid)
            times = time_calls(call, queries, rounds)
            # time_calls warms up again: rounds + 1 passes ran since cpu_before
            cpu_ms = (server_cpu_s(client.pid) - cpu_before) / (len(queries) * (rounds + 1)) * 1e3
            print(
                f"  {name:10} {len(queries):3} queries  {Summary.of(times)}  "
                f"server CPU {cpu_ms:5.2f} ms/call  "
                f"median answer {statistics.median(sizes) / 1000:,.1f} kB"
            )
            sys.stdout.flush()


def adversarial(classes: dict[str, list[str]]) -> list[tuple[str, dict[str, Any]]]:
    """The inputs of tests/test_hostile_queries.py and tests/test_search_bounds.py, with this
    graph's words: every search must be a normal result in bounded time (issue 11: none over
    1 s at 100,000 entities, p95 at most 200 ms)."""
    common, rare = classes["common"][0], classes["rare"][0]
    rng = random.Random(7)

    def hex_word(length: int = 40) -> str:
        return "".join(rng.choice("0123456789abcdef") for _ in range(length))

    return [(q, {}) for q in _hostile_queries()] + [
        (f"{rare} " + " ".join(f"-type:t{i}" for i in range(100)), {}),
        (f"{common} " + " ".join(f"-type:t{i}" for i in range(600)), {}),
        (" ".join(f"type:x{i}" for i in range(1_000)), {}),
        (common, {"compact": True, "limit": 2_000}),
        (common, {"snippets": True, "depth": 2, "limit": 10_000}),
        (" ".join(classes["common"]), {"snippets": True, "limit": 10_000}),
        (" ".join(hex_word() for _ in range(16)), {}),
        (" ".join(hex_word(12) for _ in range(16)), {"snippets": True}),
        (f"{common[:1]}* " * 16, {"limit": 10_000}),
        (" OR ".join(w[:2] for w in classes["common"]) * 3, {}),
        (f'"{common} {rare}" -"{rare}" NOT {common}', {}),
        ("a" * 40 + " " + "b" * 40, {}),
        (" ".join(classes["medium"][:16]), {"snippets": True, "depth": 2, "limit": 10_000}),
    ]


def _hostile_queries() -> list[str]:
    """The strings of tests/test_hostile_queries.py (syntax, injections, NULs, scripts)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from test_hostile_queries import HOSTILE

    return list(HOSTILE)


def time_adversarial(path: Path, classes: dict[str, list[str]], rounds: int, mcp: bool) -> None:
    """Each adversarial search, the slowest of ``rounds`` runs: as an MCP client gets it (a
    page cut to the result budget, as the server makes it: in-process, or with ``mcp``
    through a real server) and as ``Store.search_nodes`` returns it whole (the Python API)."""
    searches = adversarial(classes)
    ways: dict[str, Callable[[str, dict[str, Any]], Any]] = {}
    store = Store(path)
    client: RawPipeClient | None = None
    if mcp:
        command, env = memfts_command(path)
        client = RawPipeClient(command, env)
        ways["MCP tools/call"] = lambda q, o: client.call_tool(  # type: ignore[union-attr]
            "search_nodes", {"query": q, **o}
        )[0]["structuredContent"]
    else:
        budget = store.limits.max_result_chars

        def paged(query: str, options: dict[str, Any]) -> Any:
            with store.walk_search(query, **options) as walk:
                return results.dump(results.search_page(walk, 0, {}, budget))

        ways["as the server pages it"] = paged
    ways["whole (Store.search_nodes)"] = lambda q, o: results.dump(store.search_nodes(q, **o))
    print(f"adversarial searches, the slowest of {rounds} runs of each")
    try:
        for way, search in ways.items():
            slowest: list[float] = []
            for query, options in searches:
                times = []
                for _ in range(max(1, rounds)):
                    start = time.perf_counter()
                    found = search(query, options)
                    times.append(time.perf_counter() - start)
                slowest.append(max(times))
                note = " (cut short)" if "MEMFTS_SEARCH_TIMEOUT_S" in found.get("note", "") else ""
                if max(times) > 0.05:  # the slow ones, by name
                    print(
                        f"  {max(times) * 1000:8.1f} ms  {len(found['entities']):6,} hits{note}  "
                        f"{query[:60]!r} {options or ''}"
                    )
            summary = Summary.of(slowest)
            print(
                f"  {way}: {summary.n} searches: p50 {summary.p50_ms:.1f} ms, "
                f"p95 {summary.p95_ms:.1f} ms, max {summary.max_ms:.1f} ms "
                "(those over 50 ms listed above)"
            )
    finally:
        if client is not None:
            client.close()
        store.close()


def server_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) the process has used: a figure the load of other
    processes on the machine does not inflate, unlike the wall-clock latency."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# ---- statements --------------------------------------------------------------------------------


STATEMENT_ROLES: list[tuple[str, Callable[[str], bool]]] = [
    (
        "transaction",
        lambda sql: sql.startswith(("BEGIN", "COMMIT", "ROLLBACK", "SELECT 1 FROM sqlite_schema")),
    ),
    ("words", lambda sql: "search_terms" in sql or "json_each(:terms)" in sql),
    ("snippets", lambda sql: "snippet(" in sql),
    ("load", lambda sql: "json_each" in sql),
    ("rank", lambda sql: "_fts" in sql),
]
"""What a statement is for, by the first rule its SQL fits (else "other")."""


def statement_kinds(classes: dict[str, list[str]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """The kinds of search whose SQL statements are counted: (query, search_nodes options)."""
    phrases = classes["2-4 words"]
    rare = classes["rare"]
    single = classes.get("medium", rare)
    return {
        "1 word": [(q, {}) for q in single],
        "2 words": [(" ".join(p.split()[:2]), {}) for p in phrases],
        "2-4 words": [(p, {}) for p in phrases],
        "common word": [(q, {}) for q in classes["common"]],
        "typo": [(q[:2] + q[3] + q[2] + q[4:], {}) for q in rare if len(q) > 4],
        "1 word + snippets": [(q, {"snippets": True}) for q in single],
        "question, snippets, depth 1": [
            (f"how do we use {p} here", {"snippets": True, "depth": 1}) for p in phrases
        ],
    }


def count_statements(path: Path, classes: dict[str, list[str]], limit: int) -> None:
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
        apsw.connection_hooks.remove(hook)


if __name__ == "__main__":
    main()
