"""User text -> safe FTS5 expressions.

Nothing a user or a model types ever reaches ``MATCH`` as syntax: the text is split into
words by the same tokenizer the index uses, and every word is re-quoted as an FTS5 string
(``"word"``), so ``C++``, ``"unbalanced``, ``NEAR(``, ``-x``, ``a:b`` or SQL are just words.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import apsw

TOKENIZER = ("unicode61", ["remove_diacritics", "2"])
"""Must match the ``tokenize=`` option of the word indexes in ``sql/001_schema.sql``."""

MAX_QUERY_WORDS = 16
"""Words past this many are ignored: a pasted page is not a query, and each word costs a lookup."""

MIN_INFIX_LENGTH = 3
"""Words at least this long also match inside longer words (``script`` finds ``TypeScript``).
Shorter ones match at the start of a word only: a one-letter infix would match nearly everything
(and the trigram index of words cannot look up fewer than three characters)."""

MAX_INFIX_EXPANSIONS = 500
"""Cap on the indexed words one partial word widens to, so one query stays one bounded lookup."""

ENTITY_WEIGHTS = (10.0, 3.0)
"""bm25 column weights of (name, entity_type); an observation counts 1."""

PARTIAL_MATCH_FACTOR = 0.5
"""A word start or infix hit scores this share of a whole-word hit, so whole words rank first."""

Tokenize = Callable[[str], list[str]]


def make_tokenizer(conn: apsw.Connection, *, query: bool) -> Tokenize:
    """Return a function splitting text into index words (case- and accent-folded)."""
    name, args = TOKENIZER
    tokenizer = conn.fts5_tokenizer(name, args)
    reason = apsw.FTS5_TOKENIZE_QUERY if query else apsw.FTS5_TOKENIZE_DOCUMENT

    def tokenize(text: str) -> list[str]:
        # NUL ends a C string inside SQLite; lone surrogates cannot be encoded: both become spaces.
        data = text.replace("\x00", " ").encode("utf-8", "replace")
        return [str(t[0]) for t in tokenizer(data, reason, None, include_offsets=False)]

    return tokenize


def query_words(tokenize: Tokenize, text: str) -> list[str]:
    """The distinct words of a query, in order, at most :data:`MAX_QUERY_WORDS`."""
    seen: dict[str, None] = {}
    for word in tokenize(text):
        seen.setdefault(word, None)
        if len(seen) == MAX_QUERY_WORDS:
            break
    return list(seen)


def quote(word: str) -> str:
    """An FTS5 string literal: the word is taken as text, never as syntax."""
    return '"' + word.replace('"', '""') + '"'


def exact_expression(word: str) -> str:
    """Matches the whole word."""
    return quote(word)


def partial_expression(word: str, containing: Iterable[str]) -> str:
    """Matches words starting with ``word`` plus the given indexed words that contain it."""
    return " OR ".join([quote(word) + "*", *(quote(t) for t in containing)])


def infix_probe(word: str) -> str | None:
    """Trigram query finding indexed words that contain ``word``, or None if too short."""
    if len(word) < MIN_INFIX_LENGTH:
        return None
    return quote(word)
