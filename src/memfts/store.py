"""The knowledge-graph store: one method per operation, each one transaction.

The official memory server's semantics (names unique, observations ordered and unique per
entity, relations by name) on top of :mod:`memfts.database`; queries sit beside the one
method that runs them.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import apsw

from memfts import search
from memfts.database import Database
from memfts.errors import (
    DatabaseOpenError,
    EntityNotFoundError,
    InputTooLargeError,
    MemftsError,
)
from memfts.models import (
    AddedObservations,
    Entity,
    HealthReport,
    ImportCounts,
    KnowledgeGraph,
    ObservationAddition,
    ObservationDeletion,
    Relation,
    SearchHit,
    SearchResult,
    StoreStats,
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Limits:
    """Size limits on what one call may store. Override with ``MEMFTS_MAX_*`` variables."""

    max_name_chars: int = 1_000
    max_observation_chars: int = 100_000
    max_items_per_call: int = 10_000
    max_search_limit: int = 10_000
    max_call_chars: int = 10_000_000
    """All the text one write call carries (names, types and observations together)."""
    busy_timeout_s: float = 60.0
    """How long a write waits for other processes' writes before failing as busy."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for name, spec in cls.__dataclass_fields__.items():
            raw = env.get(f"MEMFTS_{name.upper()}")
            if raw is not None:
                kind = float if spec.type == "float" else int
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise DatabaseOpenError(
                        f"MEMFTS_{name.upper()}={raw!r} is not a number"
                    ) from None
        return cls(**values)  # type: ignore[arg-type]


COMMON_CLAUSE_ROWS = 4_000
"""Rows past which a query word is too common to rank on; see :meth:`Store._ranked`."""

PARTIAL_ARM_ROWS = 1_000
"""Most rows one widening of a partial word contributes (the latest): partial hits rank low,
and a short fragment can widen to words used everywhere."""

SNIPPETS_PER_ENTITY = 3

FLAT_SCORE = -1.0
"""Score of an infix hit before its discount; whole-word bm25 scores run about -3 to -15."""

KNOWN_WORDS_CACHE = 200_000
"""Most words one process remembers as already in ``search_terms`` (about 15 MB)."""


def _fold_sql(*args: apsw.SQLiteValue) -> apsw.SQLiteValue:
    (value,) = args
    return search.fold(value) if isinstance(value, str) else value


def _now_us() -> int:
    return time.time_ns() // 1000


OBSERVATION_ID_BITS = 20
"""An observation's id is ``entity_id << 20`` plus its position (sql/001): a full-text hit's
entity is its rowid shifted, with no lookup, and an entity holds at most 2^20 observations."""

_OBSERVATION_ENTITY = f"(observations_fts.rowid >> {OBSERVATION_ID_BITS})"


def _insert_entity(db: apsw.Connection, entity: Entity, now: int) -> int | None:
    """Create the entity (without observations) unless its name exists; its id if created."""
    entity_id = db.execute(
        "INSERT INTO entities(name, entity_type, updated_at) VALUES (?, ?, ?) "
        "ON CONFLICT(name) DO NOTHING RETURNING id",
        (entity.name, entity.entityType, now),
    ).get
    return None if entity_id is None else int(entity_id)


def _insert_relation(db: apsw.Connection, relation: Relation) -> bool:
    """Create the relation unless it exists; True if created."""
    return (
        db.execute(
            "INSERT INTO relations(from_name, to_name, relation_type) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING id",
            (relation.from_, relation.to, relation.relationType),
        ).get
        is not None
    )


def _insert_observations(db: apsw.Connection, entity_id: int, contents: Iterable[str]) -> list[str]:
    """Append the contents the entity lacks, in order; return those actually added."""
    first = entity_id << OBSERVATION_ID_BITS
    end = first + (1 << OBSERVATION_ID_BITS)
    next_id: int = db.execute(
        "SELECT coalesce(max(id) + 1, ?1) FROM observations WHERE id >= ?1 AND id < ?2",
        (first, end),
    ).get
    added: list[str] = []
    for content in contents:
        if next_id >= end:
            name = db.execute("SELECT name FROM entities WHERE id = ?", (entity_id,)).get
            raise InputTooLargeError(
                f"entity {name!r} has been given {(1 << OBSERVATION_ID_BITS) - 1:,} observations "
                "over its life, the most one entity can take; store more on a new entity"
            )
        if db.execute(
            "INSERT INTO observations(id, entity_id, content) VALUES (?, ?, ?) "
            "ON CONFLICT DO NOTHING RETURNING id",
            (next_id, entity_id, content),
        ).get:
            added.append(content)
            next_id += 1
    return added


@dataclass
class _Ranking:
    """Entity ids in rank order and what the search found out on the way."""

    ids: list[int]
    total: int
    lower_bound: bool = False
    corrected: str | None = None
    suggestions: list[str] = field(default_factory=list)
    complete: bool = False
    """Every clause of the query matched the entities found (no fallback to some words)."""
    searched: search.Query | None = None
    """The query actually searched, when it is not the one parsed (a corrected query)."""


_ARM_TABLES = {
    # table: (the entity id of a hit, what to select from, its bm25 call)
    "entities_fts": ("entities_fts.rowid", "entities_fts", "bm25(entities_fts, ?, ?)"),
    "observations_fts": (
        _OBSERVATION_ENTITY,
        "observations_fts",
        "bm25(observations_fts)",
    ),
}


@dataclass(frozen=True)
class _Arm:
    """One FTS5 lookup contributing to a clause: a table, a safe expression and its weight."""

    table: str
    match: str
    factor: float
    scored: bool = True
    """False for infix expansions: an OR of many words, where bm25 would first count the
    matches of every one of them; a flat score keeps such an arm cheap."""

    @property
    def entity_sql(self) -> str:
        return _ARM_TABLES[self.table][0]

    @property
    def from_sql(self) -> str:
        return _ARM_TABLES[self.table][1]

    def scored_sql(self, among: str | None = None) -> str:
        """``(entity_id, clause, score, whole)`` rows; binds the clause index, then
        :meth:`params`. ``whole`` is 1 for a whole-word hit, 0 for a partial-word one.
        ``among`` names a table of candidate entity ids to keep only their rows (scoring no
        others)."""
        if not self.scored:
            keep = f" WHERE entity_id IN {among}" if among else ""
            return (
                f"SELECT * FROM (SELECT {self.entity_sql} AS entity_id, ?, ? * {FLAT_SCORE}, 0 "
                f"FROM {self.from_sql} WHERE {self.table} MATCH ? "
                f"ORDER BY {self.table}.rowid DESC LIMIT {PARTIAL_ARM_ROWS}){keep}"
            )
        # unary + : filter the FTS hits, never drive FTS5 by rowid (one query per candidate)
        keep = f" AND +{self.entity_sql} IN {among}" if among else ""
        return (
            f"SELECT {self.entity_sql}, ?, ? * {_ARM_TABLES[self.table][2]}, 1 "
            f"FROM {self.from_sql} WHERE {self.table} MATCH ?{keep}"
        )

    def entities_sql(self) -> str:
        """The entity ids of the arm's hits; binds :meth:`match_params`."""
        if not self.scored:
            return (
                f"SELECT * FROM (SELECT {self.entity_sql} FROM {self.from_sql} "
                f"WHERE {self.table} MATCH ? "
                f"ORDER BY {self.table}.rowid DESC LIMIT {PARTIAL_ARM_ROWS})"
            )
        return f"SELECT {self.entity_sql} FROM {self.from_sql} WHERE {self.table} MATCH ?"

    def params(self) -> list[object]:
        scored = self.scored and self.table == "entities_fts"
        weights = list(search.ENTITY_WEIGHTS) if scored else []
        return [self.factor, *weights, self.match]


def _hits_sql(selects: list[str]) -> str:
    """The ``hits(entity_id, clause, score, whole)`` CTE: every arm's rows, computed once
    (MATERIALIZED: inlined into a single-arm query, SQLite would lose the bm25 context)."""
    return (
        "hits(entity_id, clause, score, whole) AS MATERIALIZED ("
        + " UNION ALL ".join(selects)
        + ")"
    )


_PER_ENTITY_SQL = (
    "per_clause AS (SELECT entity_id, clause, min(score) AS score, max(whole) AS whole "
    "FROM hits GROUP BY entity_id, clause), "
    "per_entity AS (SELECT entity_id, count(*) AS clauses, sum(whole) AS wholes, "
    "sum(score) AS score FROM per_clause GROUP BY entity_id)"
)
"""Per entity: how many clauses it matched, how many of them by whole words, the summed best
score of each clause (bm25 is negative: lower is better)."""

_PER_ENTITY_ONE_CLAUSE_SQL = (
    "per_entity AS (SELECT entity_id, 1 AS clauses, max(whole) AS wholes, min(score) AS score "
    "FROM hits GROUP BY entity_id)"
)
""":data:`_PER_ENTITY_SQL` for a query of one clause, in one grouping instead of two."""


@dataclass(frozen=True)
class _Sql:
    sql: str
    params: list[object]


class Store:
    """The memory graph in one SQLite file. Safe to share between processes.

    Every public method is one transaction (see :class:`~memfts.database.Database`).
    """

    def __init__(self, path: str | os.PathLike[str], limits: Limits | None = None) -> None:
        self.path = Path(path)
        self.limits = limits or Limits()
        self._db = Database(self.path, busy_timeout_s=self.limits.busy_timeout_s)
        self._write = self._db.write
        self._read = self._db.read
        self._query_words = search.make_tokenizer(self._db.conn, query=True)
        self._document_words = search.make_tokenizer(self._db.conn, query=False)
        self._known_words: set[str] = set()
        self._spellings: dict[str, str | None] = {}
        """:meth:`_closest_word` answers within one search (suggestions, then correction);
        emptied when the next search starts, since writes change the vocabulary."""
        conn = self._db.conn
        # Unicode case folding for entity types (SQL's NOCASE folds ASCII only), and the word
        # statistics typo suggestions rank by; both live on this connection only, not in the file.
        conn.create_scalar_function("memfts_fold", _fold_sql, 1, deterministic=True)
        for table in ("observations", "entities"):
            conn.execute(
                f"CREATE VIRTUAL TABLE IF NOT EXISTS temp.{table}_vocab "
                f"USING fts5vocab(main, {table}_fts, row)"
            )

    def close(self, wait_s: float = 30.0) -> None:
        """Close the database (see :meth:`Database.close`); safe to call twice."""
        self._db.close(wait_s)

    # ---- checks on input size ------------------------------------------------------------

    def _check_batch(self, what: str, items: Sequence[object]) -> None:
        if len(items) > self.limits.max_items_per_call:
            raise InputTooLargeError(
                f"{len(items)} {what} in one call; the limit is {self.limits.max_items_per_call}"
                " (MEMFTS_MAX_ITEMS_PER_CALL)"
            )

    def _check_call_chars(self, texts: Iterable[str]) -> None:
        total = sum(map(len, texts))
        if total > self.limits.max_call_chars:
            raise InputTooLargeError(
                f"this call carries {total:,} characters of text; the limit is "
                f"{self.limits.max_call_chars:,} per call (MEMFTS_MAX_CALL_CHARS): "
                "split it into several calls"
            )

    def _check_name(self, what: str, value: str) -> None:
        if len(value) > self.limits.max_name_chars:
            raise InputTooLargeError(
                f"{what} {value[:40]!r}... is {len(value)} characters; the limit is "
                f"{self.limits.max_name_chars} (MEMFTS_MAX_NAME_CHARS)"
            )

    def _check_observations(self, owner: str, contents: Sequence[str]) -> None:
        self._check_batch("observations", contents)
        for content in contents:
            if len(content) > self.limits.max_observation_chars:
                raise InputTooLargeError(
                    f"an observation of {owner!r} is {len(content)} characters; the limit is "
                    f"{self.limits.max_observation_chars} (MEMFTS_MAX_OBSERVATION_CHARS)"
                )

    def _remember_words(self, db: apsw.Connection, texts: Iterable[str]) -> set[str]:
        """Record the indexed words of new text, so partial-word search can widen to them.

        Returns the words written; pass them to :meth:`_learned` once the transaction commits.
        """
        words: set[str] = set()
        for text in texts:
            words.update(self._document_words(text))
        words -= self._known_words
        db.executemany(
            "INSERT INTO search_terms(term) VALUES (?) ON CONFLICT(term) DO NOTHING",
            ((w,) for w in words),
        )
        return words

    def _learned(self, words: set[str]) -> None:
        # Words are never removed from search_terms, so a committed word stays known; the cache
        # only spares lookups, and is bounded so a huge vocabulary cannot grow memory.
        if len(self._known_words) + len(words) <= KNOWN_WORDS_CACHE:
            self._known_words |= words

    # ---- writes --------------------------------------------------------------------------

    def create_entities(self, entities: Sequence[Entity]) -> list[Entity]:
        """Create the entities whose names are new; return those created.

        A name that exists already, or repeats earlier in the same call, is skipped.
        """
        self._check_batch("entities", entities)
        for entity in entities:
            self._check_name("entity name", entity.name)
            self._check_name("entity type", entity.entityType)
            self._check_observations(entity.name, entity.observations)
        self._check_call_chars(t for e in entities for t in (e.name, e.entityType, *e.observations))
        created: list[Entity] = []
        now = _now_us()
        with self._write() as db:
            for entity in entities:
                entity_id = _insert_entity(db, entity, now)
                if entity_id is None:
                    continue
                observations = _insert_observations(db, entity_id, entity.observations)
                created.append(entity.model_copy(update={"observations": observations}))
            words = self._remember_words(
                db,
                (t for e in created for t in (e.name, e.entityType, *e.observations)),
            )
        self._learned(words)
        return created

    def create_relations(self, relations: Sequence[Relation]) -> list[Relation]:
        """Create the relations not already present; return those created.

        Endpoints need not exist yet: agents often relate entities before creating them.
        """
        self._check_batch("relations", relations)
        for r in relations:
            for what, value in (("from", r.from_), ("to", r.to), ("relationType", r.relationType)):
                self._check_name(f"relation {what}", value)
        self._check_call_chars(t for r in relations for t in (r.from_, r.to, r.relationType))
        created: list[Relation] = []
        with self._write() as db:
            for r in relations:
                if _insert_relation(db, r):
                    created.append(r)
        return created

    def add_observations(self, additions: Sequence[ObservationAddition]) -> list[AddedObservations]:
        """Append observations to existing entities; all or nothing.

        An observation the entity already has is skipped. If any entity is missing, the
        whole call fails with :class:`EntityNotFoundError` and nothing is saved.
        """
        self._check_batch("observation groups", additions)
        for a in additions:
            self._check_observations(a.entityName, a.contents)
        self._check_call_chars(c for a in additions for c in a.contents)
        results: list[AddedObservations] = []
        now = _now_us()
        with self._write() as db:
            for a in additions:
                entity_id = db.execute(
                    "SELECT id FROM entities WHERE name = ?", (a.entityName,)
                ).get
                if entity_id is None:
                    raise EntityNotFoundError(a.entityName)
                added = _insert_observations(db, entity_id, a.contents)
                if added:
                    db.execute("UPDATE entities SET updated_at = ? WHERE id = ?", (now, entity_id))
                results.append(AddedObservations(entityName=a.entityName, addedObservations=added))
            words = self._remember_words(db, (c for r in results for c in r.addedObservations))
        self._learned(words)
        return results

    def delete_entities(self, names: Sequence[str]) -> tuple[list[str], list[str]]:
        """Delete entities, their observations and every relation to or from them.

        Returns ``(deleted, not_found)``, each in the order given.
        """
        self._check_batch("names", names)
        present: dict[str, bool] = {}
        with self._write() as db:
            for name in dict.fromkeys(names):
                present[name] = (
                    db.execute("DELETE FROM entities WHERE name = ? RETURNING id", (name,)).get
                    is not None
                )
                # relations go even when the entity never existed: they named it, it is gone
                db.execute("DELETE FROM relations WHERE from_name = ?1 OR to_name = ?1", (name,))
        deleted = [n for n in names if present[n]]
        not_found = [n for n in names if not present[n]]
        return deleted, not_found

    def delete_observations(
        self, deletions: Sequence[ObservationDeletion]
    ) -> tuple[int, list[str]]:
        """Delete the given observations. Returns ``(deleted_count, missing_entities)``."""
        self._check_batch("deletion groups", deletions)
        count = 0
        missing: list[str] = []
        now = _now_us()
        with self._write() as db:
            for d in deletions:
                entity_id = db.execute(
                    "SELECT id FROM entities WHERE name = ?", (d.entityName,)
                ).get
                if entity_id is None:
                    missing.append(d.entityName)
                    continue
                removed = sum(
                    db.execute(
                        "DELETE FROM observations WHERE entity_id = ? AND content = ? RETURNING id",
                        (entity_id, content),
                    ).get
                    is not None
                    for content in dict.fromkeys(d.observations)
                )
                if removed:
                    count += removed
                    db.execute("UPDATE entities SET updated_at = ? WHERE id = ?", (now, entity_id))
        return count, missing

    def delete_relations(self, relations: Sequence[Relation]) -> int:
        """Delete the given relations; returns how many existed."""
        self._check_batch("relations", relations)
        count = 0
        with self._write() as db:
            for r in relations:
                gone = db.execute(
                    "DELETE FROM relations "
                    "WHERE from_name = ? AND to_name = ? AND relation_type = ? RETURNING id",
                    (r.from_, r.to, r.relationType),
                ).get
                count += gone is not None
        return count

    def import_batch(
        self, entities: Sequence[Entity], relations: Sequence[Relation]
    ) -> ImportCounts:
        """Merge a batch into the graph in one transaction; re-importing changes nothing.

        A new entity is created; an existing one keeps its type and gains the observations
        it lacks. Relations already present are skipped.
        """
        counts = ImportCounts()
        now = _now_us()
        with self._write() as db:
            for entity in entities:
                created_id = _insert_entity(db, entity, now)
                existing = created_id is None
                if created_id is None:
                    counts.entities_skipped += 1
                    entity_id = int(
                        db.execute("SELECT id FROM entities WHERE name = ?", (entity.name,)).get
                    )
                else:
                    counts.entities_added += 1
                    entity_id = created_id
                added = len(_insert_observations(db, entity_id, entity.observations))
                if added and existing:  # changed now, as with add_observations
                    db.execute("UPDATE entities SET updated_at = ? WHERE id = ?", (now, entity_id))
                counts.observations_added += added
                counts.observations_skipped += len(entity.observations) - added
            for r in relations:
                if _insert_relation(db, r):
                    counts.relations_added += 1
                else:
                    counts.relations_skipped += 1
            words = self._remember_words(
                db, (t for e in entities for t in (e.name, e.entityType, *e.observations))
            )
        self._learned(words)
        return counts

    # ---- reads ---------------------------------------------------------------------------

    def iter_graph(self, batch: int = 1000) -> Iterator[Entity | Relation]:
        """Every entity, then every relation, in creation order, from one snapshot.

        Streams in batches (constant memory on any size) for export. Holds a read snapshot
        until exhausted, so consume it promptly: a pinned snapshot stops WAL checkpoints.
        """
        with self._read() as db:
            last = 0
            while True:
                ids = [
                    row_id
                    for (row_id,) in db.execute(
                        "SELECT id FROM entities WHERE id > ? ORDER BY id LIMIT ?", (last, batch)
                    )
                ]
                if not ids:
                    break
                yield from self._entities(db, ids)
                last = ids[-1]
            for f, t, rt in db.execute(
                "SELECT from_name, to_name, relation_type FROM relations ORDER BY id"
            ):
                yield Relation.model_construct(from_=f, to=t, relationType=rt)

    def read_graph(self) -> KnowledgeGraph:
        """The whole graph: entities and relations in creation order."""
        with self._read() as db:
            entities = self._entities(db, None)
            relations = [
                Relation.model_construct(from_=f, to=t, relationType=rt)
                for f, t, rt in db.execute(
                    "SELECT from_name, to_name, relation_type FROM relations ORDER BY id"
                )
            ]
        return KnowledgeGraph(entities=entities, relations=relations)

    def open_nodes(self, names: Sequence[str]) -> KnowledgeGraph:
        """The named entities (unknown names skipped) and every relation touching them."""
        self._check_batch("names", names)
        with self._read() as db:
            ids = [
                row_id
                for (row_id,) in db.execute(
                    "SELECT id FROM entities WHERE name IN (SELECT value FROM json_each(?))",
                    (json.dumps(list(names)),),
                )
            ]
            entities = self._entities(db, ids)
            return KnowledgeGraph(entities=entities, relations=self._relations_of(db, entities))

    def search_nodes(
        self,
        query: str,
        limit: int = 20,
        entity_type: str | None = None,
        *,
        snippets: bool = False,
        compact: bool = False,
        depth: int = 0,
    ) -> SearchResult:
        """Ranked full-text search; ``search.py`` says how text becomes a query.

        Entities containing every word of the query (in any field, any order, as a whole
        word, a word start, or inside a longer word) come first, best bm25 first; if no
        entity has them all, entities with some of the words, most words first. An empty
        query lists the most recently changed entities. ``snippets`` adds the matching
        fragments; ``compact`` returns names, types and snippets only; ``depth`` (0-2) adds
        the entities related to the hits, after them.
        """
        if limit < 1 or limit > self.limits.max_search_limit:
            raise InputTooLargeError(
                f"limit must be between 1 and {self.limits.max_search_limit} "
                f"(MEMFTS_MAX_SEARCH_LIMIT), not {limit}"
            )
        if depth not in (0, 1, 2):
            raise InputTooLargeError(f"depth must be 0, 1 or 2, not {depth}")
        parsed = search.parse(query, self._query_words)
        types = [search.fold(t) for t in (entity_type, *parsed.entity_types) if t and t.strip()]
        with self._read() as db:
            self._spellings.clear()
            if parsed.required:
                ranking = self._ranked(db, parsed, limit, types)
                if ranking.total == 0 or (ranking.suggestions and not ranking.complete):
                    # nothing found, or a misspelt word kept the rest from matching together
                    corrected = self._corrected(db, parsed, limit, types)
                    if corrected and (ranking.total == 0 or corrected.complete):
                        ranking = corrected
            elif query.strip() and not (parsed.excluded or parsed.excluded_types or types):
                ranking = _Ranking([], 0)  # only punctuation: nothing to look for
            else:
                ranking = self._recent(db, parsed, limit, types)
            ids = ranking.ids + self._neighbours(db, ranking.ids, depth, limit)
            by_id = self._entities_by_id(db, ids)
            entities = [by_id[i] for i in ids]
            searched = ranking.searched or parsed
            fragments = (
                self._snippets(db, searched, ids)
                if (snippets or compact) and searched.required
                else {}
            )
            hits = [
                SearchHit(
                    name=e.name,
                    entityType=e.entityType,
                    observations=None if compact else e.observations,
                    snippets=fragments.get(entity_id, []) if (snippets or compact) else None,
                )
                for entity_id, e in zip(ids, entities, strict=True)
            ]
            return SearchResult(
                entities=hits,
                relations=None if compact else self._relations_of(db, entities),
                total=ranking.total,
                totalIsLowerBound=ranking.lower_bound or None,
                correctedQuery=ranking.corrected,
                suggestions=ranking.suggestions or None,
            )

    def _recent(
        self, db: apsw.Connection, parsed: search.Query, limit: int, types: list[str]
    ) -> _Ranking:
        """The most recently changed entities, filtered by type and exclusions."""
        excluded = self._excluded_sql(parsed)
        where = f"WHERE {self._type_sql(types)} AND id NOT IN ({excluded.sql})"
        params = (*types, *excluded.params)
        ids = [
            row_id
            for (row_id,) in db.execute(
                f"SELECT id FROM entities {where} ORDER BY updated_at DESC, id DESC LIMIT ?",
                (*params, limit),
            )
        ]
        total = db.execute(f"SELECT count(*) FROM entities {where}", params).get
        return _Ranking(ids, int(total))

    def _ranked(
        self, db: apsw.Connection, parsed: search.Query, limit: int, types: list[str]
    ) -> _Ranking:
        """bm25 over every arm of every clause, aggregated per entity.

        A clause matching more than :data:`COMMON_CLAUSE_ROWS` rows is too common to filter or
        rank on (its bm25 weight is near zero, and scoring it costs a pass over all its
        rows): it is dropped when the query has rarer clauses, and otherwise the most recent
        of its matches are returned, with ``total`` a lower bound.
        """
        arms = [(i, self._arms(db, clause)) for i, clause in enumerate(parsed.required)]
        # infix arms are left out of the estimate: probing them costs a lookup per word they
        # widen to, and a clause is common through its whole words or word starts anyway
        sizes = [
            sum(self._probe(db, arm) for arm in clause_arms if arm.scored)
            for _, clause_arms in arms
        ]
        rare = [(i, clause_arms) for i, clause_arms in arms if sizes[i] <= COMMON_CLAUSE_ROWS]
        # words that matched nothing, not even inside other words: candidates for "did you mean"
        empty_words = [
            w
            for (i, clause_arms), size in zip(arms, sizes, strict=True)
            if size == 0 and all(arm.scored for arm in clause_arms)
            for t in parsed.required[i].terms
            for w in t.words
        ]
        if not rare:
            return self._recent_matches(db, parsed, arms, sizes, limit, types)
        suggestions = self._suggestions(db, empty_words)
        if len(rare) > 1 and not empty_words:
            found = self._having_every_clause(db, parsed, rare, sizes, limit, types)
            if found is not None:
                found.suggestions = suggestions
                return found
        selects: list[str] = []
        params: list[object] = []
        for index, (_, clause_arms) in enumerate(rare):
            for arm in clause_arms:
                selects.append(arm.scored_sql())
                params += [index, *arm.params()]
        kept = self._kept_sql(parsed, types)
        if len(rare) == 1:  # one clause: no per-clause step, every entity has "all" clauses
            per_entity, complete = _PER_ENTITY_ONE_CLAUSE_SQL, "count(*) OVER ()"
            order = "p.wholes DESC, p.score"
        else:
            # No entity has every word (_having_every_clause found none): rank by the summed
            # scores, where a rare word weighs more than a common one, not by how many words
            # matched ("what editor does the user prefer" is about the editor, not "what").
            per_entity, complete = _PER_ENTITY_SQL, "count(*) OVER (PARTITION BY p.clauses)"
            order = "p.score"
        sql = (
            f"WITH {_hits_sql(selects)}, {per_entity} "
            f"SELECT p.entity_id, p.clauses, {complete}, "
            f"count(*) OVER () FROM per_entity p {kept.sql} "
            f"ORDER BY {order}, p.entity_id DESC LIMIT ?"
        )
        rows: list[tuple[int, int, int, int]] = db.execute(  # type: ignore[assignment]
            sql, (*params, *kept.params, limit)
        ).fetchall()
        if not rows:
            return _Ranking([], 0, suggestions=suggestions)
        best = rows[0][1]
        if best == len(rare):  # some entities have every clause: they are the answer
            return _Ranking(
                [r[0] for r in rows if r[1] == best],
                rows[0][2],
                suggestions=suggestions,
                complete=True,
            )
        return _Ranking([r[0] for r in rows], rows[0][3], suggestions=suggestions)

    def _having_every_clause(
        self,
        db: apsw.Connection,
        parsed: search.Query,
        rare: list[tuple[int, list[_Arm]]],
        sizes: list[int],
        limit: int,
        types: list[str],
    ) -> _Ranking | None:
        """The ranking of the entities matching every clause, or None if there are none.

        The entities of the rarest clause are the candidates; the other clauses are scored
        on the candidates' rows only, so a query pairing a rare word with frequent ones costs
        about what the rare word costs, not what the frequent ones do.
        """
        driver = min(range(len(rare)), key=lambda k: sizes[rare[k][0]])
        candidates = " UNION ".join(arm.entities_sql() for arm in rare[driver][1])
        params: list[object] = [arm.match for arm in rare[driver][1]]
        selects: list[str] = []
        for index, (_, clause_arms) in enumerate(rare):
            for arm in clause_arms:
                # the rarest clause's own hits are all candidates: no filter to build
                selects.append(arm.scored_sql(among=None if index == driver else "candidates"))
                params += [index, *arm.params()]
        kept = self._kept_sql(parsed, types)
        sql = (
            f"WITH candidates(entity_id) AS MATERIALIZED ({candidates}), "
            f"{_hits_sql(selects)}, {_PER_ENTITY_SQL} "
            f"SELECT p.entity_id, count(*) OVER () FROM per_entity p {kept.sql} "
            "AND p.clauses = ? ORDER BY p.wholes DESC, p.score, p.entity_id DESC LIMIT ?"
        )
        rows: list[tuple[int, int]] = db.execute(  # type: ignore[assignment]
            sql, (*params, *kept.params, len(rare), limit)
        ).fetchall()
        if not rows:
            return None
        return _Ranking([r[0] for r in rows], rows[0][1], complete=True)

    def _recent_matches(
        self,
        db: apsw.Connection,
        parsed: search.Query,
        arms: list[tuple[int, list[_Arm]]],
        sizes: list[int],
        limit: int,
        types: list[str],
    ) -> _Ranking:
        """For a query of only very common words: the latest matches of the rarest clause,
        whole-word hits in names first, then in observations, then partial-word hits."""
        rarest = min(range(len(arms)), key=lambda i: sizes[i])
        excluded = self._excluded_sql(parsed)
        found: dict[int, None] = {}
        window = max(4 * limit, 200)
        for arm in sorted(arms[rarest][1], key=lambda a: (-a.factor, a.table != "entities_fts")):
            rows = db.execute(
                f"SELECT e.id FROM {arm.from_sql} JOIN entities e ON e.id = {arm.entity_sql} "
                f"WHERE {arm.table} MATCH ? AND {self._type_sql(types, 'e.')} AND e.id NOT IN "
                f"({excluded.sql}) ORDER BY {arm.table}.rowid DESC LIMIT ?",
                (arm.match, *types, *excluded.params, window),
            )
            for (entity_id,) in rows:
                found.setdefault(entity_id, None)
            if len(found) >= limit:
                break
        ids = list(found)[:limit]
        return _Ranking(ids, max(len(found), sizes[rarest]), lower_bound=True, complete=True)

    def _corrected(
        self, db: apsw.Connection, parsed: search.Query, limit: int, types: list[str]
    ) -> _Ranking | None:
        """Nothing matched: search again with misspelled words replaced by indexed ones."""
        corrections = {
            w: s
            for w in dict.fromkeys(parsed.words)
            if (s := self._closest_word(db, w)) is not None
        }
        if not corrections:
            return None
        fixed = search.Query(
            required=[
                search.Clause(
                    tuple(
                        search.Term(
                            tuple(corrections.get(w, w) for w in t.words),
                            t.prefix,
                            t.exact,
                            t.name_only,
                        )
                        for t in c.terms
                    )
                )
                for c in parsed.required
            ],
            excluded=parsed.excluded,
            entity_types=parsed.entity_types,
            excluded_types=parsed.excluded_types,
        )
        ranking = self._ranked(db, fixed, limit, types)
        ranking.searched = fixed
        ranking.corrected = search.corrected_text(parsed, corrections)
        ranking.suggestions = list(dict.fromkeys(corrections.values()))
        return ranking

    def _suggestions(self, db: apsw.Connection, words: list[str]) -> list[str]:
        return search.dedupe([s for w in words if (s := self._closest_word(db, w)) is not None])

    def _closest_word(self, db: apsw.Connection, word: str) -> str | None:
        """The indexed word closest in spelling to an unknown ``word``, if close enough.

        Candidates: words sharing its trigrams (most typos), words with its first two letters
        and about its length (transpositions, which share no trigram in a short word), and
        words with the same spelling key (``yildiz`` for ``yıldız``, at distance 0).
        """
        if word not in self._spellings:
            self._spellings[word] = self._find_closest_word(db, word)
        return self._spellings[word]

    def _find_closest_word(self, db: apsw.Connection, word: str) -> str | None:
        if len(word) > search.MAX_CORRECTED_WORD:
            return None  # no word is that long: a pasted blob, not a typo
        grams = search.trigrams(word)
        if not grams or db.execute("SELECT 1 FROM search_terms WHERE term = ?", (word,)).get:
            return None
        key = search.loose_key(word)
        budget = search.typo_budget(word)
        start = word[:2]
        after = start[:-1] + chr(min(ord(start[-1]) + 1, 0x10FFFF))
        candidates = {
            term
            for (term,) in db.execute(
                "SELECT term FROM search_terms WHERE id IN (SELECT rowid FROM search_terms_trigram "
                "WHERE search_terms_trigram MATCH ?1 ORDER BY rank LIMIT 200) "
                "UNION SELECT term FROM (SELECT term FROM search_terms WHERE term >= ?2 "
                "AND term < ?3 AND length(term) BETWEEN ?4 AND ?5 LIMIT 500) "
                "UNION SELECT term FROM search_terms WHERE loose = ?6",
                (
                    " OR ".join(search.quote(g) for g in grams),
                    start,
                    after,
                    len(word) - budget,
                    len(word) + budget,
                    key,
                ),
            )
        }
        scored = [
            (d, -self._document_frequency(db, term), term)
            for term in candidates
            if (d := search.edit_distance(key, search.loose_key(term), budget)) <= budget
        ]
        scored = [s for s in scored if s[1] < 0]  # a word no entity uses any more is no help
        return min(scored)[2] if scored else self._split_word(db, word)

    def _split_word(self, db: apsw.Connection, word: str) -> str | None:
        """Two indexed words that ``word`` is written as, joined: ``signup`` for "sign up",
        ``userservice`` for ``user_service``. Searched as a phrase; the commonest pair wins."""
        if len(word) < 5 or search.has_cjk(word):
            return None
        splits = [
            (min(df_a, df_b), f"{a} {b}")
            for i in range(2, len(word) - 1)
            if (a := word[:i])
            and (b := word[i:])
            and (df_a := self._document_frequency(db, a))
            and (df_b := self._document_frequency(db, b))
        ]
        return max(splits)[1] if splits else None

    def _document_frequency(self, db: apsw.Connection, term: str) -> int:
        return int(
            db.execute(
                "SELECT coalesce((SELECT doc FROM temp.observations_vocab WHERE term = ?1), 0) "
                "+ coalesce((SELECT doc FROM temp.entities_vocab WHERE term = ?1), 0)",
                (term,),
            ).get
        )

    def _arms(self, db: apsw.Connection, clause: search.Clause) -> list[_Arm]:
        """The FTS lookups answering one clause: whole words, then partial words at a discount."""
        arms: list[_Arm] = []
        for term in clause.terms:
            tables = ("entities_fts",) if term.name_only else ("entities_fts", "observations_fts")
            column = "name : " if term.name_only else ""
            whole = search.whole_expression(term)
            if len(term.words) == 1 and not term.prefix:
                spellings = self._other_spellings(db, term.words[0])
                if spellings:
                    whole = search.any_of_expression([term.words[0], *spellings])
            expressions = [(whole, 1.0, True)]
            if len(term.words) == 1 and not (term.exact or term.prefix):
                containing = self._words_containing(db, term.words[0])
                if containing:
                    expressions.append(
                        (search.any_of_expression(containing), search.PARTIAL_MATCH_FACTOR, False)
                    )
            for expression, factor, scored in expressions:
                for table in tables:
                    arms.append(_Arm(table, f"{column}({expression})", factor, scored))
        return arms

    def _other_spellings(self, db: apsw.Connection, word: str) -> list[str]:
        """Indexed words spelt like ``word`` but for letters unicode61 does not fold:
        ``yıldız`` for ``yildiz``, ``καφές`` for ``καφες`` (see sql/002)."""
        return [
            term
            for (term,) in db.execute(
                "SELECT term FROM search_terms WHERE loose = ? AND term != ? LIMIT 16",
                (search.loose_key(word), word),
            )
        ]

    def _probe(self, db: apsw.Connection, arm: _Arm) -> int:
        """How many rows an arm matches, counting no further than just past the common bound."""
        return int(
            db.execute(
                f"SELECT count(*) FROM (SELECT 1 FROM {arm.table} WHERE {arm.table} MATCH ? "
                "LIMIT ?)",
                (arm.match, COMMON_CLAUSE_ROWS + 1),
            ).get
        )

    def _kept_sql(self, parsed: search.Query, types: list[str]) -> _Sql:
        """``JOIN ... WHERE ...`` keeping the ``per_entity p`` rows of the wanted types and
        without excluded terms."""
        if not types and not parsed.excluded and not parsed.excluded_types:
            return _Sql("WHERE 1", [])  # no lookup per entity
        excluded = self._excluded_sql(parsed)
        return _Sql(
            "JOIN entities e ON e.id = p.entity_id "
            f"WHERE {self._type_sql(types, 'e.')} AND p.entity_id NOT IN ({excluded.sql})",
            [*types, *excluded.params],
        )

    def _excluded_sql(self, parsed: search.Query) -> _Sql:
        """A subquery of the ids of entities matching any ``-excluded`` term or type."""
        selects = ["SELECT NULL WHERE 0"]
        params: list[object] = []
        for excluded_type in parsed.excluded_types:
            selects.append("SELECT id FROM entities WHERE memfts_fold(entity_type) = ?")
            params.append(search.fold(excluded_type))
        for clause in parsed.excluded:
            for term in clause.terms:
                column = "name : " if term.name_only else ""
                match = f"{column}({search.whole_expression(term)})"
                selects.append("SELECT rowid FROM entities_fts WHERE entities_fts MATCH ?")
                params.append(match)
                if not term.name_only:
                    selects.append(
                        f"SELECT {_OBSERVATION_ENTITY} FROM observations_fts "
                        "WHERE observations_fts MATCH ?"
                    )
                    params.append(match)
        return _Sql(" UNION ".join(selects), params)

    @staticmethod
    def _type_sql(types: list[str], prefix: str = "") -> str:
        """A condition keeping entities of every given (folded) type: all must agree."""
        return " AND ".join([f"memfts_fold({prefix}entity_type) = ?" for _ in types] or ["1"])

    def _words_containing(self, db: apsw.Connection, word: str) -> list[str]:
        """Indexed words that start with or contain ``word`` (not ``word`` itself): those
        starting with it first, then the shortest, at most :data:`search.MAX_INFIX_EXPANSIONS`.

        Read from the vocabulary table rather than with an FTS ``word*`` query: a prefix query
        merges the lists of every word with that prefix, which is slow for short prefixes.
        """
        cap = search.MAX_INFIX_EXPANSIONS
        if len(word) < search.MIN_INFIX_LENGTH and not search.has_cjk(word):
            return []
        starting = [
            term
            for (term,) in db.execute(
                "SELECT term FROM search_terms WHERE term > ?1 AND term < ?1 || char(1114111) "
                "ORDER BY length(term), term LIMIT ?2",
                (word, cap),
            )
        ]
        if len(word) >= search.MIN_INFIX_LENGTH:
            rows = db.execute(
                "SELECT term FROM search_terms WHERE id IN (SELECT rowid FROM search_terms_trigram "
                "WHERE search_terms_trigram MATCH ?) AND substr(term, 1, ?) != ? "
                "ORDER BY length(term), term LIMIT ?",
                (search.quote(word), len(word), word, cap - len(starting)),
            )
        else:  # one or two CJK characters: too short for the trigram index, scan the words
            rows = db.execute(
                "SELECT term FROM search_terms WHERE instr(term, ?) > 1 "
                "ORDER BY length(term), term LIMIT ?",
                (word, cap - len(starting)),
            )
        return starting + [term for (term,) in rows]

    def _snippets(
        self, db: apsw.Connection, parsed: search.Query, ids: list[int]
    ) -> dict[int, list[str]]:
        """Up to :data:`SNIPPETS_PER_ENTITY` best-matching observation fragments per entity."""
        expression = " OR ".join(
            f"({arm.match})"
            for clause in parsed.required
            for arm in self._arms(db, clause)
            if arm.table == "observations_fts"
        )
        if not expression:
            return {}
        start, end = search.SNIPPET_MARKS
        found: dict[int, list[str]] = {}
        for entity_id in ids:
            # the entity's observations are one rowid range, which FTS5 seeks to directly
            first = entity_id << OBSERVATION_ID_BITS
            found[entity_id] = [
                fragment
                for (fragment,) in db.execute(
                    "SELECT snippet(observations_fts, 0, ?, ?, '…', 16) FROM observations_fts "
                    "WHERE observations_fts MATCH ? AND rowid >= ? AND rowid < ? "
                    "ORDER BY bm25(observations_fts) LIMIT ?",
                    (
                        start,
                        end,
                        expression,
                        first,
                        first + (1 << OBSERVATION_ID_BITS),
                        SNIPPETS_PER_ENTITY,
                    ),
                )
            ]
        return found

    def _neighbours(self, db: apsw.Connection, ids: list[int], depth: int, limit: int) -> list[int]:
        """Entities related to ``ids`` within ``depth`` hops, nearest first, at most ``limit``."""
        seen = set(ids)
        frontier = ids
        found: list[int] = []
        for _ in range(depth):
            if not frontier or len(found) >= limit:
                break
            rows = db.execute(
                "WITH names(name) AS (SELECT name FROM entities "
                "WHERE id IN (SELECT value FROM json_each(?1))), "
                "linked(name, rid) AS (SELECT to_name, r.id FROM relations r JOIN names "
                "ON r.from_name = names.name UNION ALL SELECT from_name, r.id FROM relations r "
                "JOIN names ON r.to_name = names.name) "
                "SELECT e.id FROM linked JOIN entities e ON e.name = linked.name "
                "GROUP BY e.id ORDER BY min(linked.rid)",
                (json.dumps(frontier),),
            )
            frontier = [r for (r,) in rows if r not in seen]
            seen.update(frontier)
            found += frontier
        return found[:limit]

    def _entities(self, db: apsw.Connection, ids: Sequence[int] | None) -> list[Entity]:
        """Entities by id (all when ``ids`` is None) in creation order, observations in order."""
        return list(self._entities_by_id(db, ids).values())

    def _entities_by_id(self, db: apsw.Connection, ids: Sequence[int] | None) -> dict[int, Entity]:
        """Like :meth:`_entities`, keyed by id."""
        params: tuple[str, ...]
        where, params = "", ()
        if ids is not None:
            where = "WHERE {col} IN (SELECT value FROM json_each(?))"
            params = (json.dumps(list(ids)),)
        rows: list[tuple[int, str, str]] = db.execute(  # type: ignore[assignment]
            f"SELECT id, name, entity_type FROM entities {where.format(col='id')} ORDER BY id",
            params,
        ).fetchall()
        observations: dict[int, list[str]] = {row[0]: [] for row in rows}
        for entity_id, content in db.execute(
            f"SELECT entity_id, content FROM observations {where.format(col='entity_id')} "
            "ORDER BY id",
            params,
        ):
            observations[entity_id].append(content)
        return {
            eid: Entity.model_construct(name=name, entityType=etype, observations=observations[eid])
            for eid, name, etype in rows
        }

    def _relations_of(self, db: apsw.Connection, entities: Sequence[Entity]) -> list[Relation]:
        """Relations with either endpoint among ``entities``, in creation order."""
        names = json.dumps([e.name for e in entities])
        return [
            Relation.model_construct(from_=f, to=t, relationType=rt)
            for f, t, rt in db.execute(
                "SELECT from_name, to_name, relation_type FROM relations "
                "WHERE from_name IN (SELECT value FROM json_each(?1)) "
                "OR to_name IN (SELECT value FROM json_each(?1)) ORDER BY id",
                (names,),
            )
        ]

    # ---- upkeep --------------------------------------------------------------------------

    def check(self) -> HealthReport:
        """Run SQLite's ``integrity_check`` and the FTS5 ``integrity-check`` of every index.

        Made for a damaged file: every failure is reported in the result, none is raised.
        """
        try:
            with self._read() as db:
                problems = [row[0] for row in db.execute("PRAGMA integrity_check(20)")]
        except (apsw.Error, MemftsError) as exc:
            problems = [str(exc)]
        counts: list[int | None] = []
        for table in ("entities", "observations", "relations"):
            try:
                with self._read() as db:
                    counts.append(db.execute(f"SELECT count(*) FROM {table}").get)
            except (apsw.Error, MemftsError):
                counts.append(None)  # unreadable: the integrity report says why
        fts_errors = []
        for table in _FTS_TABLES:
            try:
                # the FTS5 check is an INSERT command: it needs a write transaction
                with self._write() as db:
                    db.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")
            except (apsw.Error, MemftsError) as exc:
                fts_errors.append(f"{table}: {exc}")
        sqlite_integrity = "ok" if problems == ["ok"] else "; ".join(problems)
        fts_integrity = "ok" if not fts_errors else "; ".join(fts_errors)
        return HealthReport(
            ok=sqlite_integrity == "ok" and fts_integrity == "ok",
            sqlite_integrity=sqlite_integrity,
            fts_integrity=fts_integrity,
            entities=counts[0],
            observations=counts[1],
            relations=counts[2],
        )

    def stats(self) -> StoreStats:
        """Counts, schema version and file sizes."""
        with self._read() as db:
            counts = db.execute(
                "SELECT (SELECT count(*) FROM entities), (SELECT count(*) FROM observations), "
                "(SELECT count(*) FROM relations), "
                "(SELECT count(DISTINCT entity_type) FROM entities)"
            ).get
            version = db.pragma("user_version")
        wal = Path(f"{self.path}-wal")
        return StoreStats(
            path=str(self.path),
            schema_version=version,
            entities=counts[0],
            observations=counts[1],
            relations=counts[2],
            entity_types=counts[3],
            db_bytes=self.path.stat().st_size,
            wal_bytes=wal.stat().st_size if wal.exists() else 0,
        )

    def optimize(self, vacuum: bool = False) -> None:
        """Merge FTS5 index segments, truncate the WAL and optionally VACUUM the file."""
        with self._write() as db:
            for table in _FTS_TABLES:
                db.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")
        if vacuum:
            self._db.vacuum()
        self._db.checkpoint("TRUNCATE")


_FTS_TABLES = ("entities_fts", "observations_fts", "search_terms_trigram")
