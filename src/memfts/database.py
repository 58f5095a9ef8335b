"""Opening the SQLite file: pragmas, schema migrations from ``sql/``, and transactions.

This is the one place that opens the database and the one place that begins and ends
transactions. Writes start with ``BEGIN IMMEDIATE`` so that several processes sharing the
file queue on the write lock instead of failing with SQLITE_BUSY mid-transaction (a deferred
read-then-write transaction fails at once, whatever the busy timeout); reads run in a WAL
snapshot and never block writers.

One connection per thread: an APSW connection is not a unit of isolation between threads, so
each thread that uses the database gets its own, opened on first use and set up the same way
(pragmas, then every function registered with :meth:`Database.on_connect`). Within a process,
writers take turns on a lock before asking SQLite for its write lock. The MCP transports never
call the store on their event loop: :meth:`Database.run` runs a call in this database's own
threads (one for writes, a few for reads), so a write waiting for another process's lock holds
up no one's reads, and no call holds up the transport.

Where SQLite can still say "database is locked" — taking the write lock, starting a read
snapshot (during another process's WAL recovery or restart), and ``COMMIT`` — the busy
handler waits, and past it a bounded retry with backoff keeps trying until
``busy_timeout_s``; only then does a call fail, with :class:`StoreBusyError`. Every other
SQLite failure inside a transaction is rolled back and turned into an actionable
:class:`MemftsError` (disk full, read-only, I/O error, damaged file) by :func:`storage_error`.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
import random
import re
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import apsw

from memfts.errors import (
    DatabaseCorruptError,
    DatabaseOpenError,
    DiskFullError,
    InputTooLargeError,
    MemftsError,
    ReadOnlyStoreError,
    StorageError,
    StoreBusyError,
    StoreClosedError,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

BUSY_HANDLER_MS = 250
"""SQLite's own wait for a lock, per attempt; :meth:`Database._retry` retries past it (and
between attempts notices that the database is closing, so a shutdown never waits longer)."""

READ_THREADS = 4
"""Threads :meth:`Database.run` runs reads in (each with its own connection). Writes have one
thread: SQLite takes one writer at a time anyway, and a write waiting for another process's
lock then holds up only the writes queued behind it, never a read."""

JOURNAL_SIZE_LIMIT = 4 * 1024 * 1024
"""Bytes the WAL is truncated to after a checkpoint resets it (it is reused, not regrown)."""

WAL_AUTOCHECKPOINT_PAGES = 1000
"""A commit that leaves the WAL longer than this (4 MB of pages) checkpoints it passively."""

WAL_RESTART_PAGES = 2 * WAL_AUTOCHECKPOINT_PAGES
"""Past this (8 MB), writers stop checkpointing passively and try to rewind the WAL instead.

Under continuous load from several processes some reader always holds a snapshot in the WAL
and the next writer is always queued, so passive checkpoints never finish and SQLite never
rewinds the WAL: it grew to 150 MB in bench/stress.py (8 x 1,000 calls) with SQLite's
autocheckpoint alone. A RESTART checkpoint takes the write lock, waits for the readers of the
moment (each takes milliseconds) and makes the next writer start the WAL from the top, where
``journal_size_limit`` trims the file.
"""

WAL_RESTART_WAIT_MS = 100
"""How long a RESTART checkpoint may hold up writers while it waits for readers."""

WAL_RESTART_BACKOFF_S = (0.25, 8.0)
"""After a RESTART that waited for readers in vain (a long reader, such as an export), this
process waits this long before trying again, doubling up to the maximum: writers are never
held up more than ``WAL_RESTART_WAIT_MS`` now and then."""

APPLICATION_ID = 0x6D656D66
"""``PRAGMA application_id`` of a memfts database ("memf"): how memfts knows its own files."""

MEMFTS_TABLES = frozenset(
    {"entities", "observations", "relations", "entities_fts", "observations_fts", "search_terms"}
)
"""Tables every memfts schema has had: how a file from before the application id is known."""

GRAPH_TABLES = frozenset({"entities", "entity", "observations", "relations", "nodes", "edges"})
"""Tables that say a foreign file holds a memory graph (one ``memfts import`` reads)."""

_SQL_FILE = re.compile(r"^(\d{3})_[\w-]+\.sql$")


def sql_dir() -> Path:
    """Where the numbered schema files are: in the installed package, else the repo's ``sql/``."""
    packaged = Path(str(resources.files("memfts"))) / "sql"
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "sql"


def migrations(directory: Path | None = None) -> list[tuple[int, Path]]:
    """The schema files as ``(version, path)``, in the order they must be applied."""
    directory = directory or sql_dir()
    found = []
    for path in directory.iterdir():
        match = _SQL_FILE.match(path.name)
        if match:
            found.append((int(match.group(1)), path))
    found.sort()
    if [v for v, _ in found] != list(range(1, len(found) + 1)):
        raise RuntimeError(f"schema files in {directory} must be numbered 001, 002... with no gap")
    return found


def _looks_like_json_lines(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            head = file.read(64)
    except OSError:
        return False
    return head.removeprefix(b"\xef\xbb\xbf").lstrip().startswith((b"{", b"["))


_NO_ROOM = {errno.ENOSPC, errno.EFBIG, getattr(errno, "EDQUOT", errno.ENOSPC)}


def storage_error(exc: apsw.Error, path: Path, os_errno: int = 0) -> MemftsError | None:
    """The actionable error for an SQLite failure, or None if it can only be a bug.

    ``os_errno`` is the connection's last system error (``Connection.system_errno``): it tells
    a full disk or a file-size limit (an I/O error to SQLite) from a failing one. Callers
    have rolled back first, so every message may promise that nothing was written.
    """
    code = apsw.mapping_extended_result_codes.get(getattr(exc, "extendedresult", 0), "")
    detail = f"{exc} ({code})" if code else str(exc)
    if os_errno:
        detail += f": {os.strerror(os_errno)}"
    if isinstance(exc, apsw.IOError) and os_errno in _NO_ROOM:
        exc = apsw.FullError(str(exc))
    if isinstance(exc, apsw.IOError) and os_errno == errno.EROFS:
        exc = apsw.ReadOnlyError(str(exc))
    if isinstance(exc, apsw.BusyError):
        return StoreBusyError(
            f"the memory store {path} is busy: another process holds its lock ({detail}); "
            "nothing was written, try again"
        )
    if isinstance(exc, apsw.FullError):
        return DiskFullError(
            f"no room to write {path}: the disk is full or the file hit a size limit "
            f"({detail}); nothing was written. Free some disk space and retry"
        )
    if isinstance(exc, apsw.ReadOnlyError):
        return ReadOnlyStoreError(
            f"cannot write {path}: the file, its folder or its disk is read-only ({detail}); "
            "nothing was written. Fix the permissions or point MEMORY_DB_PATH at a writable file"
        )
    if isinstance(exc, apsw.IOError):
        return StorageError(
            f"disk I/O error on {path} ({detail}); nothing was written. Check that the disk "
            "is present, not full and healthy, then retry"
        )
    if isinstance(exc, apsw.CorruptError):
        return DatabaseCorruptError(
            f"{path} is damaged ({detail}); nothing was written. Stop memfts, keep a copy of "
            "the file, run `memfts check`, then restore a backup or use the sqlite3 shell's "
            ".recover"
        )
    if isinstance(exc, apsw.NotADBError):
        if _looks_like_json_lines(path):
            return DatabaseOpenError(
                f"{path} is a JSON memory file (the official server's memory.jsonl?), not a "
                f"database; memfts left it as it was. Import it: `memfts import {path}` (into the "
                "default database, or add --db NEW.db)"
            )
        return DatabaseOpenError(
            f"{path} is not a SQLite database (the file was not changed): point --db or "
            "MEMORY_DB_PATH at a memfts database, or at a new file name"
        )
    if isinstance(exc, apsw.CantOpenError):
        return DatabaseOpenError(
            f"cannot open the database {path} ({detail}): check that the path is a file in a "
            "folder you can write"
        )
    if isinstance(exc, apsw.TooBigError):
        return InputTooLargeError(
            f"a value is too large for SQLite ({detail}); nothing was written"
        )
    return None


FOREIGN_KEYS_OFF = "memfts:foreign-keys-off"
"""Written in a schema file that rebuilds a table (new table, copy, drop, rename: SQLite's
recipe): the runner applies it with foreign keys off, since dropping the old table would
otherwise cascade; before committing it checks that it left no more rows without the row
they refer to than there were (rows other tools orphaned stay for ``memfts check``), and
makes again any index or trigger the drop took that the file did not recreate itself."""


def _indexes_and_triggers(db: apsw.Connection) -> dict[str, str]:
    return {
        str(name): str(sql)
        for name, sql in db.execute(
            "SELECT name, sql FROM sqlite_schema WHERE type IN ('index', 'trigger') "
            "AND sql IS NOT NULL"
        )
    }


def _foreign_key_violations(db: apsw.Connection) -> int:
    return int(db.execute("SELECT count(*) FROM pragma_foreign_key_check").get)


def _writable(path: Path) -> bool:
    """Whether memfts can write ``path`` (a file that does not exist yet: it is created) and
    the files SQLite keeps beside it (-wal, -shm), so its folder too. False on a read-only
    file, folder or mount, a snapshot, a backup made unwritable."""
    if not path.exists():
        return True
    return os.access(path, os.W_OK) and os.access(path.parent, os.W_OK)


def open_read_only(path: Path, busy_timeout_ms: int = 5_000) -> apsw.Connection:
    """A read-only connection to ``path``, even where nothing can be written beside it.

    A WAL-mode file needs its ``-shm`` (and ``-wal``) file, which SQLite creates if the folder
    can be written, and uses if it exists (a server still has the file open). Neither? Then
    the file is read as it is (``immutable=1``: no locks, no WAL): what a WAL file left
    behind holds past the last checkpoint cannot be read, and is named in a warning.
    """
    text = sqlite_path(path)
    conn = apsw.Connection(text, flags=apsw.SQLITE_OPEN_READONLY)
    conn.set_busy_timeout(busy_timeout_ms)
    try:
        conn.execute("SELECT count(*) FROM sqlite_schema").get  # noqa: B018
        return conn
    except (apsw.ReadOnlyError, apsw.CantOpenError):
        conn.close()
    wal = Path(f"{path}-wal")
    if wal.exists() and wal.stat().st_size > 0:
        log.warning(
            "%s has a WAL file (%s) that cannot be read without write access to its folder: "
            "reading the database as of its last checkpoint",
            path,
            wal,
        )
    uri = "file:" + urllib.parse.quote(text) + "?immutable=1"
    conn = apsw.Connection(uri, flags=apsw.SQLITE_OPEN_READONLY | apsw.SQLITE_OPEN_URI)
    conn.set_busy_timeout(busy_timeout_ms)
    return conn


def sqlite_path(path: Path) -> str:
    """``path`` as SQLite takes it (UTF-8 text), or one line saying why it cannot be."""
    text = str(path)
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        shown = text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise DatabaseOpenError(
            f"the path {shown!r} is not UTF-8 text (\ufffd marks the bytes that are not), and "
            "SQLite takes only UTF-8 file names: rename the file or folder, or use another path"
        ) from None
    return text


def _check_folder(path: Path) -> None:
    """Create the database's folder, or say in one line why it cannot exist."""
    if path.is_dir():
        raise DatabaseOpenError(f"{path} is a folder: give the path of a database file")
    for ancestor in path.parents:
        if ancestor.exists():
            if not ancestor.is_dir():
                raise DatabaseOpenError(
                    f"cannot put the database at {path}: {ancestor} is a file, not a folder"
                )
            break
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseOpenError(
            f"cannot create the folder {path.parent} for the database: {exc.strerror}"
        ) from None


FILE_MODE_ENV = "MEMFTS_FILE_MODE"
DEFAULT_FILE_MODE = 0o600
"""Permissions of the files memfts creates (databases, backups): they hold private notes."""


def file_mode(environ: dict[str, str] | None = None) -> int:
    """The mode for new files: ``$MEMFTS_FILE_MODE`` (octal, such as ``640``), else 0600."""
    env = os.environ if environ is None else environ
    raw = env.get(FILE_MODE_ENV)
    if raw is None:
        return DEFAULT_FILE_MODE
    try:
        mode = int(raw, 8)
    except ValueError:
        mode = -1
    if not 0 <= mode <= 0o777 or not mode & 0o600 == 0o600:
        raise DatabaseOpenError(
            f"{FILE_MODE_ENV}={raw!r} is not a file mode memfts can use: give octal "
            "permissions that let you read and write, such as 600 or 640"
        )
    return mode


def create_private(path: Path) -> bool:
    """Create ``path`` empty with :func:`file_mode` (whatever the umask); False if it exists.

    SQLite gives the -wal and -shm files the database file's mode, so they follow."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return False
    except OSError as exc:
        raise DatabaseOpenError(f"cannot create {path}: {exc.strerror}") from None
    try:
        os.fchmod(fd, file_mode())
    finally:
        os.close(fd)
    return True


ConnectionSetup = Callable[[apsw.Connection], None]
"""A function :meth:`Database.on_connect` runs once on each connection, in its thread."""

AfterWrite = Callable[[apsw.Connection], None]
"""A step :meth:`Database.after_write` runs after each write that changed something."""


@dataclass(eq=False)
class _Handle:
    """One thread's connection, and what this module tracks about it."""

    conn: apsw.Connection
    thread: threading.Thread
    setups_done: int = 0
    """How many of :attr:`Database._setups` have run on this connection."""
    wal_pages: int = 0
    """WAL length after this connection's last commit (see :meth:`Database._upkeep`)."""
    busy: bool = False
    """Inside a transaction (or a checkpoint): not to be closed from another thread."""


class Database:
    """A memfts file: one APSW connection per thread, with its schema brought up to date."""

    def __init__(
        self, path: Path, busy_timeout_s: float = 60.0, *, read_only: bool | None = None
    ) -> None:
        self.path = path
        self.read_only = read_only if read_only is not None else not _writable(path)
        """Opened for reading only: the file, its folder or its disk cannot be written (or
        the caller asked). Reads and searches work; every write fails in one line."""
        self.busy_timeout_s = busy_timeout_s
        self._busy_handler_ms = int(min(BUSY_HANDLER_MS, busy_timeout_s * 1000))
        self._local = threading.local()
        # guards the fields below; re-entrant so that close() works from a signal handler
        # that interrupted this thread's own bookkeeping
        self._state = threading.Condition(threading.RLock())
        self._handles: list[_Handle] = []
        self._active = 0
        self._closing = False
        self._closed = False
        self._setups: list[ConnectionSetup] = []
        self._after_writes: list[AfterWrite] = []
        self._pools: dict[bool, ThreadPoolExecutor] = {}
        self._write_lock = threading.Lock()
        self._version_lock = threading.Lock()
        self._version_conn: apsw.Connection | None = None
        self._next_restart = 0.0
        self._restart_backoff = 0.0
        self._sqlite_path = sqlite_path(self.path)
        self._identified = False
        if not self.read_only:
            file_mode()  # a wrong MEMFTS_FILE_MODE is said at once, not at the first backup
            _check_folder(self.path)
            create_private(self.path)  # before SQLite creates it with the umask's mode
        self._handle()  # opens this thread's connection: fails here if the file is unusable
        try:
            if not self.read_only:
                self._migrate()
        except BaseException:
            self.close(wait_s=0)
            raise

    # ---- connections ---------------------------------------------------------------------

    def on_connect(self, setup: ConnectionSetup) -> None:
        """Run ``setup(conn)`` once on every connection to this database, in its own thread.

        The seam for what must exist per connection rather than in the file: scalar
        functions, ``temp`` tables (fts5vocab), tokenizers, per-connection pragmas. It runs
        on connections opened later when they open, and on those already open before their
        next transaction starts (outside any transaction). Register at start-up, before the
        store serves calls. For example::

            db.on_connect(lambda conn: conn.create_scalar_function("f", f, 1, deterministic=True))
        """
        with self._state:
            self._setups.append(setup)

    def after_write(self, step: AfterWrite) -> None:
        """Run ``step(conn)`` after each committed write that changed something, in a
        transaction of its own (skipped when another process holds the write lock): bounded
        upkeep of what writes leave behind, such as the full-text indexes' segments
        (:func:`memfts.segments.merge_step`). Register at start-up."""
        with self._state:
            self._after_writes.append(step)

    @property
    def conn(self) -> apsw.Connection:
        """This thread's connection, with every :meth:`on_connect` setup applied."""
        return self._handle().conn

    def _handle(self) -> _Handle:
        handle: _Handle | None = getattr(self._local, "handle", None)
        if handle is None:
            handle = _Handle(self._connect(), threading.current_thread())
            # our own hook replaces SQLite's autocheckpoint: see _upkeep()
            handle.conn.set_wal_hook(self._note_wal_pages(handle))
            with self._state:
                if self._closed:
                    handle.conn.close()
                    raise self._closed_error()
                # threads come and go (a pool's idle threads expire): close their connections
                gone = [h for h in self._handles if not h.thread.is_alive() and not h.busy]
                self._handles = [h for h in self._handles if h not in gone] + [handle]
            for old in gone:
                old.conn.close()
            self._local.handle = handle
        while handle.setups_done < len(self._setups):
            setup = self._setups[handle.setups_done]
            setup(handle.conn)
            handle.setups_done += 1
        return handle

    def _connect(self) -> apsw.Connection:
        if self.read_only:
            return self._connect_read_only()
        try:
            conn = apsw.Connection(self._sqlite_path)
        except apsw.Error as exc:
            raise self._open_error(exc) from None
        try:
            conn.set_busy_timeout(self._busy_handler_ms)
            if not self._identified:
                # Before anything below could change the file (the WAL switch, a migration):
                # refuse another program's database, and a newer memfts's.
                self._identify(conn)
                # Changing the journal mode needs a moment alone with the file: retried.
                mode = self._retry(conn, lambda: conn.pragma("journal_mode", "wal"))
                if mode != "wal":
                    raise DatabaseOpenError(
                        f"{self.path}: could not switch to WAL mode (got {mode!r}); the file or "
                        "its folder may be read-only, or on a file system without shared memory"
                    )
                self._identified = True
            # NORMAL: in WAL a commit survives any process crash; only an OS crash or power
            # loss may roll back the last few commits, and each commit costs no fsync.
            # See bench/STRESS.md for the measured difference and when to choose FULL.
            conn.pragma("synchronous", "NORMAL")
            conn.pragma("foreign_keys", "ON")
            conn.pragma("journal_size_limit", JOURNAL_SIZE_LIMIT)
        except apsw.Error as exc:
            conn.close()
            raise self._open_error(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_read_only(self) -> apsw.Connection:
        """A connection that never writes: to a file that cannot be written, it is all there
        is. Identified like any other; it must have this memfts's schema (it cannot be
        migrated)."""
        conn = open_read_only(self.path, self._busy_handler_ms)
        try:
            if not self._identified:
                self._identify(conn)
                version = self._retry(conn, lambda: conn.pragma("user_version"))
                newest = migrations()[-1][0]
                if version != newest:
                    raise DatabaseOpenError(
                        f"{self.path} cannot be written and has schema version {version}; this "
                        f"memfts reads version {newest}: open it once where it can be written "
                        "(it is upgraded then), or with the memfts that wrote it"
                    )
                self._identified = True
            conn.pragma("foreign_keys", "ON")
        except apsw.Error as exc:
            conn.close()
            raise self._open_error(exc) from None
        except BaseException:
            conn.close()
            raise
        return conn

    def _read_only_error(self) -> ReadOnlyStoreError:
        return ReadOnlyStoreError(
            f"the memory store {self.path} is read-only (its file, folder or disk cannot be "
            "written): it can be read and searched, not changed; nothing was written"
        )

    def _identify(self, conn: apsw.Connection) -> None:
        """Refuse a file that is not a memfts database, with what to do instead.

        A memfts file carries :data:`APPLICATION_ID`; one from before it did (v0.1) is known by
        its schema version and tables, and gets the mark when it is migrated. A new, empty
        file is a new memfts database. Only reads: a refused file is left as it was.
        """

        def look() -> tuple[int, int, set[str]]:
            tables = {
                name
                for (name,) in conn.execute(
                    "SELECT name FROM sqlite_schema WHERE type = 'table' "
                    "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\'"
                )
            }
            return conn.pragma("application_id"), conn.pragma("user_version"), tables

        application_id, version, tables = self._retry(conn, look)
        if application_id == APPLICATION_ID or (application_id == 0 and not tables):
            self._refuse_newer(version)
            return
        if application_id == 0 and version >= 1 and tables >= MEMFTS_TABLES:
            self._refuse_newer(version)  # a memfts file from before the mark
            return
        if application_id != 0:
            raise DatabaseOpenError(
                f"{self.path} is another program's SQLite database (application_id "
                f"{application_id:#x}), not a memfts one; memfts left it as it was: point --db "
                "or MEMORY_DB_PATH at a memfts database, or at a new file name"
            )
        if tables & GRAPH_TABLES:
            raise DatabaseOpenError(
                f"{self.path} is a memory graph written by another program (a SQLite fork of the "
                "memory server?), not a memfts database; memfts left it as it was. Import it: "
                f"`memfts import {self.path}` (into the default database, or add --db NEW.db)"
            )
        shown = ", ".join(sorted(tables)[:5]) + (", ..." if len(tables) > 5 else "")
        raise DatabaseOpenError(
            f"{self.path} is another program's SQLite database (tables: {shown}), not a memfts "
            "one; memfts left it as it was: point --db or MEMORY_DB_PATH at a memfts database, "
            "or at a new file name"
        )

    def _open_error(self, exc: apsw.Error) -> MemftsError:
        error = storage_error(exc, self.path)
        if error is None or isinstance(error, StoreBusyError | StorageError):
            # At start-up every failure is "cannot open"; keep SQLite's words for the reason.
            message = str(error) if error is not None else f"{exc}"
            return DatabaseOpenError(f"cannot open the database: {message}")
        return error

    def _refuse_newer(self, current: int) -> None:
        files = migrations()
        newest = files[-1][0] if files else 0
        if current > newest:
            raise DatabaseOpenError(
                f"{self.path} has schema version {current}, newer than this memfts "
                f"understands ({newest}); upgrade memfts (the file was not changed)"
            )

    def _migrate(self) -> None:
        """Bring the schema up to date, one numbered file per transaction, and mark the file
        as memfts's (:data:`APPLICATION_ID`) if it is not yet."""
        with self.read() as db:
            marked = db.pragma("application_id") == APPLICATION_ID
        if not marked:
            with self.write() as db:
                db.pragma("application_id", APPLICATION_ID)
        for version, path in migrations():
            sql = path.read_text(encoding="utf-8")
            rebuilds = FOREIGN_KEYS_OFF in sql
            if rebuilds:  # only outside a transaction does this pragma take effect
                self.conn.pragma("foreign_keys", "OFF")
            try:
                with self.write() as db:
                    current = db.pragma("user_version")
                    self._refuse_newer(current)  # another process may have upgraded it since
                    if current >= version:
                        continue
                    if current != version - 1:
                        raise DatabaseOpenError(f"{self.path}: unexpected schema version {current}")
                    orphans = _foreign_key_violations(db) if rebuilds else 0
                    kept = _indexes_and_triggers(db) if rebuilds else {}
                    db.execute(sql)
                    if rebuilds:
                        if _foreign_key_violations(db) > orphans:
                            raise DatabaseOpenError(
                                f"{self.path}: schema {path.name} would have left rows without "
                                "the row they refer to; nothing was changed (a bug: please "
                                "report it)"
                            )
                        # a dropped table takes its indexes and triggers with it: any the
                        # file did not make again (one added since it was written) come back
                        for name in kept.keys() - _indexes_and_triggers(db).keys():
                            db.execute(kept[name])
                    db.pragma("user_version", version)
                    log.info("applied schema %s to %s", path.name, self.path)
            finally:
                if rebuilds:
                    self.conn.pragma("foreign_keys", "ON")

    # ---- off the event loop --------------------------------------------------------------

    async def run(self, call: Callable[..., T], /, *args: Any, writes: bool = False) -> T:
        """``call(*args)`` in one of this database's threads, awaited without blocking the loop.

        For async code (the MCP transports, a web UI): every store method blocks, on SQLite
        and on other processes' locks, so none may run on an event loop. Reads run on
        :data:`READ_THREADS` threads, writes (``writes=True``) on one; each thread keeps its
        own connection for the life of the database. A call cancelled before it starts never
        runs; one already running finishes (its transaction is all or nothing either way).
        """
        with self._state:
            if self._closing:
                raise self._closed_error()
            pool = self._pools.get(writes)
            if pool is None:
                pool = self._pools[writes] = ThreadPoolExecutor(
                    max_workers=1 if writes else READ_THREADS,
                    thread_name_prefix="memfts-write" if writes else "memfts-read",
                )
        return await asyncio.wrap_future(pool.submit(call, *args))

    # ---- transactions --------------------------------------------------------------------

    @contextmanager
    def _in_use(self) -> Iterator[_Handle]:
        """This thread's connection, marked busy so that :meth:`close` leaves it alone."""
        with self._state:
            if self._closing:
                raise self._closed_error()
            self._active += 1  # close() now waits for this call before closing connections
        handle: _Handle | None = None
        try:
            handle = self._handle()
            handle.busy = True
            yield handle
        finally:
            with self._state:
                if handle is not None:
                    handle.busy = False
                self._active -= 1
                self._state.notify_all()

    @contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """One write transaction, taken with ``BEGIN IMMEDIATE`` and retried while busy."""
        if self.read_only:
            raise self._read_only_error()
        with self._in_use() as handle:
            self._take_write_lock()
            try:
                conn = handle.conn
                self._retry(conn, lambda: conn.execute("BEGIN IMMEDIATE"))
                changes = conn.total_changes()
                yield from self._finish(conn, writing=True)
                if conn.total_changes() != changes:
                    self._after_write(conn)
                self._upkeep(handle)
            finally:
                self._write_lock.release()

    @contextmanager
    def read(self) -> Iterator[apsw.Connection]:
        """One read snapshot: consistent across its queries, never blocks writers.

        The snapshot is taken here (by a first read), not lazily by the caller's first query,
        so that a busy reply while it is taken is retried like any other.
        """
        with self._in_use() as handle:
            conn = handle.conn
            self._retry(conn, lambda: conn.execute("BEGIN; SELECT 1 FROM sqlite_schema LIMIT 1"))
            yield from self._finish(conn, writing=False)

    def _take_write_lock(self) -> None:
        """This process's turn to write: one writer thread at a time asks SQLite for the lock
        (they would only poll each other's lock through SQLite's busy handler)."""
        deadline = time.monotonic() + self.busy_timeout_s
        while not self._write_lock.acquire(timeout=self._busy_handler_ms / 1000):
            if self._closing:
                raise self._closed_error()
            if time.monotonic() >= deadline:
                raise StoreBusyError(
                    f"the memory store {self.path} stayed busy with this process's other "
                    f"writes for {self.busy_timeout_s:g} s (MEMFTS_BUSY_TIMEOUT_S); nothing "
                    "was written, try again"
                )

    def _after_write(self, conn: apsw.Connection) -> None:
        """After a committed write that changed something, the steps of :meth:`after_write`,
        in one transaction of their own, before the write returns. Upkeep only: the
        transaction takes the write lock only if a step writes (one that finds nothing to do
        leaves no trace and holds up no writer), without waiting for it; if another process
        holds it, or a step fails in any way, the upkeep is rolled back and skipped (logged), a
        later write does it, and the write that came before stands as committed."""
        if not self._after_writes:
            return
        conn.set_busy_timeout(0)
        try:
            conn.execute("BEGIN")
            for step in self._after_writes:
                step(conn)
            conn.execute("COMMIT")
        except Exception as exc:  # upkeep: the write it follows is committed whatever happens
            self._rollback(conn)
            level = logging.DEBUG if isinstance(exc, apsw.BusyError) else logging.INFO
            log.log(level, "upkeep after a write to %s skipped: %r", self.path, exc)
        finally:
            conn.set_busy_timeout(self._busy_handler_ms)

    def _note_wal_pages(self, handle: _Handle) -> Callable[[apsw.Connection, str, int], int]:
        def hook(conn: apsw.Connection, name: str, pages: int) -> int:
            """WAL hook, run by SQLite after each commit: remember how long the WAL is."""
            handle.wal_pages = pages
            return apsw.SQLITE_OK

        return hook

    def _upkeep(self, handle: _Handle) -> None:
        """Keep the WAL bounded, after a committed write (whose data is safe whatever happens).

        Up to ``WAL_RESTART_PAGES``, passive checkpoints as SQLite's autocheckpoint would do;
        past it, a RESTART checkpoint (see there). A busy or failed checkpoint is only logged:
        a later commit tries again.
        """
        pages, handle.wal_pages = handle.wal_pages, 0
        if pages < WAL_AUTOCHECKPOINT_PAGES:
            return
        conn = handle.conn
        try:
            if pages < WAL_RESTART_PAGES:
                conn.execute("PRAGMA wal_checkpoint(PASSIVE)")
                return
            now = time.monotonic()
            if now < self._next_restart:
                return
            conn.set_busy_timeout(WAL_RESTART_WAIT_MS)
            try:
                busy, frames, _ = conn.execute("PRAGMA wal_checkpoint(RESTART)").get
            finally:
                conn.set_busy_timeout(self._busy_handler_ms)
            if not busy:
                self._restart_backoff = 0.0
            elif frames >= 0:  # it got the lock but readers stayed: back off
                first, most = WAL_RESTART_BACKOFF_S
                self._restart_backoff = min(max(self._restart_backoff * 2, first), most)
                self._next_restart = now + self._restart_backoff
            log.debug("WAL restart at %d pages: busy=%s frames=%s", pages, busy, frames)
        except apsw.Error as exc:
            log.info("checkpoint of %s skipped: %s", self.path, exc)

    def _retry(
        self, conn: apsw.Connection, action: Callable[[], T], *, keep_open: bool = False
    ) -> T:
        """Run ``action`` until SQLite stops answering busy, for at most ``busy_timeout_s``.

        The busy handler has already waited inside each attempt. A busy ``BEGIN`` (or first
        read) leaves no transaction behind; a busy ``COMMIT`` keeps its transaction open to be
        tried again (``keep_open``). Past the bound, or once the database is closing, the
        transaction is rolled back.
        """
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.002
        while True:
            try:
                return action()
            except apsw.BusyError:
                late = time.monotonic() >= deadline
                if not keep_open or late or self._closing:
                    self._rollback(conn)
                if self._closing:
                    raise self._closed_error() from None
                if late:
                    raise StoreBusyError(
                        f"the memory store {self.path} stayed locked by other processes for "
                        f"{self.busy_timeout_s:g} s (MEMFTS_BUSY_TIMEOUT_S); nothing was "
                        "written, try again"
                    ) from None
                # jitter: processes that collided once should not collide again in lockstep
                time.sleep(delay * random.uniform(0.5, 1.5))
                delay = min(delay * 2, 0.1)
            except apsw.Error as exc:
                error = self._storage_error(conn, exc)
                if error is None:
                    raise
                raise error from exc

    def _finish(self, conn: apsw.Connection, *, writing: bool) -> Iterator[apsw.Connection]:
        """Hand the open transaction to the caller, then commit it or roll it back."""
        try:
            yield conn
        except apsw.Error as exc:
            error = self._storage_error(conn, exc)
            if error is None:
                raise
            raise error from exc
        except BaseException:
            self._rollback(conn)
            raise
        if conn.get_autocommit():
            # SQLite rolled the transaction back by itself after an error the caller caught
            # (full disk, I/O error): for a write, never pretend the data is stored.
            if writing:
                raise StorageError(
                    f"the write to {self.path} was rolled back by SQLite; nothing was written, "
                    "try again"
                )
            return
        self._retry(conn, lambda: self._commit(conn), keep_open=True)

    def _commit(self, conn: apsw.Connection) -> None:
        try:
            conn.execute("COMMIT")
        except apsw.BusyError:
            if conn.get_autocommit():
                raise StoreBusyError(
                    f"the memory store {self.path} was busy at commit and the write was rolled "
                    "back; nothing was written, try again"
                ) from None
            raise  # still open: _retry tries the COMMIT again

    def _storage_error(self, conn: apsw.Connection, exc: apsw.Error) -> MemftsError | None:
        """Roll back, then name what went wrong (read errno first: the rollback may reset it)."""
        os_errno = conn.system_errno
        self._rollback(conn)
        if isinstance(exc, apsw.InterruptError) and self._closing:
            return self._closed_error()
        return storage_error(exc, self.path, os_errno)

    def _rollback(self, conn: apsw.Connection) -> None:
        """End the open transaction, if any, without hiding the error that ended it."""
        if conn.get_autocommit():
            return
        try:
            conn.execute("ROLLBACK")
        except apsw.Error as exc:
            log.warning("rollback of %s failed: %s", self.path, exc)

    def _closed_error(self) -> StoreClosedError:
        return StoreClosedError(
            f"the memory store {self.path} is closing (memfts is shutting down); nothing was "
            "written, try again once it is back"
        )

    def copy_to(self, target: Path) -> None:
        """Copy the database, as it is at this moment, into the new file ``target``.

        SQLite's online backup in one step: one read snapshot, so the copy is consistent while
        other connections and processes go on writing (they are not held up). The copy is a
        single file (rollback journal, no -wal) with the database's application id, schema
        and pages."""
        with self._in_use() as handle:
            dest = apsw.Connection(sqlite_path(target))
            try:
                with dest.backup("main", handle.conn, "main") as copying:
                    while not copying.done:
                        self._retry(handle.conn, lambda: copying.step(-1))
                dest.pragma("journal_mode", "delete")
            except apsw.Error as exc:
                error = storage_error(exc, target, dest.system_errno)
                if error is None:
                    raise
                raise error from exc
            finally:
                dest.close()

    def data_version(self) -> int:
        """A number that changes whenever a connection of any process (this one included)
        commits a change to the file. Each connection counts for itself, so this is read on
        one connection of its own: the numbers compare whichever thread asks."""
        with self._version_lock:
            if self._version_conn is None:
                self._version_conn = self._connect()
            conn = self._version_conn
            with self._in_use():  # close() waits for it, like any transaction
                self._retry(
                    conn, lambda: conn.execute("BEGIN; SELECT 1 FROM sqlite_schema LIMIT 1")
                )
                try:
                    return int(conn.data_version())
                finally:
                    self._rollback(conn)

    # ---- upkeep --------------------------------------------------------------------------

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Copy the WAL back into the database file (``TRUNCATE`` also empties the WAL).

        Returns SQLite's ``(busy, wal_frames, checkpointed_frames)``.
        """
        if self.read_only:
            raise self._read_only_error()
        with self._in_use() as handle:
            try:
                row = handle.conn.execute(f"PRAGMA wal_checkpoint({mode})").get
            except apsw.Error as exc:
                error = storage_error(exc, self.path, handle.conn.system_errno)
                if error is None:
                    raise
                raise error from exc
            busy, frames, done = row
            return int(busy), int(frames), int(done)

    def vacuum(self) -> None:
        """Rewrite the file without free pages."""
        if self.read_only:
            raise self._read_only_error()
        with self._in_use() as handle:
            conn = handle.conn
            self._retry(conn, lambda: conn.execute("VACUUM"))

    def close(self, wait_s: float = 30.0) -> None:
        """Close every connection, folding the WAL back into the file if no one else reads it.

        New calls are refused from now on, and calls waiting for a lock give up (nothing
        written). Calls in progress get ``wait_s`` to finish; past that they are interrupted
        (rolled back). The last connection to close also deletes the WAL; if other processes
        still have the file open, a passive checkpoint copies what it can without waiting for
        them. Safe to call twice, and from a signal handler: a connection still in use is
        left to SQLite's recovery, which loses no committed write.
        """
        with self._state:
            if self._closed:
                return
            self._closing = True
            pools, self._pools = list(self._pools.values()), {}
            deadline = time.monotonic() + wait_s
            while self._active and (left := deadline - time.monotonic()) > 0:
                self._state.wait(left)
            if self._active:
                for handle in self._handles:
                    if handle.busy:
                        handle.conn.interrupt()
                self._state.wait_for(lambda: not self._active, timeout=1.0)
            self._closed = True
            handles, self._handles = self._handles, []
        for pool in pools:
            pool.shutdown(wait=False, cancel_futures=True)
        if self._version_conn is not None and self._version_lock.acquire(timeout=1):
            self._version_conn.close()
            self._version_lock.release()
        idle = [h for h in handles if not h.busy]
        if len(idle) < len(handles):
            log.warning(
                "closing %s: a call is still running; leaving the WAL for recovery", self.path
            )
        for i, handle in enumerate(idle):
            if i == 0 and not self.read_only:
                try:  # a busy checkpoint is fine: the next closer does it
                    handle.conn.set_busy_timeout(0)
                    handle.conn.pragma("wal_checkpoint(PASSIVE)")
                except apsw.Error as exc:
                    log.debug("checkpoint on close skipped: %s", exc)
            try:
                handle.conn.close()
            except apsw.Error as exc:
                log.warning("closing a connection to %s failed: %s", self.path, exc)
