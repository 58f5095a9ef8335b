"""A parsed query -> entity ids in rank order: the FTS5 lookups, their SQL, every tuning constant.

:func:`rank` is the one entry. It returns a :class:`Ranking`: entity ids, best first, and what
the search found out on the way (how many matched, how many hold every word, corrections,
suggestions). It loads no entity; the store does that. A step that fuses another ranking with
this one (a vector arm) takes ``Ranking.ids`` (and ``Ranking.complete``, how many of them hold
every word) and re-orders or extends them before the store loads them, keeping only what
:func:`kept` lets through of its own (the same type filters and exclusions). :func:`snippets` gives
the matching fragments of ranked entities, in one statement.

How a query is answered. Each clause of the query (a word, a phrase, ``a OR b``) becomes
*arms*, FTS5 lookups in the entity and observation indexes: the word as typed (and its other
spellings); at a discount, its other forms (same stem); and, flat and further discounted, the
indexed words that start with or contain it (see :mod:`memfts.vocabulary`). Each clause's rows
are counted first, up to :data:`COMMON_CLAUSE_ROWS`:

- *rare* clauses are scored with bm25 over all their rows; the entities they reach are the
  candidates;
- *common* clauses (more rows than that: bm25 would have to read all of them, and they weigh
  next to nothing) count only where they meet a rare clause in the same row (name or
  observation), at a flat score;
- if every clause is common, the latest rows holding all of them come first, then the latest
  rows of the rarest; ``total`` is then a lower bound.

Per entity, the best score of each clause is summed. Entities holding every clause come
first (those holding more of them as typed first, then by score); the rest of the page is
filled with the best partial matches, by score.
"""

from __future__ import annotations

import heapq
import itertools
import json
import math
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import TracebackType

import apsw

from memfts import search, vocabulary

ENTITY_WEIGHTS = (1.0, 1.0)
"""bm25 column weights of (name, entity_type); an observation counts 1. A name is short, so a
word in it already scores high; weighing it more let a generic word in a name ("make", "host")
outrank a description that answers the query (measured in bench/RELEVANCE.md)."""

SYNONYM_FACTOR = 0.6
"""A synonym from the table (``kubernetes`` for ``k8s``) scores this share of the word typed;
it counts for the clause but not as a whole-word hit."""

FORM_FACTOR = 0.8
"""Another form of a query word (``renewed`` for ``renewing``) scores this share of the word
as typed; like a partial word, it does not count as a whole-word hit."""

PARTIAL_MATCH_FACTOR = 0.5
"""A word start or infix hit scores this share of :data:`FLAT_SCORE`, so whole words rank first."""

FLAT_SCORE = -1.0
"""Score of a partial-word hit before its discount; whole-word bm25 scores run about -3 to -15."""

FILL_BY_WORDS = True
"""Order the partial matches filling the page by how many of the query's words they hold,
then by score (False: by score alone)."""

JOINED_FACTOR = 1.0
"""Bonus (times bm25) of an entity holding words typed as one (``refund_round``) together."""

ADJACENT_FACTOR = 0.25
"""Bonus (times bm25) of an entity holding two neighbouring query words side by side."""

NAME_START_SCORE = -3.0
"""Bonus of an entity whose name starts with the query's words (a known-item search)."""

COMMON_SCORE = -0.5
"""Score of a common word's hit (see the module's doc): bm25 gives such a word next to nothing."""

COMMON_CLAUSE_ROWS = 1_000
"""Rows past which a clause is common: not scored with bm25, which would read all its rows."""

PARTIAL_ARM_ROWS = 250
"""Most rows one widening of a partial word contributes (the latest): partial hits rank low,
and a short fragment can widen to words used everywhere."""

LATEST_ROWS = 200
"""Rows of the rarest word read when every clause is common (at least 2 x ``limit``)."""

LATEST_COMPLETE_FACTOR = 2
"""When every clause is common, rows holding all of them are read until they name this many
times ``limit`` entities: finding them steps through every word's rows together, which costs
the more the rarer they meet (200 rows took 2.6 ms for three words, 40 rows 0.6 ms)."""

SNIPPETS_PER_ENTITY = 3
"""Most fragments shown per entity."""

SNIPPET_CANDIDATES = 20
"""Matching observations read per entity to choose its snippets from (those with the most
matches first)."""

SNIPPET_MARKS = ("**", "**")
"""How snippets mark the words that matched."""

SNIPPET_TOKENS = 16
"""Words around the match in one fragment."""

PROGRESS_STEPS = 10_000
"""SQLite virtual-machine steps between two looks at the time used (about a millisecond)."""

WALL_FACTOR = 4.0
"""A search's time limit counts its CPU time; the clock stops it at this many times the
limit (see :class:`Deadline`)."""

OBSERVATION_ID_BITS = 20
"""An observation's id is ``entity_id << 20`` plus its position (sql/001): a full-text hit's
entity is its rowid shifted, with no lookup, and an entity holds at most 2^20 observations."""

TABLES = ("entities_fts", "observations_fts")
_ENTITY_OF = {
    "entities_fts": "entities_fts.rowid",
    "observations_fts": f"(observations_fts.rowid >> {OBSERVATION_ID_BITS})",
}
_BM25 = {
    "entities_fts": "bm25(entities_fts, :name_weight, :type_weight)",
    "observations_fts": "bm25(observations_fts)",
}


@dataclass(frozen=True)
class Sql:
    """A piece of SQL and the named parameters it binds."""

    sql: str
    params: dict[str, object] = field(default_factory=dict)


def _joined(parts: list[Sql], joiner: str) -> Sql:
    params: dict[str, object] = {}
    for part in parts:
        params.update(part.params)
    return Sql(joiner.join(p.sql for p in parts), params)


@dataclass
class Ranking:
    """Entity ids in rank order and what the search found out on the way."""

    ids: list[int]
    total: int
    lower_bound: bool = False
    """``total`` counted no further than a bound: at least that many matched."""
    complete: int = 0
    """How many entities hold every clause of the query (the first ones of ``ids``)."""
    corrected: str | None = None
    """The corrected words searched instead of the query as typed."""
    suggestions: list[str] = field(default_factory=list)
    searched: search.Query | None = None
    """The query actually searched, when it is not the one parsed (a corrected query)."""


class Deadline:
    """Stops this connection's statements once the search has used ``seconds`` of CPU time:
    SQLite's progress handler makes the running statement fail with
    :class:`apsw.InterruptError`, which the caller turns into a normal result with what was
    found and a note. Python's own loops over candidates (typo correction) ask :attr:`passed`.

    CPU time of the searching thread, not the clock: on a machine busy with other work a
    search waits for the CPU, and an ordinary search must not be cut short for that. The
    clock still stops one at :data:`WALL_FACTOR` times the limit (a search waiting on a slow
    disk uses no CPU)."""

    def __init__(self, db: apsw.Connection, seconds: float) -> None:
        self.db = db
        self.extend(seconds)

    def extend(self, seconds: float) -> None:
        """A new limit, ``seconds`` from now (for the cheap search after an interrupted one)."""
        self.at = time.thread_time() + seconds
        self.wall_at = time.monotonic() + seconds * WALL_FACTOR

    def add(self, seconds: float) -> None:
        """``seconds`` more than the limit set (the loading after the ranking)."""
        self.at += seconds
        self.wall_at += seconds * WALL_FACTOR

    @property
    def passed(self) -> bool:
        return time.thread_time() > self.at or time.monotonic() > self.wall_at

    @contextmanager
    def paused(self) -> Iterator[None]:
        """No limit inside the block (what a result must hold whatever the time), and the
        time it takes is not counted after it: the limit moves on by as much."""
        limits = self.at, self.wall_at
        cpu, wall = time.thread_time(), time.monotonic()
        self.at = self.wall_at = math.inf
        try:
            yield
        finally:
            self.at = limits[0] + (time.thread_time() - cpu)
            self.wall_at = limits[1] + (time.monotonic() - wall)

    def __enter__(self) -> Deadline:
        self.db.set_progress_handler(lambda: self.passed, PROGRESS_STEPS, id=Deadline)
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        trace: TracebackType | None,
    ) -> None:
        self.db.set_progress_handler(None, id=Deadline)


# ---- the lookups of a query ------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One FTS5 lookup answering a clause: a table, a safe expression, what kind of hit it is."""

    table: str
    match: str
    kind: str
    """``word`` (as typed, or spelt another way), ``form`` (same stem), ``synonym`` (from the
    synonym table, in any form) or ``partial``."""

    @property
    def factor(self) -> float:
        return {
            "word": 1.0,
            "form": FORM_FACTOR,
            "synonym": SYNONYM_FACTOR,
            "partial": PARTIAL_MATCH_FACTOR,
        }[self.kind]

    def hits_sql(self, key: str, clause: int) -> Sql:
        """``(entity_id, clause, score, whole)`` rows; its parameters are named ``key_*``.
        A partial arm (an OR of many words, where bm25 would first count the matches of each)
        scores flat, over its latest rows only."""
        entity = _ENTITY_OF[self.table]
        params: dict[str, object] = {f"{key}_match": self.match, f"{key}_factor": self.factor}
        if self.kind == "partial":
            return Sql(
                f"SELECT * FROM (SELECT {entity}, {clause}, :{key}_factor * {FLAT_SCORE}, 0 "
                f"FROM {self.table} WHERE {self.table} MATCH :{key}_match "
                f"ORDER BY {self.table}.rowid DESC LIMIT {PARTIAL_ARM_ROWS})",
                params,
            )
        if self.table == "entities_fts":
            params["name_weight"], params["type_weight"] = ENTITY_WEIGHTS
        return Sql(
            f"SELECT {entity}, {clause}, :{key}_factor * {_BM25[self.table]}, "
            f"{int(self.kind == 'word')} FROM {self.table} WHERE {self.table} MATCH :{key}_match",
            params,
        )


@dataclass
class Planned:
    """One clause of the query with its arms and how many rows its words match."""

    index: int
    clause: search.Clause
    arms: list[Arm]
    rows: dict[str, int] = field(default_factory=dict)
    """Per table, rows matching its word and form arms, counted no further than past the
    common bound (0: none there, so its lookups in that table are left out)."""

    @property
    def size(self) -> int:
        return sum(self.rows.values())

    @property
    def common(self) -> bool:
        return self.size > COMMON_CLAUSE_ROWS

    def words_match(self, table: str) -> str | None:
        """One expression for the clause's words and forms in ``table``, if it has any there."""
        parts = [f"({a.match})" for a in self.arms if a.table == table and a.kind != "partial"]
        return " OR ".join(parts) or None

    def found_match(self, table: str) -> str | None:
        """:meth:`words_match`, if its words were found in ``table`` (once counted)."""
        return self.words_match(table) if self.rows.get(table) else None

    @property
    def unknown_words(self) -> list[str]:
        """Its words, if nothing holds them, not even inside longer words (typo candidates)."""
        if self.size or any(a.kind == "partial" for a in self.arms):
            return []
        return [w for t in self.clause.terms if not t.synonym for w in t.words]


def _arms(vocab: vocabulary.Lookup, clause: search.Clause) -> list[Arm]:
    """The FTS lookups answering one clause: whole words, then other forms, synonyms and
    partial words at a discount."""
    arms: list[Arm] = []
    for term in clause.terms:
        tables = ("entities_fts",) if term.name_only else TABLES
        column = "name : " if term.name_only else ""
        expressions: list[tuple[str, str]] = []
        single = len(term.words) == 1 and not term.prefix
        spellings, forms = vocab.variants(term.words[0]) if single else ([], [])
        typed = "synonym" if term.synonym else "word"
        if spellings:
            expressions.append((typed, search.any_of_expression([term.words[0], *spellings])))
        else:
            expressions.append((typed, search.whole_expression(term)))
        # a quoted word is that word, however spelt; unquoted, any of its forms too
        if forms and not term.exact:
            kind = "synonym" if term.synonym else "form"
            expressions.append((kind, search.any_of_expression(forms)))
        if single and not (term.exact or term.synonym):
            seen = {*spellings, *forms}
            containing = [w for w in vocab.words_containing(term.words[0]) if w not in seen]
            if containing:
                expressions.append(("partial", search.any_of_expression(containing)))
        for kind, expression in expressions:
            arms += [Arm(table, f"{column}({expression})", kind) for table in tables]
    return arms


def _single_words(clauses: list[search.Clause]) -> list[str]:
    return [t.words[0] for c in clauses for t in c.terms if len(t.words) == 1 and not t.prefix]


def _plan(vocab: vocabulary.Lookup, query: search.Query) -> list[Planned]:
    """The query's clauses with their arms and sizes, in two statements whatever its length:
    one looks every word up in the vocabulary, one counts every clause's rows."""
    vocab.expand(_single_words(query.required + query.excluded))
    planned = [Planned(i, c, _arms(vocab, c)) for i, c in enumerate(query.required)]
    counts: list[str] = []
    counted: list[tuple[Planned, str]] = []
    params: dict[str, object] = {"bound": COMMON_CLAUSE_ROWS + 1}
    for p in planned:
        for table in TABLES:
            match = p.words_match(table)
            if match:
                params[f"c{p.index}_{table}"] = match
                counted.append((p, table))
                counts.append(
                    f"(SELECT count(*) FROM (SELECT 1 FROM {table} "
                    f"WHERE {table} MATCH :c{p.index}_{table} LIMIT :bound))"
                )
    if counts:
        sizes: tuple[int, ...] = vocab.db.execute(  # type: ignore[assignment]
            f"SELECT {', '.join(counts)}", params
        ).fetchall()[0]
        for (p, table), size in zip(counted, sizes, strict=True):
            p.rows[table] = int(size)
    return planned


# ---- filters ---------------------------------------------------------------------------------


def filter_types(query: search.Query, entity_type: str | None) -> list[str]:
    """The (folded) entity types every result must have: the argument's and the query's."""
    return [search.fold(t) for t in (entity_type, *query.entity_types) if t and t.strip()]


def _excluded_sql(vocab: vocabulary.Lookup, query: search.Query) -> Sql:
    """The ids of the entities an ``-excluded`` term or type leaves out.

    An excluded word leaves out exactly what the same word would find: its other spellings
    and forms, and the words containing it (``-postgres`` leaves out ``PostgreSQL``).
    """
    selects = [Sql("SELECT NULL WHERE 0")]
    if query.excluded_types:
        # one pass over the entities for all the types
        types = json.dumps(sorted({search.fold(t) for t in query.excluded_types}))
        selects.append(
            Sql(
                "SELECT id FROM entities WHERE "
                + _type_is("entity_type", "(SELECT value FROM json_each(:excluded_types))"),
                {"excluded_types": types},
            )
        )
    for i, clause in enumerate(query.excluded):
        for table in TABLES:
            parts = [f"({a.match})" for a in _arms(vocab, clause) if a.table == table]
            if parts:
                selects.append(
                    Sql(
                        f"SELECT {_ENTITY_OF[table]} FROM {table} "
                        f"WHERE {table} MATCH :excluded{i}_{table}",
                        {f"excluded{i}_{table}": " OR ".join(parts)},
                    )
                )
    return _joined(selects, " UNION ")


def _type_is(column: str, folded: str) -> str:
    """SQL: the entity type ``column`` is one of ``folded`` (casefolded types, an SQL list).

    Unicode case folding (``memfts_fold``, a Python function) only for types that are not
    plain ASCII, where SQLite's NOCASE would not fold them: a call per entity made 15 type
    filters cost 15 passes of 100,000 Python calls."""
    return (
        f"({column} COLLATE NOCASE IN {folded} "
        f"OR ({column} GLOB '*[^ -~]*' AND memfts_fold({column}) IN {folded}))"
    )


@dataclass(frozen=True)
class Filters:
    """What keeps an entity in the results: its type, and not being excluded.

    ``cte`` (if any) is the ``excluded`` table to put in the statement's ``WITH``, computed
    once however many lookups test against it."""

    cte: str | None
    params: dict[str, object]
    types: list[str]

    def condition(self, id_sql: str) -> str:
        """An SQL condition on the entity id ``id_sql``."""
        conditions = []
        if len(set(self.types)) > 1:
            return "0"  # every type given must hold: two different ones never do
        if self.types:
            conditions.append(
                f"(SELECT {_type_is('typed.entity_type', '(:type)')} FROM entities AS typed "
                f"WHERE typed.id = {id_sql})"
            )
        if self.cte:
            conditions.append(f"{id_sql} NOT IN excluded")
        return " AND ".join(conditions) or "1"

    def with_sql(self) -> str:
        """``WITH ...,`` for a statement that has CTEs of its own after it."""
        return f"WITH {self.cte}," if self.cte else "WITH"


def _filters(vocab: vocabulary.Lookup, query: search.Query, types: list[str]) -> Filters:
    params: dict[str, object] = {"type": types[0]} if types else {}
    if not (query.excluded or query.excluded_types):
        return Filters(None, params, types)
    excluded = _excluded_sql(vocab, query)
    return Filters(
        f"excluded(entity_id) AS MATERIALIZED ({excluded.sql})",
        {**params, **excluded.params},
        types,
    )


def kept(
    vocab: vocabulary.Lookup, query: search.Query, entity_type: str | None, ids: list[int]
) -> list[int]:
    """Those of ``ids`` the query's filters keep (its types and exclusions), in their order:
    a ranking made elsewhere (the semantic arm) obeys the same filters as :func:`rank`."""
    filters = _filters(vocab, query, filter_types(query, entity_type))
    if not ids or (filters.cte is None and not filters.types):
        return list(ids)
    found = _kept_ids(vocab, filters, json.dumps(ids))
    return [i for i in ids if i in found]


def _kept_ids(vocab: vocabulary.Lookup, filters: Filters, ids: str) -> set[int]:
    """Those of ``ids`` (a JSON list) that ``filters`` keep, in one statement."""
    with_sql = f"WITH {filters.cte} " if filters.cte else ""
    return {
        int(entity_id)
        for (entity_id,) in vocab.db.execute(
            f"{with_sql}SELECT value FROM json_each(:ids) WHERE {filters.condition('value')}",
            {**filters.params, "ids": ids},
        )
    }


# ---- ranking ---------------------------------------------------------------------------------


def rank(
    vocab: vocabulary.Lookup, query: search.Query, limit: int, entity_type: str | None = None
) -> Ranking:
    """The best ``limit`` entities for ``query`` (of ``entity_type`` if given), best first.

    A query with words ranks by bm25 (and, when nothing matched or a misspelt word kept the
    rest from matching together, searches again with corrected words); a query of only
    filters or exclusions, or none at all, lists the most recently changed entities.
    """
    types = filter_types(query, entity_type)
    if query.required:
        ranking = _ranked(vocab, query, limit, types)
        if ranking.total == 0 or (ranking.suggestions and not ranking.complete):
            # nothing found, or a misspelt word kept the rest from matching together
            corrected = _corrected(vocab, query, limit, types)
            if corrected and (ranking.total == 0 or corrected.complete):
                ranking = corrected
        return ranking
    if query.text.strip() and not (query.excluded or query.excluded_types or types):
        return Ranking([], 0)  # only punctuation: nothing to look for
    return _recent(vocab, query, limit, types)


def rank_latest(
    vocab: vocabulary.Lookup, query: search.Query, limit: int, entity_type: str | None = None
) -> Ranking:
    """The cheap search, for when :func:`rank` took too long: the latest entities holding
    every word, then the rarest word (as for a query of only common words), or nothing if
    even that is cut short."""
    if not query.required:
        return Ranking([], 0, lower_bound=True)
    try:
        return _latest(vocab, query, _plan(vocab, query), limit, filter_types(query, entity_type))
    except apsw.InterruptError:
        return Ranking([], 0, lower_bound=True)


def _recent(vocab: vocabulary.Lookup, query: search.Query, limit: int, types: list[str]) -> Ranking:
    """The most recently changed entities, filtered by type and exclusions."""
    filters = _filters(vocab, query, types)
    with_sql = f"WITH {filters.cte} " if filters.cte else ""
    ids = [
        row_id
        for (row_id,) in vocab.db.execute(
            f"{with_sql}SELECT e.id FROM entities AS e WHERE {filters.condition('e.id')} "
            "ORDER BY e.updated_at DESC, e.id DESC LIMIT :limit",
            {**filters.params, "limit": limit},
        )
    ]
    total = vocab.db.execute(
        f"{with_sql}SELECT count(*) FROM entities AS e WHERE {filters.condition('e.id')}",
        filters.params,
    ).get
    return Ranking(ids, int(total), complete=int(total))


def _ordered(
    rows: Iterable[tuple[int, int, float, int]], clauses: int, limit: int, kept: set[int] | None
) -> tuple[list[int], int, int]:
    """The best ``limit`` entities of the ``(entity_id, clause, score, whole)`` rows of every
    lookup, how many entities hold every clause, and how many were found (those in ``kept``,
    if given: the ones the filters let through).

    Per entity, the best score of each clause (bm25 is negative: lower is better) is summed,
    the bonus clause (numbered ``clauses``) included. Entities holding every clause come
    first, those holding more of them as typed (``whole``) first, then by score; then the
    others, those holding more clauses first, then by score; the newest first on a tie.

    In Python rather than SQL: two GROUP BYs and a window cost a third of the ranking
    statement (2.4 ms of the 3,091 rows of a four-word query on the 100k graph, where this
    takes 0.8 ms).
    """
    # per entity, the best (score, whole) of each clause it holds
    held: dict[int, dict[int, tuple[float, int]]] = {}
    for entity_id, clause, score, whole in rows:
        slots = held.get(entity_id)
        if slots is None:
            held[entity_id] = {clause: (score, whole)}
            continue
        found = slots.get(clause)
        if found is None:
            slots[clause] = (score, whole)
        elif score < found[0] or whole > found[1]:
            slots[clause] = (min(score, found[0]), max(whole, found[1]))
    if kept is not None:
        held = {entity_id: slots for entity_id, slots in held.items() if entity_id in kept}
    complete = 0
    keys: list[tuple[bool, int, int, float, int]] = []
    for entity_id, slots in held.items():
        count = len(slots) - (clauses in slots)  # the bonus clause is numbered `clauses`
        score, wholes = 0.0, 0
        for best, whole in slots.values():
            score += best
            wholes += whole
        if count == clauses:
            complete += 1
            keys.append((False, -wholes, -count, score, -entity_id))
        else:
            keys.append((True, 0, -count if FILL_BY_WORDS else 0, score, -entity_id))
    return [-key[-1] for key in heapq.nsmallest(limit, keys)], complete, len(held)


def _ranked(vocab: vocabulary.Lookup, query: search.Query, limit: int, types: list[str]) -> Ranking:
    planned = _plan(vocab, query)
    suggestions = vocab.suggestions(w for p in planned for w in p.unknown_words)
    rare = [p for p in planned if not p.common]
    if not rare:
        found = _latest(vocab, query, planned, limit, types)
        found.suggestions = suggestions
        return found
    hits: list[Sql] = []
    for p in rare:
        hits += [
            arm.hits_sql(f"a{p.index}_{n}", p.index)
            for n, arm in enumerate(p.arms)
            if arm.kind == "partial" or p.rows.get(arm.table)  # else it finds nothing there
        ]
    # a common clause counts where it meets a rare one, in the same row
    for table in TABLES:
        rare_any = " OR ".join(f"({m})" for p in rare if (m := p.found_match(table)))
        for p in planned:
            common = p.found_match(table) if p.common else None
            if rare_any and common:
                key = f"common{p.index}_{table}"
                hits.append(
                    Sql(
                        f"SELECT {_ENTITY_OF[table]}, {p.index}, {COMMON_SCORE}, 1 "
                        f"FROM {table} WHERE {table} MATCH :{key}",
                        {key: f"({rare_any}) AND ({common})"},
                    )
                )
    name_start = _name_start_sql(query, planned)
    if name_start:
        hits.append(name_start)
    hits += _together_sql(query, rare, len(planned))
    if not hits:  # none of the words is anywhere
        return Ranking([], 0, suggestions=suggestions)
    union = _joined(hits, "\nUNION ALL ")
    filters = _filters(vocab, query, types)
    rows: Iterable[tuple[int, int, float, int]] = vocab.db.execute(union.sql, union.params)
    kept_ids = None
    if filters.cte is not None or filters.types:
        rows = list(rows)
        kept_ids = _kept_ids(vocab, filters, json.dumps(sorted({row[0] for row in rows})))
    ids, complete, total = _ordered(rows, len(planned), limit, kept_ids)
    return Ranking(ids, total, complete=complete, suggestions=suggestions)


def _together_sql(query: search.Query, rare: list[Planned], bonus_clause: int) -> list[Sql]:
    """Bonus rows of entities holding query words side by side, as typed: the words typed as
    one (``refund_round`` finds ``test_refund_rounding`` first; the last word as a word start)
    and, with :data:`ADJACENT_FACTOR`, neighbouring words of the query (``audio files``)."""
    # (phrase, factor, whole): words typed as one and found as one count as found as typed,
    # each of them (test_refund_rounding for refund_round, before "round the refund")
    phrases: list[tuple[str, float, int]] = []
    for words in query.joined:  # the last word as a word start, as typed in an identifier
        phrases.append((search.quote(" ".join(words)) + "*", JOINED_FACTOR, len(words)))
    plain = [p for p in rare if _plain(p.clause)]
    absent: dict[str, set[str]] = {table: set() for table in TABLES}
    for one, two in itertools.pairwise(plain):
        if two.index == one.index + 1 and ADJACENT_FACTOR:
            words = (one.clause.terms[0].words[0], two.clause.terms[0].words[0])
            phrase = search.quote(" ".join(words))
            phrases.append((phrase, ADJACENT_FACTOR, 0))
            for table in TABLES:  # both words are needed side by side
                if not (one.rows.get(table) and two.rows.get(table)):
                    absent[table].add(phrase)
    selects = []
    for n, (phrase, factor, whole) in enumerate(dict.fromkeys(phrases)):
        for table in TABLES:
            if phrase in absent[table]:
                continue
            key = f"together{n}_{table}"
            params: dict[str, object] = {key: phrase, f"{key}_factor": factor}
            if table == "entities_fts":
                params["name_weight"], params["type_weight"] = ENTITY_WEIGHTS
            selects.append(
                Sql(
                    f"SELECT {_ENTITY_OF[table]}, {bonus_clause}, :{key}_factor * {_BM25[table]}, "
                    f"{whole} FROM {table} WHERE {table} MATCH :{key}",
                    params,
                )
            )
    return selects


def _plain(clause: search.Clause) -> bool:
    """One typed word, as it is: no quotes, star, field, OR or synonym."""
    term = clause.terms[0]
    return (
        len(clause.terms) == 1
        and len(term.words) == 1
        and not (term.prefix or term.exact or term.name_only)
    )


def _name_start_sql(query: search.Query, planned: list[Planned]) -> Sql | None:
    """The bonus rows of entities whose name starts with the query's words, in order: the
    entity named ``Zanzibarian`` before those mentioning it, ``billing-service`` first for
    "billing service", without weighing every word of every name higher."""
    words = [w for c in query.required for w in c.terms[0].words]
    if not words or any(not p.rows.get("entities_fts") for p in planned[:-1]):
        return None  # a word before the last is in no name or type
    # the last word may be a word start, as a query word of 3+ letters is (konbini-adap)
    prefix = "*" if len(words[-1]) >= vocabulary.MIN_INFIX_LENGTH else ""
    return Sql(
        f"SELECT rowid, {len(planned)}, :name_start_score, 0 FROM entities_fts "
        "WHERE entities_fts MATCH :name_start",
        {
            "name_start": f"name : ^{search.quote(' '.join(words))}{prefix}",
            "name_start_score": NAME_START_SCORE,
        },
    )


_LATEST_SQL = """\
{with_sql} hits(entity_id, complete, in_name) AS MATERIALIZED (
{hits}
)
SELECT entity_id, max(complete) AS complete
FROM hits
GROUP BY entity_id
ORDER BY complete DESC, max(in_name) DESC, entity_id DESC"""
"""The ranking of a query of only common clauses: the latest rows holding all of them
(complete), then the latest rows of the rarest, names before observations."""


def _latest(
    vocab: vocabulary.Lookup,
    query: search.Query,
    planned: list[Planned],
    limit: int,
    types: list[str],
) -> Ranking:
    """For a query of only very common words: no bm25 (which would read every row of each),
    but the latest matches, those holding every word first; ``total`` a lower bound."""
    rarest = min(planned, key=lambda p: p.size)
    window = max(2 * limit, LATEST_ROWS)
    filters = _filters(vocab, query, types)
    hits: list[Sql] = []
    for table in TABLES:
        every = [p.found_match(table) for p in planned]
        lookups = [(rarest.found_match(table), int(len(planned) == 1))]
        if len(planned) > 1 and all(every):
            lookups.insert(0, (" AND ".join(f"({m})" for m in every), 1))
        for n, (match, complete) in enumerate(lookups):
            if match is None:
                continue
            key = f"latest_{table}_{n}"
            entity = _ENTITY_OF[table]
            # the filters apply while reading, so that a rare type still fills the window
            latest = (
                f"SELECT {entity}, {complete}, {int(table == 'entities_fts')} FROM {table} "
                f"WHERE {table} MATCH :{key} AND {filters.condition(entity)} "
                f"ORDER BY {table}.rowid DESC"
            )
            if complete and len(planned) > 1:  # the latest rows of so many distinct entities
                sql = f"SELECT * FROM (SELECT DISTINCT * FROM ({latest}) LIMIT :complete_window)"
            else:
                sql = f"SELECT * FROM ({latest} LIMIT :window)"
            hits.append(Sql(sql, {key: match}))
    if not hits:  # none of the words is anywhere
        return Ranking([], 0, lower_bound=True)
    union = _joined(hits, "\nUNION ALL ")
    rows: list[tuple[int, int]] = vocab.db.execute(  # type: ignore[assignment]
        _LATEST_SQL.format(with_sql=filters.with_sql(), hits=union.sql),
        {
            **union.params,
            **filters.params,
            "window": window,
            "complete_window": LATEST_COMPLETE_FACTOR * limit,
        },
    ).fetchall()
    return Ranking(
        [r[0] for r in rows[:limit]],
        len(rows),
        lower_bound=True,
        complete=sum(1 for r in rows if r[1]),
    )


def _corrected_term(term: search.Term, corrections: dict[str, str]) -> search.Term:
    if term.synonym:
        return term
    return replace(term, words=tuple(corrections.get(w, w) for w in term.words))


def _corrected(
    vocab: vocabulary.Lookup, query: search.Query, limit: int, types: list[str]
) -> Ranking | None:
    """Nothing matched: search again with misspelled words replaced by indexed ones."""
    corrections = {
        w: s for w in dict.fromkeys(query.words) if (s := vocab.closest_word(w)) is not None
    }
    if not corrections:
        return None
    fixed = search.Query(
        required=[
            search.Clause(
                tuple(
                    t
                    if t.synonym
                    else replace(t, words=tuple(corrections.get(w, w) for w in t.words))
                    for t in c.terms
                )
            )
            for c in query.required
        ],
        excluded=query.excluded,
        entity_types=query.entity_types,
        excluded_types=query.excluded_types,
        text=query.text,
    )
    ranking = _ranked(vocab, fixed, limit, types)
    ranking.searched = fixed
    ranking.corrected = search.corrected_text(query, corrections)
    ranking.suggestions = list(dict.fromkeys(corrections.values()))
    return ranking


# ---- snippets --------------------------------------------------------------------------------


_SNIPPETS_SQL = """\
SELECT ids.value, (
    SELECT json_group_array(json_array(rowid, fragment)) FROM (
        SELECT rowid, snippet(observations_fts, 0, :start, :end, '…', :tokens) AS fragment
        FROM observations_fts
        WHERE observations_fts MATCH :match
          AND rowid >= ids.value << :bits AND rowid < (ids.value + 1) << :bits
        LIMIT :candidates))
FROM json_each(:ids) AS ids"""
"""The matching fragments of each entity, a few at most: an entity's observations are one
rowid range, which FTS5 seeks to directly, so the cost is per entity shown, not per row
matching anywhere. No bm25 (it reads every row of every word of the query to weigh them)."""


def snippets(
    vocab: vocabulary.Lookup,
    query: search.Query,
    ids: list[int],
    marks: tuple[str, str] = SNIPPET_MARKS,
) -> dict[int, list[str]]:
    """Up to :data:`SNIPPETS_PER_ENTITY` matching observation fragments of each of ``ids``,
    those holding the most matches first, the matches between ``marks``.

    The query's words, forms and synonyms first; partial words (an OR of up to 32 indexed
    words each, which every entity's seek would have to open) only for the entities that have
    no other match: one statement, two when some entity matched by partial words only.
    """
    arms = [a for c in query.required for a in _arms(vocab, c) if a.table == "observations_fts"]
    found: dict[int, list[tuple[int, int, str]]] = {entity_id: [] for entity_id in ids}
    whole = [a for a in arms if a.kind != "partial"]
    for chosen in (whole, arms):
        todo = [entity_id for entity_id, rows in found.items() if not rows]
        if not chosen or not todo:
            continue
        _fragments(vocab, " OR ".join(f"({a.match})" for a in chosen), todo, found, marks)
        if len(chosen) == len(arms):
            break
    return {
        entity_id: [fragment for _, _, fragment in sorted(rows)[:SNIPPETS_PER_ENTITY]]
        for entity_id, rows in found.items()
    }


def _fragments(
    vocab: vocabulary.Lookup,
    expression: str,
    ids: list[int],
    found: dict[int, list[tuple[int, int, str]]],
    marks: tuple[str, str],
) -> None:
    start, end = marks
    for entity_id, fragments in vocab.db.execute(
        _SNIPPETS_SQL,
        {
            "bits": OBSERVATION_ID_BITS,
            "start": start,
            "end": end,
            "tokens": SNIPPET_TOKENS,
            "match": expression,
            "candidates": SNIPPET_CANDIDATES,
            "ids": json.dumps(ids),
        },
    ):
        for rowid, fragment in json.loads(fragments):
            # the fragments holding the most matches first, then in their entity's order
            found[entity_id].append((-fragment.count(start), rowid, fragment))
