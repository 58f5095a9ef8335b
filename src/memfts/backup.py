"""Backups a team can trust: ``memfts backup`` and ``memfts restore``.

A backup is a consistent copy made while servers write (SQLite's online backup API in one
step: one read snapshot, writers are not held up), checked before it is kept, written beside
its target and renamed into place, with the mode of the files memfts creates (0600 unless
``MEMFTS_FILE_MODE`` says otherwise). Continuous replication is Litestream's job (README).

A restore checks the backup first, on a copy upgraded to this memfts's schema (SQLite's
integrity check, each full-text index's, orphaned rows); refuses another program's file and
a database other processes have open (unless forced: they then see the restored memory at
once); keeps the database it replaces beside it; and puts the backup in through SQLite (the
online backup API again), so that no connection ever sees half of either.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import apsw

from memfts.database import create_private, open_read_only, sqlite_path
from memfts.errors import MemftsError
from memfts.models import BackupReport, HealthReport
from memfts.store import Store
from memfts.transfer import check_target


class BackupError(MemftsError):
    """A backup or a restore that cannot be done safely; nothing was changed."""


@contextlib.contextmanager
def _temporary_beside(target: Path, label: str) -> Iterator[Path]:
    """A new private file in ``target``'s folder (so a rename is atomic), removed unless kept."""
    stamp = f"{os.getpid()}-{time.monotonic_ns()}"
    path = target.parent / f".{target.name}.{label}-{stamp}"
    try:
        if not create_private(path):
            raise BackupError(f"{path} exists; remove it")
    except MemftsError as exc:
        raise BackupError(f"cannot write in {target.parent}: {exc}") from None
    try:
        yield path
    finally:
        for leftover in (path, Path(f"{path}-journal"), Path(f"{path}-wal"), Path(f"{path}-shm")):
            leftover.unlink(missing_ok=True)


def _verified(path: Path, what: str) -> HealthReport:
    """Open ``path`` as a store (upgrading an older schema) and check all of it."""
    try:
        store = Store(path, read_only=False)
    except MemftsError as exc:
        raise BackupError(f"{what} cannot be used: {exc}") from None
    try:
        report = store.check()
    finally:
        store.close()
    if not report.ok:
        found = (
            f"sqlite: {report.sqlite_integrity}; full-text: {report.fts_integrity}; "
            f"orphaned rows: {report.orphaned_rows}"
        )
        found = " ".join(found.split())  # one line
        if len(found) > 300:
            found = found[:299] + "…"
        raise BackupError(f"{what} is damaged ({found}); nothing was changed")
    return report


def _single_file(path: Path) -> None:
    """Back to a rollback journal: a backup is one self-contained file, readable where
    nothing can be written beside it."""
    conn = apsw.Connection(sqlite_path(path))
    try:
        conn.pragma("journal_mode", "delete")
    finally:
        conn.close()


def backup(store: Store, target: Path, *, force: bool = False) -> BackupReport:
    """Copy ``store`` to ``target`` as it is now, check the copy, and put it in place."""
    started = time.perf_counter()
    target = check_target(Path(target), store.path, force=force)
    with _temporary_beside(target, "backup") as copy:
        store.copy_to(copy)
        report = _verified(copy, f"the copy of {store.path}")
        _single_file(copy)
        with open(copy, "rb+") as file:  # on disk before it takes the target's name
            os.fsync(file.fileno())
        os.replace(copy, target)
    return BackupReport(
        path=str(target),
        bytes=target.stat().st_size,
        seconds=time.perf_counter() - started,
        entities=report.entities or 0,
        observations=report.observations or 0,
        relations=report.relations or 0,
    )


def restore(source: Path, database: Path, *, force: bool = False) -> BackupReport:
    """Put the backup ``source`` in the place of ``database`` (see the module's docstring).

    Returns what was restored; ``replaced`` names where the old database was kept."""
    started = time.perf_counter()
    source = Path(source)
    if not source.is_file():
        raise BackupError(f"{source}: no such backup file")
    if database.exists() and os.path.samefile(source, database):
        raise BackupError(f"{source} is the database itself; nothing to restore")
    database.parent.mkdir(parents=True, exist_ok=True)
    with _temporary_beside(database, "restore") as staged:
        try:
            reader = open_read_only(source)
            try:
                _copy_between(reader, staged)
            finally:
                reader.close()
        except apsw.Error as exc:
            hint = ""
            if isinstance(exc, apsw.NotADBError) and source.read_bytes()[:1] in (b"{", b"["):
                hint = f" (a JSON memory file? `memfts import {source}` merges it in)"
            raise BackupError(
                f"{source} cannot be read as a SQLite database: {exc}{hint}; nothing was changed"
            ) from None
        report = _verified(staged, f"the backup {source}")
        if not database.exists():
            os.replace(staged, database)
            kept = None
        else:
            kept = _replace_contents(database, staged, force=force)
    return BackupReport(
        path=str(database),
        bytes=database.stat().st_size,
        seconds=time.perf_counter() - started,
        entities=report.entities or 0,
        observations=report.observations or 0,
        relations=report.relations or 0,
        replaced=str(kept) if kept else None,
    )


def _copy_between(source: apsw.Connection, target: Path) -> None:
    dest = apsw.Connection(sqlite_path(target))
    try:
        with dest.backup("main", source, "main") as copying:
            while not copying.done:
                copying.step(-1)
        dest.pragma("journal_mode", "delete")
    finally:
        dest.close()


def _replace_contents(database: Path, staged: Path, *, force: bool) -> Path:
    """Copy ``staged`` into the existing ``database`` through SQLite; keep the old one beside."""
    try:
        Store(database).close()  # a memfts file (anything else is refused, untouched)
    except MemftsError as exc:
        raise BackupError(f"will not restore over {database}: {exc}") from None
    if not force and _in_use(database):
        raise BackupError(
            f"{database} is in use by other processes (memfts servers?): stop them first, or "
            "pass --force to restore while they run (they see the restored memory at once); "
            "nothing was changed"
        )
    kept = _free_name(database, "before-restore")
    current = Store(database)
    try:
        current.copy_to(kept)
    finally:
        current.close()
    conn = apsw.Connection(sqlite_path(database))
    try:
        conn.set_busy_timeout(30_000)
        staged_conn = apsw.Connection(sqlite_path(staged), flags=apsw.SQLITE_OPEN_READONLY)
        try:  # one step: one write transaction; every reader sees all of the old or the new
            with conn.backup("main", staged_conn, "main") as copying:
                while not copying.done:
                    copying.step(-1)
        finally:
            staged_conn.close()
        conn.pragma("journal_mode", "wal")
    except apsw.Error as exc:
        raise BackupError(
            f"restoring into {database} failed ({exc}); the database was kept as {kept}"
        ) from None
    finally:
        conn.close()
    return kept


def _in_use(database: Path) -> bool:
    """Whether another connection has ``database`` open: leaving WAL mode needs them all
    gone (SQLite answers busy at once, with no wait). Left in WAL mode either way."""
    conn = apsw.Connection(sqlite_path(database))
    try:
        conn.set_busy_timeout(0)
        try:
            conn.pragma("journal_mode", "delete")
        except apsw.BusyError:
            return True
        conn.pragma("journal_mode", "wal")
        return False
    finally:
        conn.close()


def _free_name(database: Path, label: str) -> Path:
    """``DB.label-TIME`` (``-2``, ``-3``... if taken), created private and empty."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    for n in range(1, 1000):
        path = database.with_name(f"{database.name}.{label}-{stamp}" + (f"-{n}" if n > 1 else ""))
        if create_private(path):
            return path
    raise BackupError(f"cannot find a free name for {database.name}.{label}-{stamp}")
