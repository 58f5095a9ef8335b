"""The hand-written relevance sets: a written agent memory, Debian package descriptions, queries.

Unlike ``tests/relevance.py`` (queries a program cuts out of the answers' own words), nothing
here is generated. Three committed files under ``tests/data/relevance/``:

``memory.jsonl``      an agent memory written by hand in the official server's JSONL format:
                      people, services, libraries, decisions, bugs, incidents, meetings,
                      config facts, conventions, preferences, environment details, TODOs; some
                      of it in Japanese, Chinese, German, French, Spanish, or mixed.
``debian.jsonl.gz``   10,000 Debian packages (name, section, short description) from the
                      bookworm index: the answers to the plain-language needs queries plus a
                      fixed sample of the rest. Real text nobody here wrote; the agent memory
                      is searched among them, so ranking matters.
``queries-dev.jsonl`` / ``queries-heldout.jsonl``
                      queries written by hand the way agents and people search, each with its
                      kind and every acceptable answer, judged by reading the candidates
                      (grade 2: the answer; 1: acceptable). Tune on dev only: the held-out
                      split stands for the queries memfts has never seen.
``nonrelevant.jsonl`` entities read while judging a query and found not to answer it, so that
                      a ranking's unjudged results can be counted (``judged@10``).

An agent-memory query is answered by agent-memory entities only, a needs query by Debian
packages only: the two corpora are unrelated by construction.

A system under test is any ``search(query) -> ranked entity names`` callable (:data:`Search`);
:func:`evaluate` runs it over a split and :func:`scores` reduces the results per kind.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from memfts.models import Entity, Relation

DATA = Path(__file__).resolve().parent / "data" / "relevance"
MEMORY_FILE = DATA / "memory.jsonl"
DEBIAN_FILE = DATA / "debian.jsonl.gz"
NONRELEVANT_FILE = DATA / "nonrelevant.jsonl"
SPLITS = ("dev", "heldout")
QUERY_FILES = {split: DATA / f"queries-{split}.jsonl" for split in SPLITS}

MEMORY_KINDS = (
    "keyword",
    "question",
    "paraphrase",
    "word-form",
    "partial",
    "typo",
    "name-variant",
    "cjk",
    "mixed",
)
"""Kinds of agent-memory query, as agents and people type them (see bench/RELEVANCE.md)."""
NEEDS = "needs"
KINDS = (*MEMORY_KINDS, NEEDS)
GROUPS = ("memory", NEEDS, "all")
"""Rows printed after the agent-memory kinds: all of them together, the needs queries (one kind
and one group), everything."""

LABELS = (*MEMORY_KINDS, *GROUPS)
"""Every row of a score table, in order."""

LIMIT = 10
"""Results looked at per query: hit@10, MRR@10, nDCG@10."""

Search = Callable[[str], Sequence[str]]
"""A system under test: the query text -> entity names, best first (at least ``LIMIT``)."""


@dataclass(frozen=True)
class HandQuery:
    id: str
    kind: str
    text: str
    split: str
    grades: Mapping[str, int]  # entity name -> 2 (the answer) or 1 (acceptable)

    @property
    def group(self) -> str:
        return NEEDS if self.kind == NEEDS else "memory"


# ---- the data ---------------------------------------------------------------------------------


def _graph_lines(lines: Iterable[str]) -> tuple[list[Entity], list[Relation]]:
    entities: list[Entity] = []
    relations: list[Relation] = []
    for line in lines:
        if not line.strip():
            continue
        item = json.loads(line)
        if item["type"] == "entity":
            entities.append(
                Entity(
                    name=item["name"],
                    entityType=item["entityType"],
                    observations=item["observations"],
                )
            )
        else:
            relations.append(
                Relation.model_validate(
                    {"from": item["from"], "to": item["to"], "relationType": item["relationType"]}
                )
            )
    return entities, relations


def memory_graph() -> tuple[list[Entity], list[Relation]]:
    """The hand-written agent memory."""
    return _graph_lines(MEMORY_FILE.read_text(encoding="utf-8").splitlines())


def debian_entities() -> list[Entity]:
    """The Debian packages: name, section as type, the short description as one observation."""
    with gzip.open(DEBIAN_FILE, "rt", encoding="utf-8") as f:
        return _graph_lines(f)[0]


def corpus() -> tuple[list[Entity], list[Relation]]:
    """Both corpora in one graph, in a fixed order that mixes them (by a hash of the name).

    The order is the import order, so the official server's unranked results come in it; a
    shuffle keeps the agent memory from sitting conveniently first or last.
    """
    memory, relations = memory_graph()
    entities = memory + debian_entities()
    entities.sort(key=lambda e: hashlib.sha256(e.name.encode()).hexdigest())
    return entities, relations


def data_digest() -> str:
    """A hash of the committed data files, to key cached databases."""
    h = hashlib.sha256()
    for path in (MEMORY_FILE, DEBIAN_FILE):
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def queries(split: str | None = None) -> list[HandQuery]:
    """The queries of one split (``dev`` or ``heldout``), or of both."""
    out: list[HandQuery] = []
    for name in SPLITS if split is None else (split,):
        for line in QUERY_FILES[name].read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            if "header" in item:
                continue
            out.append(HandQuery(item["id"], item["kind"], item["query"], name, item["answers"]))
    return out


def nonrelevant() -> dict[str, frozenset[str]]:
    """Query id -> entities read while judging it and found not to answer it."""
    out: dict[str, frozenset[str]] = {}
    if NONRELEVANT_FILE.exists():
        for line in NONRELEVANT_FILE.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            out[item["id"]] = frozenset(item["names"])
    return out


# ---- running and scoring ----------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    query: HandQuery
    returned: tuple[str, ...]  # names, best first, cut at LIMIT

    @property
    def rank(self) -> int | None:
        """1-based position of the first acceptable entity, None if not in the results."""
        for position, name in enumerate(self.returned, start=1):
            if self.query.grades.get(name, 0) > 0:
                return position
        return None

    @property
    def ndcg(self) -> float:
        """nDCG@LIMIT with gain 2^grade - 1: the answer (2) counts three times an acceptable (1)."""
        gains = [2 ** self.query.grades.get(name, 0) - 1 for name in self.returned]
        ideal = sorted((2**g - 1 for g in self.query.grades.values()), reverse=True)[:LIMIT]
        dcg = sum(g / math.log2(i + 2) for i, g in enumerate(gains))
        best = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
        return dcg / best


def evaluate(search: Search, hand_queries: Sequence[HandQuery]) -> list[Result]:
    """Run every query through ``search``; repeated names count once, at their first place."""
    results = []
    for q in hand_queries:
        seen: dict[str, None] = {}
        for name in search(q.text):
            seen.setdefault(name, None)
            if len(seen) == LIMIT:
                break
        results.append(Result(q, tuple(seen)))
    return results


@dataclass(frozen=True)
class Metrics:
    label: str
    n: int
    hit1: float
    hit10: float
    mrr: float
    ndcg: float


def metrics(label: str, results: Sequence[Result]) -> Metrics:
    n = len(results)
    ranks = [r.rank for r in results]
    return Metrics(
        label=label,
        n=n,
        hit1=sum(r == 1 for r in ranks) / n,
        hit10=sum(r is not None for r in ranks) / n,
        mrr=sum(1 / r for r in ranks if r is not None) / n,
        ndcg=sum(r.ndcg for r in results) / n,
    )


def scores(results: Sequence[Result]) -> dict[str, Metrics]:
    """Metrics per agent-memory kind, then per group: memory, needs, all."""
    groups: dict[str, list[Result]] = defaultdict(list)
    for r in results:
        for label in {r.query.kind, r.query.group, "all"}:
            groups[label].append(r)
    return {label: metrics(label, groups[label]) for label in LABELS if groups[label]}


def unjudged(result: Result, judged_not: Mapping[str, frozenset[str]]) -> list[str]:
    """Returned entities nobody judged for this query (neither an answer nor read and rejected).

    An entity of the other corpus counts as judged: it never answers (see the module doc).
    """
    debian = _debian_names()
    rejected = judged_not.get(result.query.id, frozenset())
    return [
        name
        for name in result.returned
        if name not in result.query.grades
        and name not in rejected
        and (name in debian) == (result.query.kind == NEEDS)
    ]


def judged_share(results: Sequence[Result], judged_not: Mapping[str, frozenset[str]]) -> float:
    """Share of returned entities whose relevance was judged (see :func:`unjudged`)."""
    total = sum(len(r.returned) for r in results)
    missing = sum(len(unjudged(r, judged_not)) for r in results)
    return 1.0 - missing / total if total else 1.0


_DEBIAN_NAMES: set[str] = set()


def _debian_names() -> set[str]:
    if not _DEBIAN_NAMES:
        _DEBIAN_NAMES.update(e.name for e in debian_entities())
    return _DEBIAN_NAMES


def compact_table(columns: Mapping[str, Mapping[str, Metrics]]) -> str:
    """One row per kind and group; "hit@10 / MRR@10" for each system (column)."""
    systems = list(columns)
    labels = [label for label in LABELS if label in columns[systems[0]]]
    lines = [
        "| kind | n | " + " | ".join(f"{s} hit@10 / MRR" for s in systems) + " |",
        "|---|---:|" + "---:|" * len(systems),
    ]
    for label in labels:
        cells = [f"{columns[s][label].hit10:.3f} / {columns[s][label].mrr:.3f}" for s in systems]
        shown = f"**{label}**" if label in GROUPS else label
        lines.append(f"| {shown} | {columns[systems[0]][label].n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def markdown_table(columns: Mapping[str, Mapping[str, Metrics]]) -> str:
    """One row per kind and group; hit@1, hit@10, MRR@10, nDCG@10 for each system (column)."""
    systems = list(columns)
    labels = [label for label in LABELS if label in columns[systems[0]]]
    head = "| kind | n | " + " | ".join(
        f"{s} hit@1 | {s} hit@10 | {s} MRR | {s} nDCG" for s in systems
    )
    lines = [head + " |", "|---|---:|" + "---:|" * (4 * len(systems))]
    for label in labels:
        n = columns[systems[0]][label].n
        cells = []
        for s in systems:
            m = columns[s][label]
            cells.append(f"{m.hit1:.3f} | {m.hit10:.3f} | {m.mrr:.3f} | {m.ndcg:.3f}")
        shown = f"**{label}**" if label in GROUPS else label
        lines.append(f"| {shown} | {n} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
