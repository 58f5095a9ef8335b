"""The full-text indexes' segments: counted, and merged in small steps after writes.

An FTS5 index is a set of segments (b-trees). Every write transaction adds one, and FTS5's own
*automerge* merges them only four at a time per level, so an index written a little at a time
holds 10 to 20 of them (14 after 5,000 one-entity writes; 18 in a 100,000-entity graph
imported in batches). A search pays for each: every word it looks up is looked up in every
segment. A partial word widens to up to 32 indexed words, so on the Debian graph one such
lookup cost 0.35 ms over 8 segments and 0.04 ms over one, and a 2-4 word search's median
halved once the indexes were merged (bench/quick.py).

So after each write that changed something, :func:`merge_step` runs, in a transaction of its
own, FTS5's ``'merge'`` command with a small positive page count (:data:`MERGE_PAGES`) on each
index holding more than :data:`MAX_SEGMENTS` segments or in the middle of a merge. With the
index's ``usermerge`` set to 2 (on its first such merge: an FTS5 setting kept in the index's
``_config`` table, not a schema change, so older memfts versions open the file as before),
that merges the segments of its fullest level, at most 32 pages of them per write; as recent
writes add small segments, they are merged into fewer and the large one an import left is not
rewritten for each write. Measured on the 100,000-entity graph over 300 one-entity writes:
never more than 4 segments per index (9-14 without), at a write p50 of 0.28 ms (0.21 ms
without; p99 4 ms either way). An import written in more than one batch is merged whole at the
end (:func:`merge_all`, also what ``memfts optimize`` does).

The segments are read from FTS5's *structure record* (row 10 of ``<index>_data``, documented
in SQLite's ``fts5_index.c``): a few bytes, read in microseconds, where counting the segment
ids of ``<index>_idx`` would read a row per leaf page.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import apsw

INDEXES = ("entities_fts", "observations_fts", "search_terms_trigram")
"""The FTS5 tables kept merged: the names and types, the observations, the vocabulary's
trigrams (the word lookups of partial words and typo correction)."""

MAX_SEGMENTS = 4
"""Segments an index may hold before a write's upkeep merges some of them."""

MERGE_PAGES = 32
"""Most index pages (about 4 kB each) a write's upkeep writes per index."""

USERMERGE = 2
"""FTS5's ``usermerge`` for the indexes: a level's segments are merged once there are two."""

_STRUCTURE_ROWID = 10
_STRUCTURE_V2 = b"\xff\x00\x00\x01"


@dataclass(frozen=True)
class Structure:
    """How an index's segments stand."""

    segments: int
    merging: bool
    """A merge is under way (started by a write's upkeep or by FTS5's automerge)."""
    pages: int = 0
    """Leaf pages in all its segments (about 4 kB each)."""


def structure(db: apsw.Connection, index: str) -> Structure | None:
    """The segments of ``index`` as its structure record says, or None if it cannot be read
    (no such index, or a record in a format this code does not know: then nothing is merged)."""
    try:
        rows = db.execute(
            f"SELECT block FROM {index}_data WHERE id = {_STRUCTURE_ROWID}"
        ).fetchall()
    except apsw.SQLError:
        return None
    if not rows or not isinstance(rows[0][0], bytes):
        return None
    return _decode(rows[0][0])


def _decode(record: bytes) -> Structure | None:
    """Parse a structure record: a 4-byte cookie, an optional version-2 marker, then varints:
    levels, segments, a write counter; per level, the segments in its ongoing merge and its
    segment count, then 3 varints per segment (8 in version 2)."""
    position = 4
    fields_per_segment = 3
    if record[4:8] == _STRUCTURE_V2:
        position, fields_per_segment = 8, 8
    try:
        values = _varints(record, position)
        levels, segments = next(values), next(values)
        next(values)  # write counter
        counted, merging, pages = 0, False, 0
        for _ in range(levels):
            in_merge, level_segments = next(values), next(values)
            merging = merging or in_merge > 0
            counted += level_segments
            for _ in range(level_segments):
                fields = [next(values) for _ in range(fields_per_segment)]
                pages += fields[2] - fields[1] + 1  # id, first page, last page, ...
    except StopIteration:
        return None
    if counted != segments:
        return None
    return Structure(segments, merging, pages)


def _varints(data: bytes, position: int) -> Iterator[int]:
    """SQLite's varints from ``position``: 7 bits a byte, big-endian, the high bit set on all
    but the last byte; a ninth byte gives all its 8 bits."""
    end = len(data)
    while position < end:
        value = 0
        for count in range(9):
            if position >= end:
                return
            byte = data[position]
            position += 1
            if count == 8:
                value = (value << 8) | byte
                break
            value = (value << 7) | (byte & 0x7F)
            if byte < 0x80:
                break
        yield value


def merge_step(db: apsw.Connection) -> None:
    """One bounded step of merging (:data:`MERGE_PAGES`), for each index that needs it, in the
    caller's transaction."""
    for index in INDEXES:
        found = structure(db, index)
        if found is None or not (found.merging or found.segments > MAX_SEGMENTS):
            continue
        usermerge = db.execute(f"SELECT v FROM {index}_config WHERE k = 'usermerge'").fetchall()
        if usermerge != [(USERMERGE,)]:
            db.execute(f"INSERT INTO {index}({index}, rank) VALUES ('usermerge', ?)", (USERMERGE,))
        db.execute(f"INSERT INTO {index}({index}, rank) VALUES ('merge', ?)", (MERGE_PAGES,))


def merge_all(db: apsw.Connection) -> None:
    """Merge each index into one segment, in the caller's transaction (what FTS5's
    ``'optimize'`` does; after a bulk import, or by ``memfts optimize``)."""
    for index in INDEXES:
        found = structure(db, index)
        if found is not None and (found.segments > 1 or found.merging):
            db.execute(f"INSERT INTO {index}({index}) VALUES ('optimize')")
