"""The knowledge-graph store: one method per operation, each one transaction.

The official memory server's semantics (names unique, observations ordered and unique per
entity, relations by name) on top of :mod:`memfts.database`; queries sit beside the one
method that runs them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from textwrap import dedent
from typing import Any, TypeVar, cast

import apsw
from pydantic import BaseModel, TypeAdapter, ValidationError

from memfts import ranking, search, vocabulary
from memfts.database import Database
from memfts.duplicates import name_key
from memfts.errors import (
    DatabaseOpenError,
    DuplicateObservationError,
    EntityNotFoundError,
    InputTooLargeError,
    InvalidInputError,
    MemftsError,
    NameTakenError,
    ObservationNotFoundError,
)
from memfts.models import (
    AddedObservations,
    DeleteReport,
    DuplicateCandidate,
    DuplicateGroup,
    Duplicates,
    EmbedCounts,
    Entity,
    EntityDetail,
    GraphNode,
    GraphPosition,
    GraphStep,
    HealthReport,
    ImportCounts,
    KnowledgeGraph,
    LinkedRelation,
    MergeReport,
    Name,
    Neighbourhood,
    ObservationAddition,
    ObservationDeletion,
    RecentEntity,
    Relation,
    RenameReport,
    SearchHit,
    SearchResult,
    SearchStep,
    SearchWalk,
    StoreStats,
    Text,
)
from memfts.semantic_setup import (
    INSTALL_HINT,
    SWITCH_ENV,
    FoundBy,
    SemanticSetupError,
    open_semantic,
)

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class Limits:
    """Size limits on what one call may store or return. Override with ``MEMFTS_MAX_*``
    variables."""

    max_name_chars: int = 1_000
    max_observation_chars: int = 100_000
    max_items_per_call: int = 10_000
    max_search_limit: int = 10_000
    max_call_chars: int = 10_000_000
    """All the text one write call carries (names, types and observations together)."""
    busy_timeout_s: float = 60.0
    """How long a write waits for other processes' writes before failing as busy."""
    search_timeout_s: float = 0.25
    """CPU seconds one search may rank before it is cut short with a normal result and a note;
    loading what was found, with its snippets and related entities, may take half as long
    again (the first 500 entities always). CPU time, so that a machine busy with other work
    does not cut ordinary searches short; the clock stops a search at four times as long."""
    max_result_chars: int = 30_000
    """Characters of text one ``read_graph``, ``open_nodes`` or ``search_nodes`` result may
    hold before it comes in pages (0: no bound, as the official server). About 8,000-10,000
    tokens of English JSON (3-4 characters a token): under Claude Code's 10,000-token warning,
    well under its 25,000-token cap and its 50,000-character switch to a file. Text in Chinese,
    Japanese or Korean costs about a token a character: set it lower for such a memory. See
    :mod:`memfts.results`."""

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

LOAD_CHUNK = 500
"""Entities a search loads (and makes snippets for) at a time, looking at its time limit in
between; the first this many are always loaded."""

LOAD_CHUNKS = (50, 100, 150, 200)
"""The sizes of the first chunks (together :data:`LOAD_CHUNK`): a page cut to the result
budget often holds a few dozen hits, and needs no more loaded."""


@dataclass(frozen=True)
class _Loading:
    """What a search walk loads for each hit (see :meth:`Store.walk_search`)."""

    limit: int
    depth: int
    compact: bool
    snippets: bool
    marks: tuple[str, str]
    start: int
    query: str
    """The query as typed (the snippets of hits found by meaning alone are matched to it)."""
    found_by: dict[int, list[FoundBy]]
    """What found each ranked hit, with search by meaning on (else empty)."""


def _now_us() -> int:
    return time.time_ns() // 1000


def _insert_entity(db: apsw.Connection, entity: Entity, now: int) -> int | None:
    """Create the entity (without observations) unless its name exists; its id if created."""
    # Only an INSERT of a new name: with AUTOINCREMENT (sql/007) even an INSERT that then
    # does nothing rewrites sqlite_sequence, so a call that adds nothing would change the file
    # (and wake every subscriber).
    entity_id = db.execute(
        "INSERT INTO entities(name, entity_type, updated_at) "
        "SELECT :name, :type, :now WHERE NOT EXISTS (SELECT 1 FROM entities WHERE name = :name) "
        "ON CONFLICT(name) DO NOTHING RETURNING id",
        {"name": entity.name, "type": entity.entityType, "now": now},
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

    def __init__(
        self,
        path: str | os.PathLike[str],
        limits: Limits | None = None,
        *,
        language: str | None = None,
        synonyms: str | None = None,
        read_only: bool | None = None,
        semantic: bool | None = None,
    ) -> None:
        """Open (or create) the store at ``path``.

        A file that cannot be written (its folder, disk or itself read-only) is opened for
        reading only, unless ``read_only`` says otherwise: it can be read and searched, and
        every write fails in one line (:class:`~memfts.errors.ReadOnlyStoreError`).

        ``language`` is the one word forms are made in (``MEMFTS_LANGUAGE``, default
        English; ``none`` for no word forms); every process sharing a file should use the same.
        ``synonyms`` names files of synonyms added to the shipped table (``MEMFTS_SYNONYMS``,
        separated by ``os.pathsep``).
        ``semantic``: search by meaning too (needs the ``semantic`` extra); None: as the
        environment says (on where the extra is installed, unless ``MEMFTS_SEMANTIC=off``).
        """
        self.path = Path(path)
        self.limits = limits or Limits()
        language = language or os.environ.get("MEMFTS_LANGUAGE") or vocabulary.DEFAULT_LANGUAGE
        try:
            self._stems = vocabulary.Stems(language)
        except ValueError as exc:
            raise DatabaseOpenError(f"MEMFTS_LANGUAGE: {exc}") from None
        extra = os.environ.get("MEMFTS_SYNONYMS", "") if synonyms is None else synonyms
        try:
            self._synonyms = vocabulary.Synonyms.load(
                self._stems, [Path(p) for p in extra.split(os.pathsep) if p]
            )
        except ValueError as exc:
            raise DatabaseOpenError(f"MEMFTS_SYNONYMS: {exc}") from None
        self._db = Database(
            self.path, busy_timeout_s=self.limits.busy_timeout_s, read_only=read_only
        )
        self.read_only = self._db.read_only
        self._write = self._db.write
        self._read = self._db.read
        self._known_words = vocabulary.KnownWords(self._stems)
        self._expansions = vocabulary.Expansions()
        self._db.on_connect(vocabulary.prepare)
        vocabulary.sync_stems(self._read, self._write, self._stems)
        try:
            self._semantic = (
                None
                if semantic is False
                else open_semantic(
                    self._db.conn, {**os.environ, SWITCH_ENV: "on"} if semantic else None
                )
            )
        except BaseException:
            self._db.close()
            raise

    async def run(self, call: Callable[..., T], /, *args: Any, writes: bool = False) -> T:
        """``call(*args)`` (a method of this store) in the store's threads, off the event loop;
        ``writes=True`` for calls that write. See :meth:`Database.run`."""
        return await self._db.run(call, *args, writes=writes)

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

    def _embed(self, db: apsw.Connection, entity_ids: Iterable[int]) -> None:
        """Re-embed the entities whose text this transaction changed (semantic extra only):
        sql/006's triggers deleted their vectors, the new ones commit with the text."""
        if self._semantic is not None:
            self._semantic.embed(db, list(entity_ids))

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
        created_ids: list[int] = []
        now = _now_us()
        with self._write() as db:
            for entity in entities:
                entity_id = _insert_entity(db, entity, now)
                if entity_id is None:
                    continue
                observations = _insert_observations(db, entity_id, entity.observations)
                created.append(entity.model_copy(update={"observations": observations}))
                created_ids.append(entity_id)
            self._embed(db, created_ids)
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
        changed: list[int] = []
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
                    changed.append(entity_id)
                results.append(AddedObservations(entityName=a.entityName, addedObservations=added))
            self._embed(db, changed)
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
        # the observations of all the groups together, as any other call's items and text
        self._check_batch("observations to delete", [o for d in deletions for o in d.observations])
        self._check_call_chars(text for d in deletions for text in (d.entityName, *d.observations))
        count = 0
        missing: list[str] = []
        changed: list[int] = []
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
                    changed.append(entity_id)
            self._embed(db, changed)
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
        with self._write() as db:
            counts, words = self._merge(db, entities, relations)
        self._known_words.learned(words)
        return counts

    def _merge(
        self, db: apsw.Connection, entities: Sequence[Entity], relations: Sequence[Relation]
    ) -> tuple[ImportCounts, set[str]]:
        """:meth:`import_batch` inside the caller's transaction; also the words to learn."""
        counts = ImportCounts()
        changed: list[int] = []
        now = _now_us()
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
            if added or not existing:
                changed.append(entity_id)
            counts.observations_added += added
            counts.observations_skipped += len(entity.observations) - added
        for r in relations:
            if _insert_relation(db, r):
                counts.relations_added += 1
            else:
                counts.relations_skipped += 1
        self._embed(db, changed)
        words = self._known_words.remember(
            db, (t for e in entities for t in (e.name, e.entityType, *e.observations))
        )
        return counts, words

    # ---- following the official server's file (MEMORY_FILE_PATH) --------------------------

    def followed_file(self, path: Path) -> tuple[int, int] | None:
        """The size and modification time (ns) ``path`` had when it was last merged."""
        with self._read() as db:
            row = db.execute(
                "SELECT size, mtime_ns FROM followed_files WHERE path = :path",
                {"path": str(path)},
            ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    def unseen_lines(self, path: Path, hashes: Sequence[bytes]) -> set[bytes]:
        """Which of these line hashes were never merged from ``path``."""
        with self._read() as db:
            seen = {
                bytes(h)
                for (h,) in db.execute(
                    "SELECT hash FROM followed_lines WHERE path = :path",
                    {"path": str(path)},
                )
            }
        return set(hashes) - seen

    def merge_followed(
        self,
        path: Path,
        size: int,
        mtime_ns: int,
        lines: Sequence[tuple[bytes, Entity | Relation | None]],
    ) -> tuple[ImportCounts, int]:
        """Merge the lines of ``path`` never merged before (a line that is None is recorded,
        not merged: it was malformed), and record them and the file's size and modification
        time, in one transaction: a start interrupted half-way merged nothing. Returns what
        was added and how many of the lines were new (another process starting on the same
        file may have merged them first)."""
        with self._write() as db:
            db.execute(
                "INSERT INTO followed_files(path, size, mtime_ns, merged_at) "
                "VALUES (:path, :size, :mtime_ns, :now) ON CONFLICT(path) DO UPDATE SET "
                "size = :size, mtime_ns = :mtime_ns, merged_at = :now",
                {"path": str(path), "size": size, "mtime_ns": mtime_ns, "now": _now_us()},
            )
            entities: list[Entity] = []
            relations: list[Relation] = []
            new_lines = 0
            for line_hash, item in lines:
                new = db.execute(
                    "INSERT INTO followed_lines(path, hash) VALUES (:path, :hash) "
                    "ON CONFLICT DO NOTHING RETURNING 1",
                    {"path": str(path), "hash": line_hash},
                ).get
                if new is None:  # merged meanwhile by another process starting on this file
                    continue
                new_lines += 1
                if isinstance(item, Entity):
                    entities.append(item)
                elif isinstance(item, Relation):
                    relations.append(item)
            counts, words = self._merge(db, entities, relations)
        self._known_words.learned(words)
        return counts, new_lines

    # ---- reads ---------------------------------------------------------------------------

    def iter_graph(self, batch: int = 1000) -> Iterator[Entity | Relation]:
        """Every entity, then every relation, in creation order, from one snapshot.

        Streams in batches (constant memory on any size) for export. Holds a read snapshot
        until exhausted, so consume it promptly: a pinned snapshot stops WAL checkpoints.
        """
        for step in self.walk_graph(batch=batch):
            yield step.item

    def walk_graph(
        self,
        after: GraphPosition = GraphPosition(),  # noqa: B008 (an immutable tuple)
        names: Sequence[str] | None = None,
        batch: int = 256,
    ) -> Iterator[GraphStep]:
        """Entities then relations in creation order, from just after ``after``, each with
        the position that follows it: what a page of ``read_graph`` (or, with ``names``, of
        ``open_nodes``: those entities and the relations touching them) is cut from.

        One snapshot, read ``batch`` rows at a time: close the iterator when the page is full
        (a pinned snapshot stops WAL checkpoints).
        """
        if names is not None:
            self._check_batch("names", names)
        with self._read() as db:
            found = None
            if names is not None:
                found = json.dumps(
                    [n for (n,) in db.execute(self._NAMED_SQL, {"names": json.dumps(list(names))})]
                )
            last = after.after_id
            while not after.in_relations:
                entities_sql = self._WALK_ENTITIES_SQL if found is None else self._WALK_NAMED_SQL
                ids = [
                    row_id
                    for (row_id,) in db.execute(
                        entities_sql, {"after": last, "batch": batch, "names": found}
                    )
                ]
                if not ids:
                    last = 0
                    break
                for row_id, entity in self._entities_by_id(db, ids).items():
                    yield GraphStep(GraphPosition(False, row_id), entity)
                last = ids[-1]
            relations_sql = self._WALK_RELATIONS_SQL if found is None else self._WALK_TOUCHING_SQL
            while True:
                rows: list[tuple[int, str, str, str]] = db.execute(  # type: ignore[assignment]
                    relations_sql, {"after": last, "batch": batch, "names": found}
                ).fetchall()
                if not rows:
                    return
                for relation_id, f, t, rt in rows:
                    relation = Relation.model_construct(from_=f, to=t, relationType=rt)
                    yield GraphStep(GraphPosition(True, relation_id), relation)
                last = rows[-1][0]

    def count_graph(self, names: Sequence[str] | None = None) -> tuple[int, int]:
        """How many entities and relations :meth:`walk_graph` gives from the start."""
        if names is not None:
            self._check_batch("names", names)
        with self._read() as db:
            if names is None:
                counts = db.execute(
                    "SELECT (SELECT count(*) FROM entities), (SELECT count(*) FROM relations)"
                ).get
            else:
                counts = db.execute(self._COUNT_NAMED_SQL, {"names": json.dumps(list(names))}).get
            return int(counts[0]), int(counts[1])

    _NAMED_SQL = "SELECT name FROM entities WHERE name IN (SELECT value FROM json_each(:names))"
    _WALK_ENTITIES_SQL = "SELECT id FROM entities WHERE id > :after ORDER BY id LIMIT :batch"
    _WALK_NAMED_SQL = (
        "SELECT id FROM entities WHERE id > :after "
        "AND name IN (SELECT value FROM json_each(:names)) ORDER BY id LIMIT :batch"
    )
    _WALK_RELATIONS_SQL = (
        "SELECT id, from_name, to_name, relation_type FROM relations "
        "WHERE id > :after ORDER BY id LIMIT :batch"
    )
    _TOUCHING = (
        "(from_name IN (SELECT value FROM json_each(:names)) "
        "OR to_name IN (SELECT value FROM json_each(:names)))"
    )
    _WALK_TOUCHING_SQL = (
        "SELECT id, from_name, to_name, relation_type FROM relations "
        f"WHERE id > :after AND {_TOUCHING} ORDER BY id LIMIT :batch"
    )
    _COUNT_NAMED_SQL = dedent(
        f"""\
        WITH found(name) AS ({_NAMED_SQL})
        SELECT (SELECT count(*) FROM found),
               (SELECT count(*) FROM relations
                WHERE from_name IN (SELECT name FROM found) OR to_name IN (SELECT name FROM found))
        """
    )

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
        marks: tuple[str, str] = ranking.SNIPPET_MARKS,
    ) -> SearchResult:
        """Ranked full-text search: parse (``search.py``) -> rank (``ranking.py``) -> load.

        Entities containing every word of the query (in any field, any order, as a whole
        word, another form of it, a word start, or inside a longer word) come first, best
        bm25 first; the rest of the page is the best of those with some of the words. With
        semantic search on, that rest is fused with the entities nearest in meaning
        (``semantic.py``), and each hit says what found it (``foundBy``). An empty
        query lists the most recently changed entities. ``snippets`` adds the matching
        fragments, the words that matched between ``marks``; ``compact`` returns names, types
        and snippets only; ``depth`` (0-2) adds the entities related to the hits, after them.
        """
        with self.walk_search(
            query,
            limit,
            entity_type,
            snippets=snippets,
            compact=compact,
            depth=depth,
            marks=marks,
        ) as walk:
            hits: list[SearchHit] = []
            relations: dict[int, Relation] = {}
            for hit, touching in walk.steps:
                hits.append(hit)
                relations.update(touching)
            return walk.result(hits, None if compact else [relations[i] for i in sorted(relations)])

    @contextlib.contextmanager
    def walk_search(
        self,
        query: str,
        limit: int = 20,
        entity_type: str | None = None,
        *,
        snippets: bool = False,
        compact: bool = False,
        depth: int = 0,
        marks: tuple[str, str] = ranking.SNIPPET_MARKS,
        start: int = 0,
    ) -> Iterator[SearchWalk]:
        """:meth:`search_nodes` as a walk: ranked at once, its hits from the ``start``-th on
        loaded only as they are read, in one snapshot (read them inside the ``with``). A page
        cut to the result budget (``results.search_page``) so loads, and makes snippets for,
        only the hits it holds, however large ``limit``.
        """
        if limit < 1 or limit > self.limits.max_search_limit:
            raise InputTooLargeError(
                f"limit must be between 1 and {self.limits.max_search_limit} "
                f"(MEMFTS_MAX_SEARCH_LIMIT), not {limit}"
            )
        if depth not in (0, 1, 2):
            raise InputTooLargeError(f"depth must be 0, 1 or 2, not {depth}")
        parsed = search.parse(query, synonyms=self._synonyms)
        seconds = self.limits.search_timeout_s
        notes: list[str] = []
        with self._read() as db, ranking.Deadline(db, seconds) as deadline:
            # The time limit stops the ranking; then what was found is loaded, with its
            # snippets and related entities, in chunks, for half as long again: the first
            # LOAD_CHUNK always, so a search of a usual size is never cut.
            vocab = vocabulary.Lookup(
                db, self._stems, late=lambda: deadline.passed, expansions=self._expansions
            )
            found_by: dict[int, list[FoundBy]] = {}
            if self._semantic is not None and parsed.required:
                with deadline.paused():
                    self._semantic.catch_up(db)
                deadline.extend(seconds)  # reading other writers' vectors is not this query's
            try:
                if self._semantic is not None and parsed.required:
                    found, found_by = self._semantic.hybrid(
                        vocab, parsed, query, limit, entity_type
                    )
                else:
                    found = ranking.rank(vocab, parsed, limit, entity_type)
            except apsw.InterruptError:
                deadline.extend(seconds / 4)
                found, found_by = ranking.rank_latest(vocab, parsed, limit, entity_type), {}
                notes.append(
                    f"The ranked search took longer than {seconds:g} s "
                    "(MEMFTS_SEARCH_TIMEOUT_S) and was cut short: these are the latest "
                    "entities holding the query's rarest word, not ranked. Use rarer or "
                    "fewer words, or a type: filter."
                )
            deadline.add(seconds / 2)
            head = SearchResult.model_construct(
                entities=[],
                relations=None if compact else [],
                total=found.total,
                totalIsLowerBound=found.lower_bound or None,
                withEveryWord=found.complete if found.complete < found.total else None,
                correctedQuery=found.corrected,
                suggestions=found.suggestions or None,
            )
            walk = SearchWalk(head, iter(()), len(found.ids), notes, None if depth else 0)
            walk.steps = self._search_steps(
                walk,
                db,
                deadline,
                vocab,
                found,
                found.searched or parsed,
                _Loading(limit, depth, compact, snippets or compact, marks, start, query, found_by),
            )
            yield walk

    def _search_steps(
        self,
        walk: SearchWalk,
        db: apsw.Connection,
        deadline: ranking.Deadline,
        vocab: vocabulary.Lookup,
        found: ranking.Ranking,
        searched: search.Query,
        loading: _Loading,
    ) -> Iterator[SearchStep]:
        """The hits of ``found`` from ``loading.start`` on, then the related entities, loaded
        a chunk at a time (a few first: a page may need no more); past the first
        :data:`LOAD_CHUNK`, only while the time limit allows, noting it in ``walk`` if not."""
        ids = found.ids
        position = loading.start
        snippets_cut = not searched.required
        sizes = iter(LOAD_CHUNKS)
        while True:
            if position >= len(ids) and walk.related is None:  # on to the related entities
                try:
                    related = self._neighbours(db, found.ids, loading.depth, loading.limit)
                except apsw.InterruptError:
                    related = []
                    walk.notes.append(
                        "Related entities were left out: looking them up took too long."
                    )
                walk.related = len(related)
                ids = found.ids + related
            if position >= len(ids):
                return
            chunk = ids[position : position + next(sizes, LOAD_CHUNK)]
            always = position - loading.start < LOAD_CHUNK
            try:
                if not always and deadline.passed:
                    raise apsw.InterruptError("the search ran out of time")
                with deadline.paused() if always else contextlib.nullcontext():
                    entities = self._entities_by_id(db, chunk, observations=not loading.compact)
                    relations = (
                        {} if loading.compact else self._relations_by_id(db, entities.values())
                    )
            except apsw.InterruptError:
                walk.notes.append(
                    f"Only the first {position:,} of {len(ids):,} entities are here: loading "
                    "them all took too long. Ask for a smaller limit, or compact: true."
                )
                return
            fragments: dict[int, list[str]] = {}
            if loading.snippets and not snippets_cut:
                try:
                    made = ranking.snippets(vocab, searched, chunk, loading.marks)
                    if self._semantic is not None:  # found by meaning alone: no words
                        by_meaning = [i for i in chunk if loading.found_by.get(i) == ["semantic"]]
                        made.update(
                            self._semantic.closest_observations(
                                db, loading.query, by_meaning, ranking.SNIPPETS_PER_ENTITY
                            )
                        )
                    fragments = made
                except apsw.InterruptError:
                    snippets_cut = True
                    walk.notes.append(
                        f"Snippets are given for the first {position - loading.start:,} "
                        "entities only: making them all took too long."
                    )
            touching: dict[str, list[tuple[int, Relation]]] = {}
            for relation_id, relation in relations.items():
                touching.setdefault(relation.from_, []).append((relation_id, relation))
                if relation.to != relation.from_:
                    touching.setdefault(relation.to, []).append((relation_id, relation))
            for entity_id in chunk:
                entity = entities.get(entity_id)
                if entity is None:  # rows of an entity another tool deleted (memfts check)
                    continue
                yield SearchStep(
                    SearchHit.model_construct(
                        name=entity.name,
                        entityType=entity.entityType,
                        observations=None if loading.compact else entity.observations,
                        snippets=fragments.get(entity_id, []) if loading.snippets else None,
                        foundBy=loading.found_by.get(entity_id),
                    ),
                    touching.get(entity.name, []),
                )
            position += len(chunk)

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

    def _entities_by_id(
        self, db: apsw.Connection, ids: Sequence[int] | None, *, observations: bool = True
    ) -> dict[int, Entity]:
        """Like :meth:`_entities`, keyed by id; without their observations if told so."""
        params: tuple[str, ...]
        where, params = "", ()
        if ids is not None:
            where = "WHERE {col} IN (SELECT value FROM json_each(?))"
            params = (json.dumps(list(ids)),)
        rows: list[tuple[int, str, str]] = db.execute(  # type: ignore[assignment]
            f"SELECT id, name, entity_type FROM entities {where.format(col='id')} ORDER BY id",
            params,
        ).fetchall()
        contents: dict[int, list[str]] = {row[0]: [] for row in rows}
        if observations:
            for entity_id, content in db.execute(
                f"SELECT entity_id, content FROM observations {where.format(col='entity_id')} "
                "ORDER BY id",
                params,
            ):
                if entity_id in contents:  # else an orphan: its entity deleted by another tool
                    contents[entity_id].append(content)
        return {
            eid: Entity.model_construct(name=name, entityType=etype, observations=contents[eid])
            for eid, name, etype in rows
        }

    def _relations_by_id(
        self, db: apsw.Connection, entities: Iterable[Entity]
    ) -> dict[int, Relation]:
        """Relations with either endpoint among ``entities``, by id (creation order)."""
        names = json.dumps([e.name for e in entities])
        return {
            relation_id: Relation.model_construct(from_=f, to=t, relationType=rt)
            for relation_id, f, t, rt in db.execute(
                "SELECT id, from_name, to_name, relation_type FROM relations "
                "WHERE from_name IN (SELECT value FROM json_each(?1)) "
                "OR to_name IN (SELECT value FROM json_each(?1))",
                (names,),
            )
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

    def check(self, repair: bool = False) -> HealthReport:
        """Run SQLite's ``integrity_check``, the FTS5 ``integrity-check`` of every index, and
        count the rows that belong to nothing (``PRAGMA foreign_key_check``: observations of
        an entity another tool deleted with foreign keys off, as the sqlite3 shell does).

        With ``repair``, those orphaned rows are deleted first, in one transaction (their
        full-text entries with them). Made for a damaged file: every failure is reported in
        the result, none is raised.
        """
        removed = self._remove_orphans() if repair else 0
        try:
            with self._read() as db:
                orphans: int | None = db.execute(
                    "SELECT count(*) FROM pragma_foreign_key_check"
                ).get
        except (apsw.Error, MemftsError):
            orphans = None
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
        for table in () if self.read_only else _FTS_TABLES:
            try:
                # the FTS5 check is an INSERT command: it needs a write transaction
                with self._write() as db:
                    db.execute(f"INSERT INTO {table}({table}, rank) VALUES ('integrity-check', 1)")
            except (apsw.Error, MemftsError) as exc:
                fts_errors.append(f"{table}: {exc}")
        sqlite_integrity = "ok" if problems == ["ok"] else "; ".join(problems)
        fts_integrity = "ok" if not fts_errors else "; ".join(fts_errors)
        if self.read_only:  # FTS5's check is an INSERT command: it needs to write
            fts_integrity = FTS_NOT_CHECKED
        return HealthReport(
            ok=sqlite_integrity == "ok"
            and fts_integrity in ("ok", FTS_NOT_CHECKED)
            and orphans == 0,
            sqlite_integrity=sqlite_integrity,
            fts_integrity=fts_integrity,
            entities=counts[0],
            observations=counts[1],
            relations=counts[2],
            orphaned_rows=orphans,
            removed_orphans=removed,
        )

    def _remove_orphans(self) -> int:
        """Delete every row ``foreign_key_check`` reports, in one transaction."""
        with self._write() as db:
            found = db.execute('SELECT "table", rowid FROM pragma_foreign_key_check').fetchall()
            for table, rowid in found:
                db.execute(f'DELETE FROM "{table}" WHERE rowid = ?', (rowid,))
            return len(found)

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

    def copy_to(self, target: Path) -> None:
        """A consistent copy of the file as it is now, in ``target`` (see
        :meth:`Database.copy_to`); :mod:`memfts.backup` checks it and puts it in place."""
        self._db.copy_to(target)

    def optimize(self, vacuum: bool = False) -> None:
        """Merge FTS5 index segments, truncate the WAL and optionally VACUUM the file."""
        with self._write() as db:
            for table in _FTS_TABLES:
                db.execute(f"INSERT INTO {table}({table}) VALUES ('optimize')")
        if vacuum:
            self._db.vacuum()
        self._db.checkpoint("TRUNCATE")

    def embed_missing(self, progress: Callable[[int], None] = lambda n: None) -> EmbedCounts:
        """Give a semantic-search vector to every entity without one (``memfts embed``).

        For entities written before the semantic extra was installed, or by a memfts without
        it. ``progress(n)`` is called after each committed batch; an interrupted run keeps
        what it committed and the next one carries on.
        """
        if self._semantic is None:
            raise SemanticSetupError(
                f"semantic search is off in this process ({SWITCH_ENV}=off, or the extra is "
                f"not installed: {INSTALL_HINT})"
            )
        embedded = self._semantic.backfill(self._write, progress)
        with self._read() as db:
            entities = int(db.execute("SELECT count(*) FROM entities").get)
        return EmbedCounts(model=self._semantic.model.name, embedded=embedded, entities=entities)

    @property
    def searches_by_meaning(self) -> bool:
        """Whether search fuses the nearest entities by meaning (the semantic extra, on)."""
        return self._semantic is not None

    def vectors_missing(self) -> int:
        """Entities without a vector of this process's model (all of them without the extra)."""
        with self._read() as db:
            if self._semantic is None:
                return int(db.execute("SELECT count(*) FROM entities").get)
            return self._semantic.missing(db)

    # ---- curation and browsing (memfts ui, and the CLI's rename/merge/... commands) --------
    # Each write is one transaction, its input checked as the tools check theirs (same rules,
    # same limits). The entities it changes become recently changed, and new text goes through
    # self._known_words (remember, then learned) like every other write's.

    def rename_entity(self, name: str, new_name: str) -> RenameReport:
        """Rename an entity; relations naming it, at either end, follow the new name.

        Refused if another entity has the new name (merge the two instead). Relations written
        with the new name before any entity had it now reach this one; one that would repeat
        a relation the new name already has is dropped.
        """
        new_name = self._checked_name("new name", new_name)
        with self._write() as db:
            entity_id = _entity_id(db, name)
            if new_name == name:
                return RenameReport(old=name, new=name, relations_moved=0, relations_merged=0)
            if db.execute("SELECT 1 FROM entities WHERE name = ?", (new_name,)).get:
                raise NameTakenError(
                    f"an entity named {new_name!r} exists already: merge {name!r} into it instead"
                )
            db.execute(
                "UPDATE entities SET name = :new, updated_at = :now WHERE id = :id",
                {"new": new_name, "now": _now_us(), "id": entity_id},
            )
            moved, merged = _repoint_relations(db, name, new_name)
            self._embed(db, [entity_id])
            words = self._known_words.remember(db, [new_name])
        self._known_words.learned(words)
        return RenameReport(old=name, new=new_name, relations_moved=moved, relations_merged=merged)

    def set_entity_type(self, name: str, entity_type: str) -> None:
        """Change an entity's type."""
        entity_type = self._checked_name("entity type", entity_type)
        with self._write() as db:
            entity_id = _entity_id(db, name)
            db.execute(
                "UPDATE entities SET entity_type = :type, updated_at = :now "
                "WHERE id = :id AND entity_type != :type",
                {"type": entity_type, "now": _now_us(), "id": entity_id},
            )
            self._embed(db, [entity_id])
            words = self._known_words.remember(db, [entity_type])
        self._known_words.learned(words)

    def edit_observation(self, name: str, old: str, new: str) -> None:
        """Replace the text of one observation, which keeps its place among the entity's.

        ``old`` is the observation's current text: if it changed meanwhile, nothing is edited.
        """
        new = self._checked_observation(name, new)
        with self._write() as db:
            entity_id = _entity_id(db, name)
            observation_id = _observation_id(db, entity_id, name, old)
            if new == old:
                return
            same = _observation_position(db, entity_id, new)
            if same is not None:
                raise DuplicateObservationError(
                    f"{name!r} already has this observation (number {same}): delete this one "
                    "instead of editing it"
                )
            db.execute("UPDATE observations SET content = ? WHERE id = ?", (new, observation_id))
            _touch(db, entity_id)
            self._embed(db, [entity_id])
            words = self._known_words.remember(db, [new])
        self._known_words.learned(words)

    def delete_observation(self, name: str, content: str) -> None:
        """Delete one observation, given by its exact text; an error if it is not there."""
        with self._write() as db:
            entity_id = _entity_id(db, name)
            observation_id = _observation_id(db, entity_id, name, content)
            db.execute("DELETE FROM observations WHERE id = ?", (observation_id,))
            _touch(db, entity_id)
            self._embed(db, [entity_id])

    def delete_entity(self, name: str, *, dry_run: bool = False) -> DeleteReport:
        """Delete one entity, its observations and every relation naming it (at either end).

        With ``dry_run`` nothing changes: the report says what would go.
        """
        try:
            with self._write() as db:
                entity_id = _entity_id(db, name)
                report = DeleteReport(
                    name=name,
                    entityType=db.execute(
                        "SELECT entity_type FROM entities WHERE id = ?", (entity_id,)
                    ).get,
                    observations=_count(db, "observations WHERE entity_id = ?", entity_id),
                    relations=_count(db, "relations WHERE from_name = ?1 OR to_name = ?1", name),
                )
                db.execute("DELETE FROM entities WHERE id = ?", (entity_id,))
                db.execute("DELETE FROM relations WHERE from_name = ?1 OR to_name = ?1", (name,))
                if dry_run:
                    raise _DryRun(report)
        except _DryRun as done:
            return cast(DeleteReport, done.report)
        return report

    def merge_entities(self, source: str, target: str, *, dry_run: bool = False) -> MergeReport:
        """Merge ``source`` into ``target``, which keeps its name and type; ``source`` is gone.

        The source's observations are appended to the target's, in order, except those the
        target has. Its relations are re-pointed to the target; one the target already has is
        dropped, and so are relations between the two (they would relate the target to
        itself; they said how the duplicates relate). The source's relations to itself become
        the target's. With ``dry_run`` nothing changes: the report says what would.
        """
        if source == target:
            raise InvalidInputError(f"cannot merge {source!r} into itself: name another entity")
        try:
            with self._write() as db:
                source_id = _entity_id(db, source)
                target_id = _entity_id(db, target)
                contents = [
                    content
                    for (content,) in db.execute(
                        "SELECT content FROM observations WHERE entity_id = ? ORDER BY id",
                        (source_id,),
                    )
                ]
                added = _insert_observations(db, target_id, contents)
                between = _count(
                    db,
                    "relations WHERE from_name = :a AND to_name = :b "
                    "OR from_name = :b AND to_name = :a",
                    {"a": source, "b": target},
                )
                db.execute(
                    "DELETE FROM relations WHERE from_name = :a AND to_name = :b "
                    "OR from_name = :b AND to_name = :a",
                    {"a": source, "b": target},
                )
                moved, shared = _repoint_relations(db, source, target)
                db.execute("DELETE FROM entities WHERE id = ?", (source_id,))
                _touch(db, target_id)
                self._embed(db, [target_id])
                report = MergeReport(
                    source=source,
                    target=target,
                    observations_added=len(added),
                    observations_shared=len(contents) - len(added),
                    relations_moved=moved,
                    relations_shared=shared,
                    relations_between=between,
                )
                if dry_run:
                    raise _DryRun(report)
        except _DryRun as done:
            return cast(MergeReport, done.report)
        return report

    def likely_duplicates(self, limit: int = 100) -> Duplicates:
        """Groups of entities whose names differ only by case, accents, punctuation, spacing
        or a plural ending (:func:`memfts.duplicates.name_key`), the most recently changed
        group first; in each, the suggested merge target first (most observations, oldest)."""
        with self._read() as db:
            by_key: dict[str, list[int]] = {}
            for entity_id, name in db.execute("SELECT id, name FROM entities"):
                by_key.setdefault(name_key(name), []).append(entity_id)
            groups = {key: ids for key, ids in by_key.items() if len(ids) > 1}
            rows = db.execute(
                dedent(
                    """\
                    SELECT e.id, e.name, e.entity_type, e.updated_at,
                        (SELECT count(*) FROM observations o WHERE o.entity_id = e.id),
                        (SELECT count(*) FROM relations r
                            WHERE r.from_name = e.name OR r.to_name = e.name)
                    FROM entities e WHERE e.id IN (SELECT value FROM json_each(:ids))
                    """
                ),
                {"ids": json.dumps([i for ids in groups.values() for i in ids])},
            ).fetchall()
        candidates = {
            row[0]: (
                row[3],
                DuplicateCandidate(
                    name=row[1], entityType=row[2], observations=row[4], relations=row[5]
                ),
            )
            for row in cast(list[tuple[int, str, str, int, int, int]], rows)
        }
        newest_first = sorted(
            groups.items(), key=lambda g: max(candidates[i][0] for i in g[1]), reverse=True
        )
        return Duplicates(
            total_groups=len(groups),
            groups=[
                DuplicateGroup(
                    key=key,
                    entities=[
                        candidates[i][1]
                        for i in sorted(ids, key=lambda i: (-candidates[i][1].observations, i))
                    ],
                )
                for key, ids in newest_first[:limit]
            ],
        )

    def entity_detail(self, name: str, max_relations: int = 500) -> EntityDetail | None:
        """An entity, its observations in order and its relations both ways (the first
        ``max_relations`` each way, oldest first), or None if there is no such entity."""
        with self._read() as db:
            row = db.execute(
                "SELECT id, entity_type, updated_at FROM entities WHERE name = ?", (name,)
            ).get
            if row is None:
                return None
            entity_id, entity_type, updated_at = row
            observations = [
                content
                for (content,) in db.execute(
                    "SELECT content FROM observations WHERE entity_id = ? ORDER BY id",
                    (entity_id,),
                )
            ]
            linked = {}
            for near, far in (("from_name", "to_name"), ("to_name", "from_name")):
                linked[near] = [
                    LinkedRelation(relationType=rt, other=other, otherType=other_type)
                    for rt, other, other_type in db.execute(
                        f"SELECT r.relation_type, r.{far}, e.entity_type FROM relations r "
                        f"LEFT JOIN entities e ON e.name = r.{far} WHERE r.{near} = :name "
                        "ORDER BY r.id LIMIT :limit",
                        {"name": name, "limit": max_relations},
                    )
                ]
            return EntityDetail(
                name=name,
                entityType=entity_type,
                observations=observations,
                updated_at=updated_at,
                outgoing=linked["from_name"],
                incoming=linked["to_name"],
                outgoing_total=_count(db, "relations WHERE from_name = ?", name),
                incoming_total=_count(db, "relations WHERE to_name = ?", name),
            )

    def recent_changes(self, limit: int = 50) -> list[RecentEntity]:
        """The most recently changed entities, newest first."""
        with self._read() as db:
            return [
                RecentEntity(name=n, entityType=t, updated_at=u, observations=c)
                for n, t, u, c in db.execute(
                    "SELECT name, entity_type, updated_at, "
                    "(SELECT count(*) FROM observations o WHERE o.entity_id = e.id) "
                    "FROM entities e ORDER BY updated_at DESC, id DESC LIMIT ?",
                    (limit,),
                )
            ]

    def neighbourhood(self, name: str, depth: int = 1, max_nodes: int = 50) -> Neighbourhood:
        """``name`` and the names related to it within ``depth`` (1 or 2) relations, oldest
        relations first, at most ``max_nodes`` in all, and the relations among them.

        At depth 2 the direct neighbours take at most half the nodes while their own
        neighbours can use the rest, so a hub's picture still shows a second ring. ``name``
        may be an entity or only a relation's end.
        """
        if depth not in (1, 2):
            raise InvalidInputError(f"depth must be 1 or 2, not {depth}")
        room = max_nodes - 1
        with self._read() as db:
            first = _linked(db, [name], exclude={name})
            keep = first[: room if depth == 1 else room // 2]
            reached: list[tuple[str, str]] = []
            if depth == 2:
                reached = _linked(db, [n for n, _ in keep], exclude={name, *(n for n, _ in first)})
            second = reached[: room - len(keep)]
            # the second ring left room: give it back to the first
            keep = first[: room - len(second)]
            parents: dict[str, tuple[int, str | None]] = {name: (0, None)}
            parents.update((n, (1, at)) for n, at in keep)
            parents.update((n, (2, at)) for n, at in second)
            left_out = len(first) - len(keep) + len(reached) - len(second)
            names = json.dumps(list(parents))
            types: dict[str, str] = dict(
                db.execute(  # type: ignore[arg-type]
                    "SELECT name, entity_type FROM entities "
                    "WHERE name IN (SELECT value FROM json_each(?))",
                    (names,),
                ).fetchall()
            )
            relations = [
                Relation.model_construct(from_=f, to=t, relationType=rt)
                for f, t, rt in db.execute(
                    "SELECT from_name, to_name, relation_type FROM relations "
                    "WHERE from_name IN (SELECT value FROM json_each(:names)) "
                    "AND to_name IN (SELECT value FROM json_each(:names)) ORDER BY id",
                    {"names": names},
                )
            ]
        return Neighbourhood(
            centre=name,
            depth=depth,
            nodes=[
                GraphNode(name=n, entityType=types.get(n), depth=d, parent=p)
                for n, (d, p) in parents.items()
            ],
            relations=relations,
            left_out=left_out,
        )

    def entity_types(self, limit: int = 50) -> list[tuple[str, int]]:
        """The commonest entity types and how many entities have each, commonest first."""
        with self._read() as db:
            return [
                (entity_type, count)
                for entity_type, count in db.execute(
                    "SELECT entity_type, count(*) FROM entities GROUP BY entity_type "
                    "ORDER BY 2 DESC, 1 LIMIT ?",
                    (limit,),
                )
            ]

    def data_version(self) -> int:
        """A number that changes whenever any process (this one included) commits to the
        file: how a page learns that what it shows is stale, at the cost of one file check."""
        return self._db.data_version()

    def _checked_name(self, what: str, value: str) -> str:
        """A name or type as the tools accept it (non-blank Unicode, no NUL, within limits)."""
        try:
            value = _NAME.validate_python(value)
        except ValidationError as exc:
            raise InvalidInputError(f"{what}: {_problem(exc)}") from None
        self._check_name(what, value)
        return value

    def _checked_observation(self, owner: str, value: str) -> str:
        try:
            value = _TEXT.validate_python(value)
        except ValidationError as exc:
            raise InvalidInputError(f"observation of {owner!r}: {_problem(exc)}") from None
        if not value.strip():
            raise InvalidInputError(
                f"observation of {owner!r}: must not be empty (delete it instead)"
            )
        self._check_observations(owner, [value])
        return value


FTS_NOT_CHECKED = "not checked: the file cannot be written, and FTS5's check writes"

_FTS_TABLES = ("entities_fts", "observations_fts", "search_terms_trigram")

# ---- helpers of the curation section ---------------------------------------------------------

NEIGHBOUR_ROWS = 20_000
"""Most relations one step of :meth:`Store.neighbourhood` reads (a hub can have thousands)."""

_NEIGHBOURS_SQL = dedent(
    """\
    SELECT at, from_name, to_name FROM (
        SELECT r.id, f.value AS at, r.from_name, r.to_name
        FROM json_each(:names) f JOIN relations r ON r.from_name = f.value
        UNION ALL
        SELECT r.id, f.value, r.from_name, r.to_name
        FROM json_each(:names) f JOIN relations r ON r.to_name = f.value
    ) ORDER BY id LIMIT :limit
    """
)

_NAME: TypeAdapter[str] = TypeAdapter(Name)
_TEXT: TypeAdapter[str] = TypeAdapter(Text)


class _DryRun(Exception):
    """Raised inside a write transaction to roll it back, carrying what it would have done."""

    def __init__(self, report: BaseModel) -> None:
        super().__init__("dry run")
        self.report = report


def _linked(db: apsw.Connection, names: list[str], exclude: set[str]) -> list[tuple[str, str]]:
    """``(neighbour, the name it is related to)`` for the names related to any of ``names``,
    each once, by their oldest relation first; none of ``exclude``."""
    found: dict[str, str] = {}
    for at, from_name, to_name in db.execute(
        _NEIGHBOURS_SQL, {"names": json.dumps(names), "limit": NEIGHBOUR_ROWS}
    ):
        other = to_name if from_name == at else from_name
        if other not in exclude:
            found.setdefault(other, at)
    return list(found.items())


def _problem(exc: ValidationError) -> str:
    return str(exc.errors(include_url=False)[0]["msg"]).removeprefix("Value error, ")


def _entity_id(db: apsw.Connection, name: str) -> int:
    entity_id = db.execute("SELECT id FROM entities WHERE name = ?", (name,)).get
    if entity_id is None:
        raise EntityNotFoundError(name)
    return int(entity_id)


def _touch(db: apsw.Connection, entity_id: int) -> None:
    """Make the entity recently changed."""
    db.execute("UPDATE entities SET updated_at = ? WHERE id = ?", (_now_us(), entity_id))


def _count(db: apsw.Connection, where: str, params: object) -> int:
    """``count(*)`` of ``FROM <where>``; ``params`` one value or the statement's bindings."""
    bindings = params if isinstance(params, dict | tuple) else (params,)
    return int(db.execute(f"SELECT count(*) FROM {where}", bindings).get)


def _observation_id(db: apsw.Connection, entity_id: int, name: str, content: str) -> int:
    found = db.execute(
        "SELECT id FROM observations WHERE entity_id = ? AND content = ?", (entity_id, content)
    ).get
    if found is None:
        shown = content if len(content) <= 60 else content[:57] + "..."
        raise ObservationNotFoundError(
            f"{name!r} has no observation {shown!r} (it may have changed meanwhile): reload "
            "the entity and try again"
        )
    return int(found)


def _observation_position(db: apsw.Connection, entity_id: int, content: str) -> int | None:
    """1 for the entity's first observation...; None if it has no such observation."""
    position = db.execute(
        "SELECT (SELECT count(*) FROM observations o WHERE o.entity_id = :e AND o.id <= x.id) "
        "FROM observations x WHERE x.entity_id = :e AND x.content = :content",
        {"e": entity_id, "content": content},
    ).get
    return None if position is None else int(position)


def _repoint_relations(db: apsw.Connection, old: str, new: str) -> tuple[int, int]:
    """Make every relation naming ``old`` (at either end) name ``new`` instead; one that
    would repeat a relation already there is dropped. Returns ``(moved, dropped)``."""
    names = {"old": old, "new": new}
    before = _count(db, "relations WHERE from_name = :old OR to_name = :old", names)
    # OR IGNORE leaves a row that would collide as it is; the DELETE then drops it (REPLACE
    # would delete the row already there instead, changing its id and so its order)
    db.execute("UPDATE OR IGNORE relations SET from_name = :new WHERE from_name = :old", names)
    db.execute("UPDATE OR IGNORE relations SET to_name = :new WHERE to_name = :old", names)
    dropped = len(
        db.execute(
            "DELETE FROM relations WHERE from_name = :old OR to_name = :old RETURNING id", names
        ).fetchall()
    )
    return before - dropped, dropped
