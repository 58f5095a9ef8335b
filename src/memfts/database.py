"""Opening the SQLite file: pragmas, schema migrations from ``sql/``, and transactions.

This is the one place that opens the database and the one place that begins and ends
transactions. Writes start with ``BEGIN IMMEDIATE`` so that several processes sharing the
file queue on the write lock instead of failing with SQLITE_BUSY mid-transaction (a deferred
read-then-write transaction fails at once, whatever the busy timeout); reads run in a WAL
snapshot and never block writers. One connection per process, used by one thread at a time
(``self._lock``): MCP runs sync tools in worker threads, and an APSW connection is not a unit
of isolation between threads.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

import apsw

from memfts.errors import DatabaseOpenError, MemftsError, StoreBusyError

log = logging.getLogger(__name__)

BUSY_HANDLER_MS = 5_000
"""SQLite's own wait for a lock, per attempt; :meth:`Database._begin` retries past it."""

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


class Database:
    """One APSW connection to a memfts file, with its schema brought up to date."""

    def __init__(self, path: Path, busy_timeout_s: float = 60.0) -> None:
        self.path = path
        self.busy_timeout_s = busy_timeout_s
        self._lock = threading.Lock()
        self.conn = self._connect()
        try:
            self._migrate()
        except BaseException:
            self.conn.close()
            raise

    def _connect(self) -> apsw.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DatabaseOpenError(
                f"cannot create the folder for the database {self.path}: {exc.strerror}"
            ) from None
        try:
            conn = apsw.Connection(str(self.path))
        except apsw.CantOpenError:
            raise DatabaseOpenError(
                f"cannot open the database {self.path}: check that the folder is writable"
            ) from None
        try:
            conn.set_busy_timeout(BUSY_HANDLER_MS)
            mode = conn.pragma("journal_mode", "wal")
            if mode != "wal":
                raise DatabaseOpenError(f"{self.path}: could not switch to WAL mode (got {mode})")
            # NORMAL: in WAL a commit survives any process crash; only an OS crash or power
            # loss may roll back the last few commits, and each commit costs no fsync.
            conn.pragma("synchronous", "NORMAL")
            conn.pragma("foreign_keys", "ON")
            conn.pragma("journal_size_limit", 4 * 1024 * 1024)
        except apsw.NotADBError:
            conn.close()
            raise DatabaseOpenError(
                f"{self.path} is not a SQLite database: point --db or MEMORY_DB_PATH elsewhere"
            ) from None
        except apsw.CorruptError:
            conn.close()
            raise DatabaseOpenError(
                f"{self.path} is corrupt: restore a backup, or try the sqlite3 shell's .recover"
            ) from None
        except (apsw.ReadOnlyError, apsw.CantOpenError):
            conn.close()
            raise DatabaseOpenError(
                f"cannot write the database {self.path}: check file and folder permissions"
            ) from None
        except MemftsError:
            conn.close()
            raise
        return conn

    def _migrate(self) -> None:
        """Bring the schema up to date, one numbered file per transaction."""
        files = migrations()
        newest = files[-1][0] if files else 0
        for version, path in files:
            with self.write() as db:
                current = db.pragma("user_version")
                if current > newest:
                    raise DatabaseOpenError(
                        f"{self.path} has schema version {current}, newer than this memfts "
                        f"understands ({newest}); upgrade memfts (the file was not changed)"
                    )
                if current >= version:
                    continue
                if current != version - 1:
                    raise DatabaseOpenError(f"{self.path}: unexpected schema version {current}")
                db.execute(path.read_text(encoding="utf-8"))
                db.pragma("user_version", version)
                log.info("applied schema %s to %s", path.name, self.path)

    @contextmanager
    def write(self) -> Iterator[apsw.Connection]:
        """One write transaction, taken with ``BEGIN IMMEDIATE`` and retried while busy."""
        with self._lock:
            self._begin("BEGIN IMMEDIATE")
            yield from self._finish()

    @contextmanager
    def read(self) -> Iterator[apsw.Connection]:
        """One read snapshot: consistent across its queries, never blocks writers."""
        with self._lock:
            self._begin("BEGIN")
            yield from self._finish()

    def _begin(self, statement: str) -> None:
        deadline = time.monotonic() + self.busy_timeout_s
        delay = 0.005
        while True:
            try:
                self.conn.execute(statement)
                return
            except apsw.BusyError:
                # The busy handler already waited; keep trying up to the configured bound.
                if time.monotonic() >= deadline:
                    raise StoreBusyError(
                        f"the memory store {self.path} stayed locked by other processes for "
                        f"{self.busy_timeout_s:g} s; nothing was written, try again"
                    ) from None
                time.sleep(delay)
                delay = min(delay * 2, 0.25)

    def _finish(self) -> Iterator[apsw.Connection]:
        try:
            yield self.conn
        except BaseException:
            if not self.conn.get_autocommit():
                self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def checkpoint(self, mode: str = "PASSIVE") -> None:
        """Copy the WAL back into the database file (``TRUNCATE`` also empties the WAL)."""
        with self._lock:
            self.conn.pragma(f"wal_checkpoint({mode})")

    def vacuum(self) -> None:
        """Rewrite the file without free pages."""
        with self._lock:
            self.conn.execute("VACUUM")

    def close(self) -> None:
        """Close the connection, folding the WAL back into the database if no one else reads it."""
        with self._lock:
            try:
                self.conn.set_busy_timeout(0)
                self.conn.pragma("wal_checkpoint(PASSIVE)")
            except apsw.Error as exc:  # a busy checkpoint is fine: the next closer does it
                log.debug("checkpoint on close skipped: %s", exc)
            self.conn.close()
