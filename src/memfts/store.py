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

from memfts import ranking, search, vocabulary
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


OBSERVATION_ID_BITS = ranking.OBSERVATION_ID_BITS


def _now_us() -> int:
    return time.time_ns() // 1000


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
        self._known_words = vocabulary.KnownWords()
        vocabulary.prepare(self._db.conn)

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
            words = self._known_words.remember(
                db,
                (t for e in created for t in (e.name, e.entityType, *e.observations)),
            )
        self._known_words.learned(words)
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
            words = self._known_words.remember(
                db, (c for r in results for c in r.addedObservations)
            )
        self._known_words.learned(words)
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
            words = self._known_words.remember(
                db, (t for e in entities for t in (e.name, e.entityType, *e.observations))
            )
        self._known_words.learned(words)
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
        """Ranked full-text search: parse (``search.py``) -> rank (``ranking.py``) -> load.

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
        parsed = search.parse(query)
        with self._read() as db:
            vocab = vocabulary.Lookup(db)
            found = ranking.rank(vocab, parsed, limit, entity_type)
            ids = found.ids + self._neighbours(db, found.ids, depth, limit)
            by_id = self._entities_by_id(db, ids)
            entities = [by_id[i] for i in ids]
            searched = found.searched or parsed
            fragments = (
                ranking.snippets(vocab, searched, ids)
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
                total=found.total,
                totalIsLowerBound=found.lower_bound or None,
                correctedQuery=found.corrected,
                suggestions=found.suggestions or None,
            )

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
