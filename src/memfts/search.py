"""User text -> a parsed :class:`Query` -> safe FTS5 expressions. Pure: no database.

Nothing a user or a model types ever reaches ``MATCH`` as syntax. The text is parsed into
:class:`Query` (words, phrases, ``OR``, ``-exclusions``, ``prefix*``, ``name:``/``type:``
filters); anything that does not parse as syntax is read as plain words. Each word is then
produced by the same tokenizer the index uses and re-quoted as an FTS5 string (``"word"``),
so ``C++``, ``"unbalanced``, ``NEAR(``, ``-x``, ``a:b`` or SQL can only ever be words.

What the words are looked up against is :mod:`memfts.vocabulary`; how hits are scored,
:mod:`memfts.ranking`.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import apsw

TOKENIZER = ("unicode61", ["remove_diacritics", "2"])
"""Must match the ``tokenize=`` option of the word indexes in ``sql/001_schema.sql``."""

MAX_QUERY_WORDS = 16
"""Words and ``type:`` filters past this many are ignored: a pasted page is not a query, and
each costs a lookup (100 ``-type:`` filters once took 7 s at 100,000 entities)."""

Tokenize = Callable[[str], list[str]]

_tokenizers = threading.local()


def _tokenizer() -> apsw.FTS5Tokenizer:
    """SQLite's own tokenizer, from a private in-memory connection of this thread: the
    built-in tokenizer is the same on every connection, and a private one is never busy
    with another thread's query."""
    tokenizer: apsw.FTS5Tokenizer | None = getattr(_tokenizers, "tokenizer", None)
    if tokenizer is None:
        name, args = TOKENIZER
        _tokenizers.connection = apsw.Connection(":memory:")
        tokenizer = _tokenizers.tokenizer = _tokenizers.connection.fts5_tokenizer(name, args)
    return tokenizer


def _words(text: str, reason: int) -> list[str]:
    # NUL ends a C string inside SQLite; lone surrogates cannot be encoded: both become spaces.
    data = text.replace("\x00", " ").encode("utf-8", "replace")
    return [str(t[0]) for t in _tokenizer()(data, reason, None, include_offsets=False)]


def query_words(text: str) -> list[str]:
    """Split query text into index words (case- and accent-folded), as the index does."""
    return _words(text, apsw.FTS5_TOKENIZE_QUERY)


def document_words(text: str) -> list[str]:
    """Split stored text into the words the index holds."""
    return _words(text, apsw.FTS5_TOKENIZE_DOCUMENT)


def fold(text: str) -> str:
    """Case-fold for exact comparisons (entity types): Unicode-aware, unlike SQL NOCASE."""
    return unicodedata.normalize("NFC", text).casefold()


_CJK = re.compile(
    "[\u1100-\u11ff\u3040-\u30ff\u3130-\u318f\u3400-\u4dbf\u4e00-\u9fff"
    "\uac00-\ud7af\uf900-\ufaff\uff66-\uff9f\U00020000-\U0002fa1f]"
)


def has_cjk(word: str) -> bool:
    """True if the word holds Chinese, Japanese or Korean characters (written without spaces)."""
    return _CJK.search(word) is not None


# ---- the parsed query ------------------------------------------------------------------------


@dataclass(frozen=True)
class Term:
    """One thing to find: a word, or a phrase of consecutive words.

    ``prefix`` (``word*``) matches word starts only, ``exact`` (a quoted phrase) whole words
    only; otherwise a single word matches whole, at a word start or inside a word.
    """

    words: tuple[str, ...]
    prefix: bool = False
    exact: bool = False
    name_only: bool = False
    synonym: bool = False
    """Not typed: added from the synonym table as another way to say a typed word or phrase."""

    @property
    def text(self) -> str:
        return " ".join(self.words)


@dataclass(frozen=True)
class Clause:
    """Terms of which at least one must match (``a OR b``); usually just one."""

    terms: tuple[Term, ...]


@dataclass
class Query:
    required: list[Clause] = field(default_factory=list)
    excluded: list[Clause] = field(default_factory=list)
    entity_types: list[str] = field(default_factory=list)
    excluded_types: list[str] = field(default_factory=list)
    """``-type:x``: entities of these types are left out."""
    joined: list[tuple[str, ...]] = field(default_factory=list, compare=False)
    """Words typed as one (``refund_round``, ``node.js``): each is required on its own, and
    entities holding them together rank higher."""
    text: str = field(default="", compare=False)
    """The text as typed (a query of only punctuation finds nothing; a query of nothing lists
    the latest entities)."""

    @property
    def words(self) -> list[str]:
        """The words typed (not those the synonym table added)."""
        return [w for c in self.required for t in c.terms if not t.synonym for w in t.words]


_PIECE = re.compile(
    r"""
    # A leading dash leaves a term out, except where it is the text itself: a command-line
    # flag (--no-verify) or a short option (-x, rm -rf) is what an agent searches for.
    (?P<neg>-(?![\s-]|[A-Za-z0-9]{1,2}(?:\s|$)))?
    (?:
        (?P<field>name|type|entitytype):(?:"(?P<fquoted>[^"]*)"|(?P<fvalue>[^\s"]+))
      | "(?P<phrase>[^"]*)"(?P<pstar>\*)?
      | (?P<word>[^\s"]+)
    )
    """,
    re.VERBOSE | re.IGNORECASE,
)


_BARE_FIELD = re.compile(r"-?(name|type|entitytype):", re.IGNORECASE)


class Synonyms(Protocol):
    """The synonym table, as the parser sees it (:class:`memfts.vocabulary.Synonyms`)."""

    longest: int
    """Most words in one entry."""

    def alternatives(self, words: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Other ways to say ``words`` (index words), or none."""
        ...


def parse(text: str, tokenize: Tokenize = query_words, synonyms: Synonyms | None = None) -> Query:
    """Read the query syntax; whatever is not syntax is plain words. Never raises.

    With ``synonyms``, a word or run of words that has synonyms becomes a clause matching any
    of them (see :func:`_with_synonyms`)."""
    query = Query(text=text)
    pending_or = False
    negate_next = False
    count = 0
    for match in _PIECE.finditer(text.replace("\x00", " ")):
        raw_word = match.group("word")
        if raw_word in ("OR", "|"):
            pending_or = bool(query.required)
            continue
        if raw_word == "AND":
            continue
        if raw_word == "NOT":
            negate_next = True
            continue
        if raw_word and _BARE_FIELD.fullmatch(raw_word):
            continue  # "name:" or "type:" with nothing after it: syntax, not a word
        negative = bool(match.group("neg")) or negate_next
        negate_next = False
        term: Term | None = None
        if match.group("field"):
            value = (
                match.group("fquoted")
                if match.group("fquoted") is not None
                else match.group("fvalue")
            )
            if match.group("field").lower() != "name":
                if value.strip():
                    count += 1  # a filter costs a lookup too: it counts toward the cap
                    if count > MAX_QUERY_WORDS:
                        break
                    (query.excluded_types if negative else query.entity_types).append(value)
                pending_or = False
                continue
            words = tuple(tokenize(value))
            if words:
                term = Term(words, exact=len(words) > 1, name_only=True)
        elif match.group("phrase") is not None:
            words = tuple(tokenize(match.group("phrase")))
            if words:
                term = Term(words, prefix=bool(match.group("pstar")), exact=True)
        else:
            star = raw_word.endswith("*")
            words = tuple(tokenize(raw_word))
            if len(words) == 1:
                term = Term(words, prefix=star)
            elif words and negative:  # "-node.js" leaves out "node.js", not every "node"
                term = Term(words, prefix=star, exact=True)
            elif words:  # "node.js", "C++/CLI": several index words, each required
                query.joined.append(words)
                terms = [Term((w,)) for w in words[:-1]] + [Term((words[-1],), prefix=star)]
                for extra in terms[:-1]:
                    _add(query, extra, negative, or_with_previous=False)
                term = terms[-1]
                pending_or = False
        if term is None:
            pending_or = False
            continue
        count += len(term.words)
        if count > MAX_QUERY_WORDS:
            break
        _add(query, term, negative, or_with_previous=pending_or)
        pending_or = False
    if query.excluded and all(_droppable(c) for c in query.required):
        # Nothing to find but something to leave out ("-cache", "NOT foo", "the -cache"): a
        # search is for finding, so the words are what is looked for, not "every entity but
        # these".
        query.required, query.excluded = query.excluded, []
    if synonyms is not None:
        query.required = _with_synonyms(query.required, synonyms)
    _without_stopwords(query)
    return query


def _plain_word(clause: Clause) -> str | None:
    """The word of a clause that is one plain typed word (no quotes, star, field, OR)."""
    if len(clause.terms) != 1:
        return None
    term = clause.terms[0]
    if len(term.words) != 1 or term.prefix or term.exact or term.name_only:
        return None
    return term.words[0]


def _with_synonyms(clauses: list[Clause], synonyms: Synonyms) -> list[Clause]:
    """Each plain word, or run of plain words, with an entry in the synonym table becomes one
    clause: the words as typed (a phrase if several) or any of their synonyms. The longest
    entry wins: ``single sign on`` becomes ``"single sign on" OR sso``."""
    out: list[Clause] = []
    i = 0
    while i < len(clauses):
        for n in range(min(synonyms.longest, len(clauses) - i), 0, -1):
            words = [_plain_word(c) for c in clauses[i : i + n]]
            if None in words:
                continue
            typed = tuple(w for w in words if w is not None)
            others = synonyms.alternatives(typed)
            if others:
                alternatives = [Term(o, exact=len(o) > 1, synonym=True) for o in others]
                out.append(Clause((Term(typed, exact=n > 1), *alternatives)))
                i += n
                break
        else:
            out.append(clauses[i])
            i += 1
    return out


_STOPWORD_TEXT = """
    a about above after again against all am an and any are as at be because been before
    being below between both but by can could did do does doing down during each few for
    from further had has have having he her here hers herself him himself his how i if in
    into is it its itself just me more most my myself no nor not now of off on once only or
    other our ours ourselves out over own same she should so some such than that the their
    theirs them themselves then there these they this those through to too under until up
    very was we were what when where which while who whom why will with would you your yours
    yourself yourselves
"""
STOPWORDS = frozenset(_STOPWORD_TEXT.split())
"""English function words, the Snowball/NLTK stopword list (plus "could", "would"): left out
of a query that has other words, since they match nearly everything and outrank the words
that matter ("what does the user prefer", "who should I tell about a leaked password"). A
query of only such words is searched as it is; quoted, they are searched like any word."""


def _droppable(clause: Clause) -> bool:
    """A clause of nothing but common English words, as typed (no quotes, star or field)."""
    return all(
        len(t.words) == 1 and t.words[0] in STOPWORDS and not (t.exact or t.prefix or t.name_only)
        for t in clause.terms
    )


def _without_stopwords(query: Query) -> None:
    kept = [c for c in query.required if not _droppable(c)]
    if kept:
        query.required = kept


def _add(query: Query, term: Term, negative: bool, *, or_with_previous: bool) -> None:
    target = query.excluded if negative else query.required
    if or_with_previous and target and not negative:
        target[-1] = Clause((*target[-1].terms, term))
    elif Clause((term,)) not in target:
        target.append(Clause((term,)))


# ---- FTS5 expressions ------------------------------------------------------------------------


def quote(text: str) -> str:
    """An FTS5 string literal: the text is taken as words, never as syntax."""
    return '"' + text.replace('"', '""') + '"'


def whole_expression(term: Term) -> str:
    """Matches the term as whole words (a phrase for several words; ``word*`` if prefix)."""
    return quote(term.text) + ("*" if term.prefix else "")


def any_of_expression(words: Iterable[str]) -> str:
    """Matches any of the given whole words."""
    return " OR ".join(quote(w) for w in words)


def corrected_text(query: Query, corrections: dict[str, str]) -> str:
    """The query's words with corrections applied, for saying what was searched."""
    return " ".join(corrections.get(w, w) for w in query.words)


def dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))
