"""The indexed words and what derives from them: reading and writing ``search_terms``.

Every distinct word the indexes hold is a row of ``search_terms`` (sql/001), with its
spelling key (sql/002, sql/005) and its stem (sql/003). From them a search widens a query
word to the indexed words that start with or contain it, to other spellings and other forms
of it (``renewing`` -> ``renew``, ``mueller`` -> ``müller``), and, for a word nothing holds,
to the closest indexed word or to two words written together. Every lookup reads a bounded
number of rows, however large the vocabulary or common the word.

Connection-bound state lives only in :func:`prepare`; a :class:`Lookup` is made per search
(its answers are memoised for that search only, since writes change the vocabulary); the
per-store :class:`KnownWords` cache is shared between threads and locked.
"""

from __future__ import annotations

import json
import logging
import string
import threading
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager
from pathlib import Path

import apsw
import Stemmer

from memfts import search
from memfts.errors import MemftsError

log = logging.getLogger(__name__)

MIN_INFIX_LENGTH = 3
"""Words at least this long also match the start or inside of longer words (``auth`` finds
``authentication``, ``script`` finds ``TypeScript``). Shorter ones match whole words only
(``js`` finds ``node.js``), unless written ``js*``: a one- or two-letter partial word matches
nearly everything. CJK words are the exception: one or two characters are whole words there,
so they are always looked up inside longer runs."""

MIN_CORRECTED_WORD = 3
"""Shortest word that typo correction is tried on."""

MAX_CORRECTED_WORD = 40
"""Longest word that typo correction (and splitting joined words) is tried on."""

TYPO_CANDIDATES = 300
"""Vocabulary rows read per source of spelling candidates (a piece of the word, its first
letters, its spelling key): a typo costs the same however large the vocabulary grows."""

FREQUENCY_BOUND = 1_000
"""Rows counted per index when telling how common a word is (typo correction, splits)."""

MAX_INFIX_EXPANSIONS = 32
"""Cap on the indexed words one partial word widens to (closest first), so a query stays a
bounded lookup."""

MAX_OTHER_SPELLINGS = 16
"""Cap on the indexed words found through one word's spelling key."""

MAX_WORD_FORMS = 32
"""Cap on the other forms (same stem) one query word is widened to."""

MAX_EXPANSION_SCAN = 500
"""Vocabulary rows read per widening of a partial word, before the shortest are kept: the
cost of a short fragment stays bounded however large the vocabulary grows."""

MAX_KEPT_EXPANSIONS = 20_000
"""Most words whose expansions a store keeps between searches (a few MB)."""

KNOWN_WORDS_CACHE = 200_000
"""Most words one store remembers as already in ``search_terms`` (about 15 MB)."""

DEFAULT_LANGUAGE = "english"
"""The language word forms are made in, unless ``MEMFTS_LANGUAGE`` says otherwise."""

MIN_STEMMED_LENGTH = 3
"""Shorter words are their own stem (``is``, ``us``, ``go``)."""

STEM_BATCH = 20_000
"""Words given their stem per transaction when a file is brought up to date."""


# ---- per-connection setup --------------------------------------------------------------------


def _fold_sql(*args: apsw.SQLiteValue) -> apsw.SQLiteValue:
    (value,) = args
    return search.fold(value) if isinstance(value, str) else value


def prepare(conn: apsw.Connection) -> None:
    """Register what search needs on a connection; run once on every connection that searches.

    Today: Unicode case folding for entity types (``memfts_fold``: SQL's NOCASE folds ASCII
    only). Nothing is kept of ``conn``.
    """
    conn.create_scalar_function("memfts_fold", _fold_sql, 1, deterministic=True)


# ---- spelling --------------------------------------------------------------------------------


def trigrams(word: str) -> list[str]:
    """The distinct 3-character windows of a word, for finding similarly spelled words."""
    return list(dict.fromkeys(word[i : i + 3] for i in range(len(word) - 2)))


def edit_distance(a: str, b: str, cap: int) -> int:
    """Optimal-string-alignment distance (a swap of neighbours counts one), stopping past cap."""
    if abs(len(a) - len(b)) > cap:
        return cap + 1
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i] + [0] * len(b)
        for j, cb in enumerate(b, 1):
            cost = ca != cb
            current[j] = min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and ca == b[j - 2] and a[i - 2] == cb:
                current[j] = min(current[j], previous2[j - 2] + 1)
        if min(current) > cap:
            return cap + 1
        previous2, previous = previous, current
    return previous[-1]


_LOOSE = str.maketrans(
    {
        "ı": "i",
        "æ": "ae",
        "ø": "o",
        "œ": "oe",
        "ß": "ss",
        "ł": "l",
        "đ": "d",
        "ð": "d",
        "þ": "th",
        "ά": "α",
        "έ": "ε",
        "ή": "η",
        "ί": "ι",
        "ό": "ο",
        "ύ": "υ",
        "ώ": "ω",
        "ϊ": "ι",
        "ϋ": "υ",
        "ΐ": "ι",
        "ΰ": "υ",
        "ς": "σ",
    }
)
"""Letters unicode61 keeps, as people type them; the same mapping as sql/002."""
_LOOSE_LETTERS = [chr(c) for c in _LOOSE]


_TRANSLITERATIONS = (("ue", "u"), ("oe", "o"), ("ae", "a"), ("aa", "a"))
"""German and Nordic ways to type ü ö ä å (which the index holds as u o a a), in the order
sql/005 applies them."""


def letters_key(word: str) -> str:
    """The letters unicode61 keeps (ı æ ø ß, Greek accents, final sigma) written the way
    people type them: ``yildiz`` for ``yıldız``, ``καφες`` for ``καφές``."""
    return word.translate(_LOOSE)


def loose_key(word: str) -> str:
    """An indexed word's spelling key, ``search_terms.loose`` (sql/005): :func:`letters_key`,
    then ue oe ae aa as u o a a, so ``mueller`` and ``muller`` (Müller) share it."""
    key = letters_key(word)
    for pair, letter in _TRANSLITERATIONS:
        key = key.replace(pair, letter)
    return key


def _pieces(word: str, count: int) -> list[str]:
    """``word`` cut into ``count`` consecutive pieces as even as can be; those of 3+ letters."""
    size, extra = divmod(len(word), count)
    pieces, start = [], 0
    for i in range(count):
        end = start + size + (i < extra)
        pieces.append(word[start:end])
        start = end
    return [p for p in pieces if len(p) >= 3]


def _one_edit(word: str) -> set[str]:
    """Every string one deletion, swap of neighbours, replacement or insertion away from
    ``word``, over its own letters and a-z (the typos of a short word)."""
    letters = set(word) | set(string.ascii_lowercase) | set(string.digits)
    splits = [(word[:i], word[i:]) for i in range(len(word) + 1)]
    return (
        {a + b[1:] for a, b in splits if b}
        | {a + b[1] + b[0] + b[2:] for a, b in splits if len(b) > 1}
        | {a + c + b[1:] for a, b in splits if b for c in letters}
        | {a + c + b for a, b in splits for c in letters}
    ) - {word}


def typo_budget(word: str) -> int:
    """How many edits a word may be from a suggestion: short words need closer matches."""
    return 1 if len(word) <= 6 else 2


# ---- word forms ------------------------------------------------------------------------------


class Stems:
    """Snowball stemming in one language: ``deploying``, ``deploys``, ``deployment`` -> ``deploy``.

    Only words of letters are stemmed (not CJK, not ``k8s`` or ``v2``): a word of another
    script passes through the stemmer unchanged anyway, and an identifier is not an inflected
    word. ``none`` turns word forms off. A Snowball stemmer is not safe to share between
    threads, so each thread gets its own.
    """

    def __init__(self, language: str = DEFAULT_LANGUAGE) -> None:
        language = language.strip().lower()
        if language != "none" and language not in Stemmer.algorithms():
            raise ValueError(
                f"{language!r} is not a language memfts can make word forms in; use one of "
                f"{', '.join(Stemmer.algorithms())}, or none"
            )
        self.language = language
        self._local = threading.local()

    def __call__(self, word: str) -> str:
        if (
            self.language == "none"
            or len(word) < MIN_STEMMED_LENGTH
            or not word.isalpha()
            or search.has_cjk(word)
        ):
            return word
        stemmer = getattr(self._local, "stemmer", None)
        if stemmer is None:
            stemmer = self._local.stemmer = Stemmer.Stemmer(self.language)
        return str(stemmer.stemWord(word))


Transaction = Callable[[], AbstractContextManager[apsw.Connection]]


def sync_stems(read: Transaction, write: Transaction, stems: Stems) -> None:
    """Give every indexed word its stem in ``stems``' language, if the file lacks any.

    Words recorded before word forms existed, or by a tool other than memfts, have none; a
    file stemmed in another language is stemmed again. In batches, so that other processes'
    writes are held up for moments only. A file that cannot be written (read-only) is left as
    it is: its searches miss the forms of the words without a stem, nothing else.
    """
    with read() as db:
        language = db.execute("SELECT value FROM search_settings WHERE name = 'stem_language'").get
        missing = db.execute("SELECT 1 FROM search_terms WHERE stem IS NULL LIMIT 1").get
    if language == stems.language and not missing:
        return
    try:
        if language != stems.language:
            with write() as db:
                if language is not None:
                    log.info("word forms: stemming again, in %s (was %s)", stems.language, language)
                    db.execute("UPDATE search_terms SET stem = NULL")
                db.execute(
                    "INSERT INTO search_settings(name, value) VALUES ('stem_language', :language) "
                    "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                    {"language": stems.language},
                )
        while True:
            with write() as db:
                if not stem_missing(db, stems, STEM_BATCH):
                    break
    except MemftsError as exc:
        log.warning("word forms not brought up to date: %s", exc)


def stem_missing(db: apsw.Connection, stems: Stems, most: int) -> int:
    """Stem up to ``most`` words that have no stem, inside the caller's write transaction.

    Returns how many were stemmed."""
    rows = db.execute(
        "SELECT id, term FROM search_terms WHERE stem IS NULL LIMIT :most", {"most": most}
    ).fetchall()
    db.executemany(
        "UPDATE search_terms SET stem = :stem WHERE id = :id",
        ({"stem": stems(str(term)), "id": term_id} for term_id, term in rows),
    )
    return len(rows)


# ---- synonyms --------------------------------------------------------------------------------

SYNONYMS_FILE = Path(__file__).with_name("synonyms.txt")
"""The shipped table: software abbreviations and synonyms (``k8s, kubernetes``)."""


class Synonyms:
    """Groups of words and phrases that mean the same: a query word or phrase also finds the
    other members of its group. Matched by stem, so ``databases`` finds ``db``.

    The shipped :data:`SYNONYMS_FILE`, plus the user's files (``MEMFTS_SYNONYMS``): one group
    per line, members separated by commas, ``#`` starts a comment. A member in several groups
    finds the members of all of them.
    """

    def __init__(self, groups: Iterable[Iterable[str]], stems: Stems) -> None:
        self._stems = stems
        self._by_key: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
        self.longest = 1
        for group in groups:
            members = list(
                dict.fromkeys(w for m in group if (w := tuple(search.document_words(m))))
            )
            for member in members:
                others = [o for o in members if self._key(o) != self._key(member)]
                self._by_key.setdefault(self._key(member), []).extend(others)
                self.longest = max(self.longest, len(member))

    def _key(self, words: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(self._stems(w) for w in words)

    def alternatives(self, words: tuple[str, ...]) -> list[tuple[str, ...]]:
        """Other ways to say ``words`` (index words), without repeats."""
        return list(dict.fromkeys(self._by_key.get(self._key(words), [])))

    @classmethod
    def load(cls, stems: Stems, extra: Iterable[Path] = ()) -> Synonyms:
        """The shipped table and the given files; an unreadable file is one line of error."""
        groups: list[list[str]] = []
        for path in (SYNONYMS_FILE, *extra):
            try:
                text = path.read_text(encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                raise ValueError(f"cannot read the synonyms file {path}: {exc}") from None
            for line in text.splitlines():
                members = [m.strip() for m in line.split("#", 1)[0].split(",")]
                if len([m for m in members if m]) > 1:
                    groups.append(members)
        return cls(groups, stems)


# ---- writing ---------------------------------------------------------------------------------


class KnownWords:
    """Words this store has seen committed to ``search_terms``, to skip re-inserting them.

    Words are never removed from ``search_terms``, so a committed word stays known; the cache
    only spares lookups, and is bounded so a huge vocabulary cannot grow memory. Shared by the
    threads of a store: guarded by a lock.
    """

    def __init__(self, stems: Stems) -> None:
        self.stems = stems
        self._words: set[str] = set()
        self._lock = threading.Lock()

    def remember(self, db: apsw.Connection, texts: Iterable[str]) -> set[str]:
        """Record the indexed words of new text, with their stems, inside the caller's write
        transaction (and stem a few words another tool recorded without one).

        Returns the words written; pass them to :meth:`learned` once the transaction commits.
        """
        words: set[str] = set()
        for text in texts:
            words.update(search.document_words(text))
        with self._lock:
            words -= self._words
        db.executemany(
            "INSERT INTO search_terms(term, stem) VALUES (:term, :stem) "
            "ON CONFLICT(term) DO NOTHING",
            ({"term": w, "stem": self.stems(w)} for w in words),
        )
        if words:
            stem_missing(db, self.stems, 100)
        return words

    def learned(self, words: set[str]) -> None:
        with self._lock:
            if len(self._words) + len(words) <= KNOWN_WORDS_CACHE:
                self._words |= words


# ---- reading ---------------------------------------------------------------------------------


Expansion = tuple[list[str], list[str], list[str]]
"""A word's other spellings, other forms and the indexed words holding it."""


class Expansions:
    """The expansions a store looked up, kept while the vocabulary stays as it was.

    Words are only ever added to ``search_terms`` (by any process), each with a higher id:
    when a search sees a higher latest id than the one these were read at, it forgets them
    all. Shared by the store's threads (locked) and bounded.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._words: dict[str, Expansion] = {}
        self._token = -1

    def get(self, words: Iterable[str]) -> tuple[dict[str, Expansion], int]:
        """The kept expansions of ``words`` and the latest id they are valid for."""
        with self._lock:
            return {w: self._words[w] for w in words if w in self._words}, self._token

    def put(self, fresh: dict[str, Expansion], token: int) -> None:
        with self._lock:
            if token != self._token:
                return  # read at another state of the vocabulary than the kept ones
            if len(self._words) + len(fresh) > MAX_KEPT_EXPANSIONS:
                self._words.clear()
            self._words.update(fresh)

    def clear(self, token: int) -> None:
        """Forget every kept expansion: the vocabulary's latest id is now ``token``."""
        with self._lock:
            self._words.clear()
            self._token = token


class Lookup:
    """The vocabulary as one search sees it, inside its read transaction.

    Each answer is computed once per search (a word is often asked about by the ranking, the
    suggestions, the correction and the snippets); make a new one for every search.
    """

    def __init__(
        self,
        db: apsw.Connection,
        stems: Stems,
        late: Callable[[], bool] = lambda: False,
        expansions: Expansions | None = None,
    ) -> None:
        self.db = db
        self.stems = stems
        self.expansions = expansions or Expansions()
        self.late = late
        """True once the search is out of time (:class:`memfts.ranking.Deadline`)."""
        self._variants: dict[str, tuple[list[str], list[str]]] = {}
        self._containing: dict[str, list[str]] = {}
        self._closest: dict[str, str | None] = {}
        self._frequencies: dict[str, int] = {}

    def expand(self, words: Iterable[str]) -> None:
        """Look up the variants and the containing words of all ``words`` in one statement
        (:meth:`variants` and :meth:`words_containing` then answer from memory). Words this
        store looked up before are taken from its :class:`Expansions`, as long as no word
        was added to the vocabulary since (the statement reads that too)."""
        todo = [w for w in dict.fromkeys(words) if w not in self._variants]
        if not todo:
            return
        cached, token = self.expansions.get(todo)
        need = [w for w in todo if w not in cached]
        rows: list[tuple[int, int, str]] = self.db.execute(  # type: ignore[assignment]
            *self._expansion_sql(need)
        ).fetchall()
        latest = next((int(term) for i, _, term in rows if i < 0), 0)
        if latest != token:  # words were added since: what was kept may be out of date
            self.expansions.clear(latest)
            cached = {}
            if need != todo:
                need = todo
                rows = self.db.execute(*self._expansion_sql(need)).fetchall()  # type: ignore[assignment]
        found: list[list[list[str]]] = [[[], [], [], []] for _ in need]
        for i, kind, term in rows:
            if i >= 0:
                found[i][kind].append(term)
        fresh: dict[str, Expansion] = {}
        for word, (same_key, forms, starting, within) in zip(need, found, strict=True):
            # the same letters: the word itself; the same only through ue/oe/ae/aa: a variant
            letters = letters_key(word)
            fresh[word] = (
                [t for t in same_key if letters_key(t) == letters],
                [t for t in same_key if letters_key(t) != letters] + forms,
                (starting + within)[:MAX_INFIX_EXPANSIONS],
            )
        self.expansions.put(fresh, latest)
        for word, (spellings, forms, containing) in (cached | fresh).items():
            self._variants[word] = (spellings, forms)
            self._containing[word] = containing

    def _expansion_sql(self, words: list[str]) -> tuple[str, dict[str, object]]:
        """One statement: the vocabulary's latest id (as row -1), then rows ``(word index,
        kind, term)`` of the spellings (0), forms (1), words starting with (2) and holding (3)
        each of ``words``."""
        selects = ["SELECT -1, 0, coalesce(max(id), 0) FROM search_terms"]
        params: dict[str, object] = {"scan": MAX_EXPANSION_SCAN, "cap": MAX_INFIX_EXPANSIONS}
        for i, word in enumerate(words):
            params |= {f"w{i}": word, f"k{i}": loose_key(word), f"s{i}": self.stems(word)}
            selects += [
                f"SELECT * FROM (SELECT {i}, 0, term FROM search_terms "
                f"WHERE loose = :k{i} AND term != :w{i} LIMIT {MAX_OTHER_SPELLINGS})",
                f"SELECT * FROM (SELECT {i}, 1, term FROM search_terms "
                f"WHERE stem = :s{i} AND loose != :k{i} LIMIT {MAX_WORD_FORMS})",
            ]
            if len(word) < MIN_INFIX_LENGTH and not search.has_cjk(word):
                continue
            selects.append(
                f"SELECT * FROM (SELECT {i}, 2, term FROM (SELECT term FROM search_terms "
                f"WHERE term > :w{i} AND term < :w{i} || char(1114111) LIMIT :scan) "
                "ORDER BY length(term), term LIMIT :cap)"
            )
            if len(word) >= MIN_INFIX_LENGTH:
                params[f"q{i}"] = search.quote(word)
                inside = (
                    "id IN (SELECT rowid FROM search_terms_trigram "
                    f"WHERE search_terms_trigram MATCH :q{i} LIMIT :scan)"
                )
            else:  # one or two CJK characters: too short for the trigram index, scan the words
                inside = f"instr(term, :w{i}) > 1"
            # words inside others only when too few start with it (a trigram lookup costs
            # about ten times a range of the sorted words)
            enough = (
                f"(SELECT count(*) FROM (SELECT 1 FROM search_terms WHERE term > :w{i} "
                f"AND term < :w{i} || char(1114111) LIMIT :cap)) < :cap"
            )
            selects.append(
                f"SELECT * FROM (SELECT {i}, 3, term FROM (SELECT term FROM search_terms "
                f"WHERE {enough} AND {inside} AND substr(term, 1, length(:w{i})) != :w{i} "
                "LIMIT :scan) ORDER BY length(term), term LIMIT :cap)"
            )
        return "\nUNION ALL ".join(selects), params

    def variants(self, word: str) -> tuple[list[str], list[str]]:
        """``(spellings, forms)``: the indexed words spelt like ``word`` but for letters
        unicode61 does not fold (``yıldız`` for ``yildiz``, ``καφές`` for ``καφες``: see
        sql/002), and its other forms: the indexed words of the same stem (``renewing`` for
        ``renew``) or transliterated (``muller``, Müller, for ``mueller``); neither holds
        ``word`` itself."""
        self.expand([word])
        return self._variants[word]

    def words_containing(self, word: str) -> list[str]:
        """Indexed words that start with or contain ``word`` (not ``word`` itself): those
        starting with it first, then the shortest, at most :data:`MAX_INFIX_EXPANSIONS`.

        Read from the vocabulary table rather than with an FTS ``word*`` query: a prefix query
        merges the lists of every word with that prefix, which is slow for short prefixes.
        """
        self.expand([word])
        return self._containing[word]

    def frequencies(self, terms: Iterable[str]) -> dict[str, int]:
        """How many rows (observations plus entities) hold each term as a whole word, counted
        no further than :data:`FREQUENCY_BOUND` per index: enough to tell a word in use from
        a rare one, at a bounded cost however common it is. One statement for all of them."""
        terms = list(terms)
        todo = [t for t in dict.fromkeys(terms) if t not in self._frequencies]
        if todo:
            rows = self.db.execute(
                "SELECT value, "
                "(SELECT count(*) FROM (SELECT 1 FROM observations_fts "
                "WHERE observations_fts MATCH '\"' || replace(value, '\"', '\"\"') || '\"' "
                "LIMIT :bound)) + "
                "(SELECT count(*) FROM (SELECT 1 FROM entities_fts "
                "WHERE entities_fts MATCH '\"' || replace(value, '\"', '\"\"') || '\"' "
                "LIMIT :bound)) "
                "FROM json_each(:terms)",
                {"terms": json.dumps(todo), "bound": FREQUENCY_BOUND},
            )
            self._frequencies.update((str(t), int(n)) for t, n in rows)
        return {t: self._frequencies[t] for t in terms}

    def suggestions(self, words: Iterable[str]) -> list[str]:
        """The closest indexed word of each of ``words`` that has one, without repeats."""
        return search.dedupe([s for w in words if (s := self.closest_word(w)) is not None])

    def closest_word(self, word: str) -> str | None:
        """The indexed word closest in spelling to an unknown ``word``, if close enough.

        Candidates: words sharing its trigrams (most typos), words with its first two letters
        and about its length (transpositions, which share no trigram in a short word), and
        words with the same spelling key (``yildiz`` for ``yıldız``, at distance 0).
        """
        if word not in self._closest:
            if self.late():  # the search's time is up: stop as SQLite's own statements do
                raise apsw.InterruptError("the search ran out of time")
            self._closest[word] = self._find_closest_word(word)
        return self._closest[word]

    def _find_closest_word(self, word: str) -> str | None:
        if not MIN_CORRECTED_WORD <= len(word) <= MAX_CORRECTED_WORD:
            return None  # too short to tell a typo, or a pasted blob, not a typo
        budget = typo_budget(word)
        letters = letters_key(word)
        start = word[:2]
        params: dict[str, object] = {
            "word": word,
            "key": loose_key(word),
            "start": start,
            "after": start[:-1] + chr(min(ord(start[-1]) + 1, 0x10FFFF)),
            "shortest": len(word) - budget,
            "longest": len(word) + budget,
            "most": TYPO_CANDIDATES,
        }
        sources = [
            "SELECT 0, term FROM search_terms WHERE term = :word",
            "SELECT * FROM (SELECT 1, term FROM search_terms WHERE loose = :key LIMIT :most)",
            # the first two letters and about the length: transpositions, short words
            "SELECT * FROM (SELECT 1, term FROM search_terms WHERE term >= :start "
            "AND term < :after AND length(term) BETWEEN :shortest AND :longest LIMIT :most)",
        ]
        # Within `budget` edits, one of `budget + 1` pieces of the word is left whole: words
        # holding a piece (3+ letters, through the trigram index) are the candidates. Pieces
        # of a word under 9 letters are too short: each of its trigrams is one instead.
        pieces = _pieces(letters, budget + 1)
        if len(pieces) < budget + 1:
            pieces = trigrams(letters)
        for i, piece in enumerate(pieces):
            params[f"piece{i}"] = search.quote(piece)
            sources.append(
                "SELECT * FROM (SELECT 1, term FROM search_terms WHERE id IN "
                "(SELECT rowid FROM search_terms_trigram "
                f"WHERE search_terms_trigram MATCH :piece{i} LIMIT :most) "
                "AND length(term) BETWEEN :shortest AND :longest)"
            )
        if budget == 1:  # a short word: every word one edit away, looked up exactly
            params["edits"] = json.dumps(sorted(_one_edit(word)))
            sources.append(
                "SELECT 1, term FROM search_terms "
                "WHERE term IN (SELECT value FROM json_each(:edits))"
            )
        candidates: set[str] = set()
        for source, term in self.db.execute(" UNION ".join(sources), params):
            if source == 0:
                return None  # the word is indexed: not a typo
            candidates.add(term)
        distances = {
            term: d
            for term in candidates
            if (d := self._spelling_distance(word, term, budget)) <= budget
        }
        if not distances:
            return self.split_word(word)
        frequencies = self.frequencies(distances)
        # the closest, then the commonest; a word no entity uses any more is no help
        scored = [(d, -frequencies[t], t) for t, d in distances.items() if frequencies[t]]
        return min(scored)[2] if scored else self.split_word(word)

    @staticmethod
    def _spelling_distance(word: str, term: str, budget: int) -> int:
        """0 for the same spelling key (``yildiz``, ``yıldız``; ``mueller``, ``müller``), else
        the edit distance of the letters (not of the keys: "stroed" is one swap from "stored",
        but its key "strod" is two edits from it)."""
        if loose_key(word) == loose_key(term):
            return 0
        return edit_distance(letters_key(word), letters_key(term), budget)

    def split_word(self, word: str) -> str | None:
        """Two indexed words that ``word`` is written as, joined: ``signup`` for "sign up",
        ``userservice`` for ``user_service``. Searched as a phrase; the commonest pair wins."""
        if len(word) < 5 or search.has_cjk(word):
            return None
        pairs = [(word[:i], word[i:]) for i in range(2, len(word) - 1)]
        parts = json.dumps(sorted({p for pair in pairs for p in pair}))
        indexed = {
            term
            for (term,) in self.db.execute(
                "SELECT term FROM search_terms WHERE term IN (SELECT value FROM json_each(?))",
                (parts,),
            )
        }
        pairs = [(a, b) for a, b in pairs if a in indexed and b in indexed]
        frequencies = self.frequencies(p for pair in pairs for p in pair)
        splits = [
            (min(frequencies[a], frequencies[b]), f"{a} {b}")
            for a, b in pairs
            if frequencies[a] and frequencies[b]
        ]
        return max(splits)[1] if splits else None
