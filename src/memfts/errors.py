"""Errors memfts raises on purpose. Each message says what was wrong and what to do.

The server turns every :class:`MemftsError` into an MCP tool error carrying its message;
anything else is a bug and is reported as one.
"""


class MemftsError(Exception):
    """Base class: a failure the caller can act on. Nothing was written."""


class EntityNotFoundError(MemftsError):
    def __init__(self, name: str) -> None:
        super().__init__(f"Entity with name {name} not found")
        self.name = name


class InputTooLargeError(MemftsError):
    """A value or a batch is over one of the configured :class:`~memfts.store.Limits`."""


class StoreBusyError(MemftsError):
    """Other processes held the write lock for longer than the configured bound."""


class StoreClosedError(MemftsError):
    """The store is closing (the server is shutting down): the call was not run, or rolled back."""


class DatabaseOpenError(MemftsError):
    """The database file cannot be opened or used as a memfts store."""


class StorageError(MemftsError):
    """The file system or the file failed under a call (disk full, I/O error, damage...).

    The transaction was rolled back: the call stored nothing.
    """


class DiskFullError(StorageError):
    """The disk (or a size limit on the file) has no room for the write."""


class ReadOnlyStoreError(StorageError):
    """The database file, its folder or its file system cannot be written."""


class DatabaseCorruptError(StorageError):
    """SQLite found the file damaged; memfts stops writing to it."""


# ---- curation (rename, merge, edit: memfts ui and the CLI) ------------------------------


class InvalidInputError(MemftsError):
    """A value given to a curation command is not acceptable (blank, NUL, itself...)."""


class NameTakenError(MemftsError):
    """A rename onto a name another entity has: merging is what was meant."""


class ObservationNotFoundError(MemftsError):
    """The entity has no such observation (any more): it changed meanwhile."""


class DuplicateObservationError(MemftsError):
    """An edit would give the entity an observation it already has."""


# ---- paged results (read_graph, open_nodes, search_nodes) -------------------------------------


class BadCursorError(MemftsError):
    """A ``cursor`` argument this server did not give, or gave for another call."""
