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
from dataclasses import dataclass
from pathlib import Path

import apsw

from memfts import search
from memfts.database import Database
from memfts.errors import (
    DatabaseOpenError,
    EntityNotFoundError,
    InputTooLargeError,
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
    busy_timeout_s: float = 60.0
    """How long a write waits for other processes' writes before failing as busy."""

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Limits:
        env = os.environ if environ is None else environ
        values: dict[str, float] = {}
        for name, field in cls.__dataclass_fields__.items():
            raw = env.get(f"MEMFTS_{name.upper()}")
            if raw is not None:
                kind = float if field.type == "float" else int
                try:
                    values[name] = kind(raw)
                except ValueError:
                    raise DatabaseOpenError(
                        f"MEMFTS_{name.upper()}={raw!r} is not a number"
                    ) from None
        return cls(**values)  # type: ignore[arg-type]


KNOWN_WORDS_CACHE = 200_000
"""Most words one process remembers as already in ``search_terms`` (about 15 MB)."""


def _now_us() -> int:
    return time.time_ns() // 1000


def _insert_observations(db: apsw.Connection, entity_id: int, contents: Iterable[str]) -> list[str]:
    """Append the contents the entity lacks, in order; return those actually added."""
    return [
        content
        for content in contents
        if db.execute(
            "INSERT INTO observations(entity_id, content) VALUES (?, ?) "
            "ON CONFLICT DO NOTHING RETURNING id",
            (entity_id, content),
        ).get
        is not None
    ]


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

    def close(self) -> None:
        self._db.close()

    # ---- checks on input size ------------------------------------------------------------

    def _check_batch(self, what: str, items: Sequence[object]) -> None:
        if len(items) > self.limits.max_items_per_call:
            raise InputTooLargeError(
                f"{len(items)} {what} in one call; the limit is {self.limits.max_items_per_call}"
                " (MEMFTS_MAX_ITEMS_PER_CALL)"
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
        created: list[Entity] = []
        now = _now_us()
        with self._write() as db:
            for entity in entities:
                entity_id = db.execute(
                    "INSERT INTO entities(name, entity_type, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO NOTHING RETURNING id",
                    (entity.name, entity.entityType, now),
                ).get
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
        created: list[Relation] = []
        with self._write() as db:
            for r in relations:
                new = db.execute(
                    "INSERT INTO relations(from_name, to_name, relation_type) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING RETURNING id",
                    (r.from_, r.to, r.relationType),
                ).get
                if new is not None:
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
        deleted: list[str] = []
        not_found: list[str] = []
        with self._write() as db:
            for name in names:
                gone = db.execute("DELETE FROM entities WHERE name = ? RETURNING id", (name,)).get
                # relations go even when the entity never existed: they named it, it is gone
                db.execute("DELETE FROM relations WHERE from_name = ?1 OR to_name = ?1", (name,))
                (deleted if gone is not None else not_found).append(name)
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
                before = db.total_changes()
                db.executemany(
                    "DELETE FROM observations WHERE entity_id = ? AND content = ?",
                    ((entity_id, content) for content in d.observations),
                )
                removed = db.total_changes() - before
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
                entity_id = db.execute(
                    "INSERT INTO entities(name, entity_type, updated_at) VALUES (?, ?, ?) "
                    "ON CONFLICT(name) DO NOTHING RETURNING id",
                    (entity.name, entity.entityType, now),
                ).get
                if entity_id is None:
                    counts.entities_skipped += 1
                    entity_id = db.execute(
                        "SELECT id FROM entities WHERE name = ?", (entity.name,)
                    ).get
                else:
                    counts.entities_added += 1
                added = len(_insert_observations(db, entity_id, entity.observations))
                counts.observations_added += added
                counts.observations_skipped += len(entity.observations) - added
            for r in relations:
                new = db.execute(
                    "INSERT INTO relations(from_name, to_name, relation_type) VALUES (?, ?, ?) "
                    "ON CONFLICT DO NOTHING RETURNING id",
                    (r.from_, r.to, r.relationType),
                ).get
                if new is None:
                    counts.relations_skipped += 1
                else:
                    counts.relations_added += 1
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
        self, query: str, limit: int = 20, entity_type: str | None = None
    ) -> SearchResult:
        """Ranked full-text search; see ``search.py`` for how text becomes a query.

        Entities containing every word of the query (in any field, any order, as a whole
        word, a word start, or inside a longer word) come first, best bm25 first; if no
        entity has them all, entities with some of the words, most words first. An empty
        query lists the most recently changed entities.
        """
        if limit < 1 or limit > self.limits.max_search_limit:
            raise InputTooLargeError(
                f"limit must be between 1 and {self.limits.max_search_limit}, not {limit}"
            )
        with self._read() as db:
            if not query.strip():
                ids, total = self._recent(db, limit, entity_type)
            else:
                ids, total = self._ranked(db, query, limit, entity_type)
            by_id = dict(zip(sorted(ids), self._entities(db, ids), strict=True))
            entities = [by_id[i] for i in ids]
            return SearchResult(
                entities=entities, relations=self._relations_of(db, entities), total=total
            )

    def _recent(
        self, db: apsw.Connection, limit: int, entity_type: str | None
    ) -> tuple[list[int], int]:
        ids = [
            row_id
            for (row_id,) in db.execute(
                "SELECT id FROM entities WHERE ?1 IS NULL OR entity_type = ?1 COLLATE NOCASE "
                "ORDER BY updated_at DESC, id DESC LIMIT ?2",
                (entity_type, limit),
            )
        ]
        total = db.execute(
            "SELECT count(*) FROM entities WHERE ?1 IS NULL OR entity_type = ?1 COLLATE NOCASE",
            (entity_type,),
        ).get
        return ids, int(total)

    def _ranked(
        self, db: apsw.Connection, query: str, limit: int, entity_type: str | None
    ) -> tuple[list[int], int]:
        words = search.query_words(self._query_words, query)
        if not words:
            return [], 0
        arms: list[str] = []
        params: list[object] = []
        for index, word in enumerate(words):
            containing = self._words_containing(db, word)
            for expression, factor in (
                (search.exact_expression(word), 1.0),
                (search.partial_expression(word, containing), search.PARTIAL_MATCH_FACTOR),
            ):
                arms.append(
                    "SELECT rowid, ?, ? * bm25(entities_fts, ?, ?) FROM entities_fts "
                    "WHERE entities_fts MATCH ?"
                )
                params += [index, factor, *search.ENTITY_WEIGHTS, expression]
                arms.append(
                    "SELECT o.entity_id, ?, ? * bm25(observations_fts) FROM observations_fts "
                    "JOIN observations o ON o.id = observations_fts.rowid "
                    "WHERE observations_fts MATCH ?"
                )
                params += [index, factor, expression]
        sql = (
            "WITH hits(entity_id, word, score) AS (" + " UNION ALL ".join(arms) + "), "
            "per_word AS (SELECT entity_id, word, min(score) AS score FROM hits "
            "GROUP BY entity_id, word), "
            "per_entity AS (SELECT entity_id, count(*) AS words, sum(score) AS score "
            "FROM per_word GROUP BY entity_id) "
            "SELECT p.entity_id, p.words, count(*) OVER (PARTITION BY p.words), count(*) OVER () "
            "FROM per_entity p JOIN entities e ON e.id = p.entity_id "
            "WHERE ? IS NULL OR e.entity_type = ? COLLATE NOCASE "
            "ORDER BY p.words DESC, p.score, p.entity_id DESC LIMIT ?"
        )
        rows: list[tuple[int, int, int, int]] = db.execute(  # type: ignore[assignment]
            sql, (*params, entity_type, entity_type, limit)
        ).fetchall()
        if not rows:
            return [], 0
        best = rows[0][1]
        if best == len(words):  # some entities have every word: they are the answer
            return [r[0] for r in rows if r[1] == best], rows[0][2]
        return [r[0] for r in rows], rows[0][3]

    def _words_containing(self, db: apsw.Connection, word: str) -> list[str]:
        """Indexed words containing ``word`` past its first letter (word starts use ``word*``)."""
        probe = search.infix_probe(word)
        if probe is None:
            return []
        return [
            term
            for (term,) in db.execute(
                "SELECT term FROM search_terms WHERE id IN (SELECT rowid FROM search_terms_trigram "
                "WHERE search_terms_trigram MATCH ?) AND substr(term, 1, ?) != ? "
                "ORDER BY length(term) LIMIT ?",
                (probe, len(word), word, search.MAX_INFIX_EXPANSIONS),
            )
        ]

    def _entities(self, db: apsw.Connection, ids: Sequence[int] | None) -> list[Entity]:
        """Entities by id (all when ``ids`` is None) in creation order, observations in order."""
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
        return [
            Entity.model_construct(name=name, entityType=etype, observations=observations[eid])
            for eid, name, etype in rows
        ]

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
        """Run SQLite's ``integrity_check`` and the FTS5 ``integrity-check`` of every index."""
        with self._read() as db:
            problems = [row[0] for row in db.execute("PRAGMA integrity_check(20)")]
            counts = db.execute(
                "SELECT (SELECT count(*) FROM entities), (SELECT count(*) FROM observations), "
                "(SELECT count(*) FROM relations)"
            ).get
        fts_errors = []
        with self._write() as db:  # the FTS5 check is an INSERT command: it needs a write txn
            for table in _FTS_TABLES:
                try:
                    db.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")
                except apsw.Error as exc:
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
