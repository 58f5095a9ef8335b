"""The knowledge-graph store: one method per operation, each one transaction.

The official memory server's semantics (names unique, observations ordered and unique per
entity, relations by name) on top of :mod:`memfts.database`; queries sit beside the one
method that runs them. What the MCP tools do; the page's and the CLI's curation (rename,
merge, edit...) is :mod:`memfts.curation`'s.
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
from typing import Any, TypeVar

import apsw

from memfts import ranking, search, segments, vocabulary
from memfts.database import Database
from memfts.errors import (
    DatabaseOpenError,
    EntityNotFoundError,
    InputTooLargeError,
    MemftsError,
)
from memfts.models import (
    AddedObservations,
    EmbedCounts,
    Entity,
    GraphPosition,
    GraphStep,
    HealthReport,
    ImportCounts,
    KnowledgeGraph,
    ObservationAddition,
    ObservationDeletion,
    Relation,
    SearchHit,
    SearchResult,
    SearchStep,
    SearchWalk,
    StoreStats,
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
        self._db.after_write(segments.merge_step)
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

    def data_version(self) -> int:
        """A number that changes whenever any process (this one included) commits to the
        file: how a page learns that what it shows is stale, at the cost of one file check."""
        return self._db.data_version()

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
        for d in deletions:  # as add_observations counts its groups: what one adds, one deletes
            self._check_batch("observations to delete", d.observations)
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
        for table in () if self.read_only else segments.INDEXES:
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

    def merge_indexes(self) -> None:
        """Merge each full-text index into one segment (after a bulk import; writes keep
        them merged as they go, see :mod:`memfts.segments`)."""
        with self._write() as db:
            segments.merge_all(db)

    def optimize(self, vacuum: bool = False) -> None:
        """Merge FTS5 index segments, truncate the WAL and optionally VACUUM the file."""
        self.merge_indexes()
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


FTS_NOT_CHECKED = "not checked: the file cannot be written, and FTS5's check writes"
