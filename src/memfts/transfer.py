"""Moving a graph in and out: the official server's JSONL, SQLite memory databases, and back.

Import reads a source as a stream of :class:`~memfts.models.Entity`, :class:`Relation` and
:class:`Problem` items (constant memory on any size) and merges them into a
:class:`~memfts.store.Store` in batched transactions with :meth:`Store.import_batch`, so a
re-run changes nothing. Every item is validated through the same pydantic models the MCP
tools use; an item that fails is reported with its line (or row) and skipped, never dropped
silently. Export writes JSONL the official server loads as-is.

The format is detected from the content, not the file name: a SQLite file starts with the
16-byte header ``SQLite format 3\\0``; anything starting with ``{`` is JSON lines.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Literal

import apsw
from pydantic import ValidationError

from memfts.database import open_read_only, sqlite_path
from memfts.errors import MemftsError
from memfts.models import Entity, ImportCounts, Relation
from memfts.store import Store

SQLITE_HEADER = b"SQLite format 3\x00"
UTF8_BOM = b"\xef\xbb\xbf"

MAX_LINE_BYTES = 128 * 1024 * 1024
"""A longer JSONL line is reported and skipped rather than read into memory."""

BATCH_ENTITIES = 1_000
"""Entities (or relations) per import transaction."""

BATCH_OBSERVATIONS = 20_000
"""A batch is also committed once it holds this many observations, whatever its entity count."""

Format = Literal["jsonl", "sqlite"]
Advance = Callable[[int], None]
Progress = Callable[[str, int], AbstractContextManager[Advance]]
"""``progress(label, total)`` -> a context giving ``advance(n)``; the CLI draws a bar with it."""


class TransferError(MemftsError):
    """The input cannot be read as a memory graph at all (wrong format, unknown schema...)."""


class ImportInterruptedError(MemftsError):
    """A batch failed (disk full, busy...): the batches before it are in, the rest is not."""


@dataclass(frozen=True)
class Problem:
    """One input item that was not imported, and why."""

    where: str
    """``line 17`` for JSONL, ``entities row 5`` for SQLite."""
    message: str

    def __str__(self) -> str:
        return f"{self.where}: {self.message}"


Item = Entity | Relation | Problem


@dataclass
class ImportResult:
    format: Format
    counts: ImportCounts = field(default_factory=ImportCounts)
    malformed: int = 0
    aborted: bool = False
    """``strict`` met a malformed item: nothing after it was imported."""


def _no_progress(label: str, total: int) -> AbstractContextManager[Advance]:
    return nullcontext(lambda n: None)


# ---- reading JSONL -------------------------------------------------------------------------


def _validation_message(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        location = ".".join(str(p) for p in error["loc"])
        message = error["msg"].removeprefix("Value error, ")
        parts.append(f"{location}: {message}" if location else message)
    return "; ".join(parts)


_REQUIRED = {
    "entity": ("name", "entityType", "observations"),
    "relation": ("from", "to", "relationType"),
}


def parse_line(raw: bytes, where: str) -> Item | None:
    """One JSONL line -> an Entity, a Relation, a Problem, or None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        return Problem(where, f"not valid UTF-8 (byte {exc.start + 1})")
    if not text.strip():
        return None
    try:
        obj: Any = json.loads(text)
    except json.JSONDecodeError as exc:
        return Problem(where, f"not valid JSON: {exc.msg.removesuffix(' at')} (column {exc.colno})")
    if not isinstance(obj, dict):
        return Problem(where, f"expected a JSON object, got {type(obj).__name__}")
    kind = obj.get("type")
    if not isinstance(kind, str) or kind not in _REQUIRED:
        if kind is None:
            return Problem(where, 'no "type" field (expected "entity" or "relation")')
        return Problem(where, f'unknown "type" {kind!r} (expected "entity" or "relation")')
    # the official server skips a line missing any of these; say so instead
    missing = [key for key in _REQUIRED[kind] if key not in obj]
    if missing:
        return Problem(where, f"{kind} without {', '.join(repr(m) for m in missing)}")
    try:
        if kind == "entity":
            return Entity.model_validate(obj)
        return Relation.model_validate(obj)
    except ValidationError as exc:
        return Problem(where, f"{kind}: {_validation_message(exc)}")


@dataclass(frozen=True)
class JsonlSource:
    """The official server's ``memory.jsonl`` (or the legacy ``memory.json``: same lines)."""

    path: Path
    format: Format = "jsonl"

    @property
    def size(self) -> int:
        """Progress units: bytes."""
        return self.path.stat().st_size

    def items(self, advance: Advance) -> Iterator[Item]:
        with self.path.open("rb") as f:
            number = 0
            while raw := f.readline(MAX_LINE_BYTES + 1):
                number += 1
                advance(len(raw))
                if len(raw) > MAX_LINE_BYTES and not raw.endswith(b"\n"):
                    while rest := f.readline(1 << 20):
                        advance(len(rest))
                        if rest.endswith(b"\n"):
                            break
                    yield Problem(f"line {number}", f"longer than {MAX_LINE_BYTES >> 20} MiB")
                    continue
                if number == 1:
                    raw = raw.removeprefix(UTF8_BOM)
                item = parse_line(raw, f"line {number}")
                if item is not None:
                    yield item


# ---- reading SQLite memory databases -------------------------------------------------------
#
# Forks of the memory server that store the graph in SQLite agree on three tables (entities,
# observations, relations) but not on their columns. Seen in public forks:
#   entities(id, name, entity_type); observations(entity_id, content);
#     relations(from_entity_id, to_entity_id, relation_type)     -- e.g. a storage/sqlite fork
#     of modelcontextprotocol/servers, JamesPrial/mcp-memory-rewrite
#   entities(name PRIMARY KEY, entity_type); observations(entity_name, content);
#     relations(source, target, relation_type)                   -- spences10/mcp-memory-sqlite
#   ... relations(from_entity, to_entity, relation_type)         -- Daichi-Kudo/mcp-memory-sqlite
#   ... relations(source_id, target_id, relation_type)           -- alexfayers/mcp-memory-sqlite
#   memfts itself: relations(from_name, to_name, relation_type)
# so the columns are looked up by name from these candidates, and whether an endpoint holds
# an entity id or a name comes from its foreign key (or, without one, from an ``_id`` suffix).

_ENTITY_NAME = ("name", "entity_name", "entityName")
_ENTITY_TYPE = ("entity_type", "entityType", "type")
_OBS_BY_ID = ("entity_id", "entityId")
_OBS_BY_NAME = ("entity_name", "entityName", "entity")
_OBS_CONTENT = ("content", "observation", "text", "value")
_REL_FROM = (
    "from_entity_id", "from_id", "source_entity_id", "source_id", "fromId", "sourceId",
    "from_name", "from_entity", "from", "source", "source_entity", "source_name", "fromEntity",
)  # fmt: skip
_REL_TO = (
    "to_entity_id", "to_id", "target_entity_id", "target_id", "toId", "targetId",
    "to_name", "to_entity", "to", "target", "target_entity", "target_name", "toEntity",
)  # fmt: skip
_REL_TYPE = ("relation_type", "relationType", "type", "relation")


def _quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


@dataclass(frozen=True)
class _Table:
    name: str
    columns: dict[str, str]
    """Column name -> declared type (upper case)."""
    references: dict[str, str | None]
    """Column -> the column of ``entities`` its foreign key points at (None: the rowid)."""

    def pick(self, candidates: tuple[str, ...]) -> str | None:
        lower = {c.lower(): c for c in self.columns}
        for candidate in candidates:
            if candidate.lower() in lower:
                return lower[candidate.lower()]
        return None

    def need(self, candidates: tuple[str, ...], what: str) -> str:
        found = self.pick(candidates)
        if found is None:
            raise TransferError(
                f"table {self.name} has no column for {what} (looked for "
                f"{', '.join(candidates)}; it has {', '.join(self.columns)})"
            )
        return found

    def order(self) -> str:
        """Insertion order: the integer primary key if there is one, else the rowid."""
        return _quote(self.pick(("id",)) or "rowid")

    def holds_ids(self, column: str) -> bool:
        """Whether ``column`` refers to entities by id (else by name)."""
        if column in self.references:
            return self.references[column] in (None, "id", "rowid")
        return column.lower().endswith(("_id", "id")) and column.lower() != "id"


def _table(conn: apsw.Connection, name: str) -> _Table | None:
    columns = {
        row[1]: str(row[2]).upper() for row in conn.execute(f"PRAGMA table_info({_quote(name)})")
    }
    if not columns:
        return None
    # a foreign key naming no column points at the primary key of entities
    entity_pk = [row[1] for row in conn.execute("PRAGMA table_info(entities)") if row[5]]
    default = entity_pk[0] if len(entity_pk) == 1 else None
    references = {
        row[3]: row[4] or default
        for row in conn.execute(f"PRAGMA foreign_key_list({_quote(name)})")
        if str(row[2]).lower() == "entities"
    }
    return _Table(name, columns, references)


@dataclass(frozen=True)
class SqliteSource:
    """A memory graph kept in SQLite by another server (or by another memfts)."""

    path: Path
    format: Format = "sqlite"

    def _connect(self) -> apsw.Connection:
        try:
            conn = open_read_only(self.path)  # also where nothing can be written beside it
        except apsw.Error as exc:
            raise TransferError(f"cannot read {self.path} as SQLite: {exc}") from None
        return conn

    @property
    def size(self) -> int:
        """Progress units: entity and relation rows."""
        conn = self._connect()
        try:
            layout = _Layout.of(conn, self.path)
            count: int = conn.execute(f"SELECT count(*) FROM {_quote(layout.entities.name)}").get
            if layout.relations is not None:
                count += conn.execute(f"SELECT count(*) FROM {_quote(layout.relations.name)}").get
            return count
        finally:
            conn.close()

    def items(self, advance: Advance) -> Iterator[Item]:
        conn = self._connect()
        try:
            layout = _Layout.of(conn, self.path)
            yield from layout.entity_items(conn, advance)
            yield from layout.relation_items(conn, advance)
        except apsw.Error as exc:
            raise TransferError(f"error reading {self.path}: {exc}") from None
        finally:
            conn.close()


@dataclass(frozen=True)
class _Layout:
    """Where one SQLite memory database keeps each part of the graph."""

    entities: _Table
    name: str
    entity_type: str
    observations: _Table | None
    relations: _Table | None

    @classmethod
    def of(cls, conn: apsw.Connection, path: Path) -> _Layout:
        entities = _table(conn, "entities")
        if entities is None:
            raise TransferError(
                f"{path} is a SQLite database but has no entities table: not a memory graph"
            )
        return cls(
            entities=entities,
            name=entities.need(_ENTITY_NAME, "the entity name"),
            entity_type=entities.need(_ENTITY_TYPE, "the entity type"),
            observations=_table(conn, "observations"),
            relations=_table(conn, "relations"),
        )

    def entity_items(self, conn: apsw.Connection, advance: Advance) -> Iterator[Item]:
        e = self.entities
        order = e.order()
        obs_sql = self._observations_sql()
        select = (
            f"SELECT {order}, {_quote(self.name)}, {_quote(self.entity_type)} FROM {_quote(e.name)}"
        )
        page = f"ORDER BY {order} LIMIT {BATCH_ENTITIES}"
        last: Any = None
        while True:
            # keyset pagination; `?1 IS NULL OR` would make SQLite scan from the start each time
            rows = conn.execute(
                f"{select} {page}" if last is None else f"{select} WHERE {order} > ? {page}",
                () if last is None else (last,),
            ).fetchall()
            if not rows:
                return
            last = rows[-1][0]
            observations: dict[Any, list[tuple[Any, Any]]] = {}
            if obs_sql is not None:
                sql, by_id = obs_sql
                wanted = json.dumps([row[0] if by_id else row[1] for row in rows])
                for link, row_id, content in conn.execute(sql, (wanted,)):
                    observations.setdefault(link, []).append((row_id, content))
            by_id = obs_sql is not None and obs_sql[1]
            for row_id, name, entity_type in rows:
                advance(1)
                where = f"{e.name} row {row_id}"
                contents: list[str] = []
                for obs_id, content in observations.get(row_id if by_id else name, []):
                    if isinstance(content, str) and "\x00" not in content:
                        contents.append(content)
                    else:
                        yield Problem(
                            f"observations row {obs_id}",
                            f"observation of {name!r} is not text without NUL: {content!r:.60}",
                        )
                try:
                    yield Entity.model_validate(
                        {"name": name, "entityType": entity_type, "observations": contents}
                    )
                except ValidationError as exc:
                    yield Problem(where, f"entity: {_validation_message(exc)}")

    def _observations_sql(self) -> tuple[str, bool] | None:
        """The query for a batch's observations, and whether it links them by entity id."""
        o = self.observations
        if o is None:
            return None
        link = o.pick(_OBS_BY_ID) or o.need(_OBS_BY_NAME, "the observation's entity")
        content = o.need(_OBS_CONTENT, "the observation text")
        sql = (
            f"SELECT {_quote(link)}, {o.order()}, {_quote(content)} FROM {_quote(o.name)} "
            f"WHERE {_quote(link)} IN (SELECT value FROM json_each(?)) ORDER BY {o.order()}"
        )
        return sql, o.holds_ids(link)

    def relation_items(self, conn: apsw.Connection, advance: Advance) -> Iterator[Item]:
        r = self.relations
        if r is None:
            return
        source = r.need(_REL_FROM, "the relation's source")
        target = r.need(_REL_TO, "the relation's target")
        kind = r.need(_REL_TYPE, "the relation type")
        e = self.entities

        def endpoint(column: str, alias: str) -> tuple[str, str]:
            if not r.holds_ids(column):
                return f"r.{_quote(column)}", ""
            return (
                f"{alias}.{_quote(self.name)}",
                f" LEFT JOIN {_quote(e.name)} {alias} ON {alias}.{e.order()} = r.{_quote(column)}",
            )

        from_expr, from_join = endpoint(source, "ef")
        to_expr, to_join = endpoint(target, "et")
        sql = (
            f"SELECT r.{r.order()}, {from_expr}, {to_expr}, r.{_quote(kind)}, "
            f"r.{_quote(source)}, r.{_quote(target)} "
            f"FROM {_quote(r.name)} r{from_join}{to_join} ORDER BY r.{r.order()}"
        )
        for row_id, from_name, to_name, relation_type, raw_from, raw_to in conn.execute(sql):
            advance(1)
            where = f"{r.name} row {row_id}"
            if from_name is None and raw_from is not None:
                yield Problem(where, f"source entity id {raw_from!r} does not exist")
                continue
            if to_name is None and raw_to is not None:
                yield Problem(where, f"target entity id {raw_to!r} does not exist")
                continue
            try:
                yield Relation.model_validate(
                    {"from": from_name, "to": to_name, "relationType": relation_type}
                )
            except ValidationError as exc:
                yield Problem(where, f"relation: {_validation_message(exc)}")


# ---- import --------------------------------------------------------------------------------

Source = JsonlSource | SqliteSource


def open_source(path: str | os.PathLike[str]) -> Source:
    """Detect the format of ``path`` from its first bytes."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            head = f.read(4096)
    except FileNotFoundError:
        raise TransferError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise TransferError(f"{path} is a folder, not a memory file") from None
    except OSError as exc:
        raise TransferError(f"cannot read {path}: {exc.strerror}") from None
    if head.startswith(SQLITE_HEADER):
        sqlite_path(path)  # a name SQLite cannot take fails now, before anything is created
        return SqliteSource(path)
    start = head.removeprefix(UTF8_BOM).lstrip()
    if not start or start.startswith(b"{"):
        return JsonlSource(path)
    raise TransferError(
        f"{path} is neither JSON lines (memory.jsonl, memory.json) nor a SQLite database "
        f"(it starts with {head[:16]!r})"
    )


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return False


def validate(
    source: Source, *, on_problem: Callable[[Problem], None], progress: Progress = _no_progress
) -> int:
    """Read the whole input without importing it; report and count the malformed items."""
    malformed = 0
    with progress("checking", source.size) as advance:
        for item in source.items(advance):
            if isinstance(item, Problem):
                malformed += 1
                on_problem(item)
    return malformed


def import_file(
    store: Store,
    path: str | os.PathLike[str],
    *,
    strict: bool = False,
    on_problem: Callable[[Problem], None] = lambda p: None,
    progress: Progress = _no_progress,
    batch_entities: int = BATCH_ENTITIES,
) -> ImportResult:
    """Merge the graph in ``path`` into ``store``; safe to run again (it adds nothing twice).

    Malformed items are passed to ``on_problem`` and skipped. With ``strict`` the import stops
    at the first one (batches before it are committed): call :func:`validate` first to import
    all or nothing. A complete import written in more than one batch ends by merging the
    full-text indexes into one segment each (:meth:`Store.merge_indexes`); a smaller one
    leaves them to the upkeep after each write (:mod:`memfts.segments`).
    """
    source = open_source(path)
    if _same_file(Path(path), store.path):
        raise TransferError(f"{path} is the database being imported into")
    result = ImportResult(format=source.format)
    entities: list[Entity] = []
    relations: list[Relation] = []
    pending_observations = 0
    batches = 0

    def flush() -> None:
        nonlocal pending_observations, batches
        if entities or relations:
            batches += 1
            try:
                result.counts += store.import_batch(entities, relations)
            except MemftsError as exc:
                c = result.counts
                raise ImportInterruptedError(
                    f"{exc}. The import stopped after adding {c.entities_added:,} entities, "
                    f"{c.observations_added:,} observations and {c.relations_added:,} relations; "
                    "run it again to continue (nothing is added twice)"
                ) from exc
        entities.clear()
        relations.clear()
        pending_observations = 0

    with progress("importing", source.size) as advance:
        for item in source.items(advance):
            if isinstance(item, Problem):
                result.malformed += 1
                on_problem(item)
                if strict:
                    flush()
                    result.aborted = True
                    return result
            elif isinstance(item, Entity):
                entities.append(item)
                pending_observations += len(item.observations)
            else:
                relations.append(item)
            if (
                len(entities) >= batch_entities
                or len(relations) >= batch_entities
                or pending_observations >= BATCH_OBSERVATIONS
            ):
                flush()
        flush()
    if batches > 1:  # a bulk load leaves many segments: merge them at once
        store.merge_indexes()
    return result


# ---- following the official server's file (MEMORY_FILE_PATH) --------------------------------


@dataclass
class FollowResult:
    """What one start merged from the followed file."""

    first: bool
    """Nothing had been merged from this file before: the whole file came in."""
    lines: int = 0
    """Lines merged now, never merged before (new or changed entities and relations)."""
    counts: ImportCounts = field(default_factory=ImportCounts)
    malformed: int = 0


def follow_jsonl(
    store: Store, path: Path, *, on_problem: Callable[[Problem], None] = lambda p: None
) -> FollowResult | None:
    """Merge what the official server's ``path`` holds that was never merged before, in one
    transaction; None if there was nothing to read (no file yet, or unchanged since).

    The official server rewrites the whole file on each change, so what it wrote since the
    last merge is the lines never seen before: new entities and relations, and entities it
    changed (merged again: they gain the observations they lack). What it deleted is not
    deleted here: a merge only adds. The file itself is only read.
    """
    try:
        info = path.stat()
    except FileNotFoundError:
        return None  # the official server creates it at its first write; so will we, here
    except OSError as exc:
        raise TransferError(f"cannot read {path} (MEMORY_FILE_PATH): {exc.strerror}") from None
    recorded = store.followed_file(path)
    if recorded == (info.st_size, info.st_mtime_ns):
        return None
    if isinstance(open_source(path), SqliteSource):
        raise TransferError(
            f"{path} (MEMORY_FILE_PATH) is a SQLite database, not the official server's JSON "
            "lines: set MEMORY_DB_PATH to it instead"
        )
    lines: list[tuple[int, bytes, bytes]] = []  # number, hash, raw
    with path.open("rb") as f:
        for number, raw in enumerate(f, start=1):
            text = (raw.removeprefix(UTF8_BOM) if number == 1 else raw).strip()
            if text:
                lines.append((number, hashlib.sha256(text).digest()[:16], text))
    unseen = store.unseen_lines(path, [h for _, h, _ in lines])
    result = FollowResult(first=recorded is None)
    merged: list[tuple[bytes, Entity | Relation | None]] = []
    for number, line_hash, text in lines:
        if line_hash not in unseen:
            continue
        unseen.discard(line_hash)  # a line repeated in the file is merged once
        item = parse_line(text, f"{path.name} line {number}")
        if isinstance(item, Problem):
            result.malformed += 1
            on_problem(item)
            item = None
        merged.append((line_hash, item))
    result.counts, result.lines = store.merge_followed(path, info.st_size, info.st_mtime_ns, merged)
    return result


# ---- export --------------------------------------------------------------------------------


def jsonl_line(item: Entity | Relation) -> bytes:
    """One line exactly as the official server writes it (``JSON.stringify``, no spaces)."""
    if isinstance(item, Entity):
        obj: dict[str, Any] = {
            "type": "entity",
            "name": item.name,
            "entityType": item.entityType,
            "observations": item.observations,
        }
    else:
        obj = {
            "type": "relation",
            "from": item.from_,
            "to": item.to,
            "relationType": item.relationType,
        }
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8") + b"\n"


@dataclass
class ExportCounts:
    entities: int = 0
    relations: int = 0


def write_jsonl(store: Store, out: IO[bytes]) -> ExportCounts:
    """Stream the whole graph to ``out`` as JSONL, entities first, in creation order."""
    counts = ExportCounts()
    for item in store.iter_graph():
        out.write(jsonl_line(item))
        if isinstance(item, Entity):
            counts.entities += 1
        else:
            counts.relations += 1
    return counts


def _mode_for(target: Path) -> int:
    try:
        return stat.S_IMODE(target.stat().st_mode)
    except FileNotFoundError:
        umask = os.umask(0)
        os.umask(umask)
        return 0o666 & ~umask


def check_target(target: Path, database: Path, *, force: bool) -> Path:
    """The file to write an export or a backup of ``database`` to, resolved; refused in one
    line if it is the database itself or one of its files (by device and inode: its name, a
    symbolic or hard link), a symbolic link to nothing, a folder, or exists without ``force``.
    """
    if target.is_symlink() and not target.exists():
        raise TransferError(
            f"{target} is a symbolic link to {os.readlink(target)}, which does not exist: memfts "
            "does not write through it; remove the link or give another path"
        )
    for own in (database, Path(f"{database}-wal"), Path(f"{database}-shm")):
        if _same_file(target, own):
            raise TransferError(
                f"{target} is {'the database' if own == database else 'a file of the database'} "
                f"being copied ({own}); write to another file (nothing was written)"
            )
    if target.is_dir():
        raise TransferError(f"{target} is a folder")
    if target.exists() and not force:
        raise TransferError(f"{target} exists; pass --force to replace it")
    return target.resolve()


def export_file(store: Store, path: str | os.PathLike[str], *, force: bool = False) -> ExportCounts:
    """Write the graph to ``path`` atomically: readers see the old file or the whole new one."""
    target = check_target(Path(path), store.path, force=force)
    try:
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    except OSError as exc:
        raise TransferError(f"cannot write in {target.parent}: {exc.strerror}") from None
    tmp = Path(tmp_name)
    try:
        # mkstemp makes the file 0600; give it the mode a plain write would (the replaced
        # file's mode, else what the umask allows), so a shared file stays readable
        os.fchmod(fd, _mode_for(target))
        with os.fdopen(fd, "wb") as out:
            counts = write_jsonl(store, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return counts
