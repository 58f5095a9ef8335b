"""Two reference rankings for the relevance sets, over the same entities as memfts.

``NaiveFts``: the 40-line search anyone would write first. One FTS5 table with the
``porter unicode61`` tokenizer over name, type and observations; the query's words OR-ed;
ranked by bm25 with equal column weights. No typo correction, no partial words, no CJK pieces.

``OfficialSearch``: the official memory server's ``searchNodes`` (see ``jsonl_baseline.py``):
entities whose name, type or any observation contains the whole query as a case-insensitive
substring, unranked, in file order. The first ``limit`` of them are what a client sees first.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import apsw

from memfts.models import Entity

_WORD = re.compile(r"\w+")


class NaiveFts:
    def __init__(self, entities: Sequence[Entity]) -> None:
        self.db = apsw.Connection(":memory:")
        self.db.execute(
            "CREATE VIRTUAL TABLE docs USING fts5(name, type, observations, "
            "tokenize = 'porter unicode61')"
        )
        with self.db:
            self.db.executemany(
                "INSERT INTO docs VALUES (?, ?, ?)",
                ((e.name, e.entityType, "\n".join(e.observations)) for e in entities),
            )

    def search(self, query: str, limit: int = 10) -> list[str]:
        words = _WORD.findall(query)
        if not words:
            return []
        match = " OR ".join('"' + w.replace('"', '""') + '"' for w in words)
        rows = self.db.execute(
            "SELECT name FROM docs WHERE docs MATCH :match ORDER BY bm25(docs) LIMIT :limit",
            {"match": match, "limit": limit},
        )
        return [name for (name,) in rows]


class OfficialSearch:
    def __init__(self, entities: Sequence[Entity]) -> None:
        # one lowered text per entity; a query holds no newline, so it cannot match across the
        # joins, and a substring of the joined text is a substring of one field
        self.texts = [
            (e.name, "\n".join([e.name, e.entityType, *e.observations]).lower()) for e in entities
        ]

    def search(self, query: str, limit: int = 10) -> list[str]:
        q = query.lower()
        if "\n" in q:
            return []
        found = []
        for name, text in self.texts:
            if q in text:
                found.append(name)
                if len(found) == limit:
                    break
        return found
