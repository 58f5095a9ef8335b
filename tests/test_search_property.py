"""Property test: random write sequences, then search must equal a brute-force reference.

The reference keeps the graph in plain Python and answers a query by testing every word of
every entity, with the documented rules: a query word matches an indexed word equal to it,
of the same (English Snowball) stem, or containing it when it has at least 3 characters (or
is CJK); a word, or run of words, in the shipped synonym table (matched by stem, the longest
entry first) also matches the other members of its group, as whole words or their forms (a
member of several words as that phrase); entities holding every query word (or group) come
first, then those holding any. Words come from the index's own tokenizer (case and accent
folding are its job); the synonym table is read from its file; everything else here is
independent of the store.
"""

from __future__ import annotations

from pathlib import Path

import apsw
import hypothesis.strategies as st
import pytest
import Stemmer
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from conftest import build_schema
from memfts.errors import EntityNotFoundError
from memfts.models import Entity, ObservationAddition, ObservationDeletion, Relation
from memfts.search import STOPWORDS
from memfts.store import Store
from memfts.vocabulary import SYNONYMS_FILE

pytestmark = pytest.mark.full_text  # the full-text ranking's exact results (conftest)

WORDS = [
    "typescript", "script", "javascript", "auth", "authentication", "oauth", "node", "js",
    "école", "ECOLE", "Café", "cafe", "postgres", "postgresql", "db", "c", "x",
    "東京タワー", "東京", "タワー", "北京办公室", "微服务", "redis", "deploy", "deployment",
    "failed", "failing", "tests", "renewal", "renewing",
]  # fmt: skip
NAMES = ["Alice", "Bob", "billing-service", "東京オフィス", "Café Müller", "node.js", "X"]
TYPES = ["person", "service", "Person", "office"]
SEPARATORS = [" ", " ", ", ", ".", "-", " / "]

_TOKENIZER = apsw.Connection(":memory:").fts5_tokenizer("unicode61", ["remove_diacritics", "2"])


def words_of(text: str) -> list[str]:
    data = text.encode("utf-8")
    return [t[0] for t in _TOKENIZER(data, apsw.FTS5_TOKENIZE_DOCUMENT, None,
                                     include_offsets=False)]  # fmt: skip


def is_cjk(word: str) -> bool:
    return any("\u3040" <= ch <= "\u9fff" or "\uac00" <= ch <= "\ud7af" for ch in word)


_STEMMER = Stemmer.Stemmer("english")


def stem(word: str) -> str:
    """Words of 3+ letters (not CJK) have a stem; any other word is its own."""
    if len(word) < 3 or not word.isalpha() or is_cjk(word):
        return word
    return str(_STEMMER.stemWord(word))


def word_matches(query_word: str, indexed: str) -> bool:
    if query_word == indexed or stem(query_word) == stem(indexed):
        return True
    return (len(query_word) >= 3 or is_cjk(query_word)) and query_word in indexed


def _synonym_groups() -> dict[tuple[str, ...], list[tuple[str, ...]]]:
    """The shipped table, as documented: one group a line, members split by commas, ``#``
    comments; members keyed by the stems of their words."""
    groups: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for line in SYNONYMS_FILE.read_text(encoding="utf-8").splitlines():
        members = [tuple(words_of(m)) for m in line.split("#", 1)[0].split(",")]
        members = list(dict.fromkeys(m for m in members if m))
        if len(members) < 2:
            continue
        for member in members:
            key = tuple(map(stem, member))
            others = [o for o in members if tuple(map(stem, o)) != key]
            groups.setdefault(key, []).extend(others)
    return groups


SYNONYMS = _synonym_groups()
LONGEST = max(len(key) for key in SYNONYMS)


def clauses_of(qwords: list[str]) -> list[tuple[tuple[str, ...], list[tuple[str, ...]]]]:
    """The query's words as clauses: (the words as typed, their synonyms); a run of words
    with an entry in the table is one clause, the longest entry first."""
    clauses = []
    i = 0
    while i < len(qwords):
        for n in range(min(LONGEST, len(qwords) - i), 0, -1):
            typed = tuple(qwords[i : i + n])
            others = SYNONYMS.get(tuple(map(stem, typed)))
            if others:
                clauses.append((typed, list(dict.fromkeys(others))))
                i += n
                break
        else:
            clauses.append(((qwords[i],), []))
            i += 1
    return clauses


def holds_phrase(texts: list[list[str]], phrase: tuple[str, ...]) -> bool:
    """Whether one of the texts (name, type, an observation: word lists) has the phrase."""
    n = len(phrase)
    return any(tuple(words[i : i + n]) == phrase for words in texts for i in range(len(words)))


class Reference:
    """The graph as plain Python, with the documented semantics."""

    def __init__(self) -> None:
        self.entities: dict[str, tuple[str, list[str]]] = {}
        self.relations: list[tuple[str, str, str]] = []

    def entity_texts(self, name: str) -> list[list[str]]:
        etype, observations = self.entities[name]
        return [words_of(text) for text in (name, etype, *observations)]

    def holds(self, name: str, typed: tuple[str, ...], others: list[tuple[str, ...]]) -> bool:
        """Whether the entity holds a clause: its word (or phrase) as typed, or a synonym."""
        texts = self.entity_texts(name)
        words = {w for text in texts for w in text}
        if len(typed) == 1:
            if any(word_matches(typed[0], w) for w in words):
                return True
        elif holds_phrase(texts, typed):
            return True
        for other in others:  # a synonym: that word or its forms, or that phrase exactly
            if len(other) == 1 and any(stem(other[0]) == stem(w) for w in words):
                return True
            if len(other) > 1 and holds_phrase(texts, other):
                return True
        return False

    def search(self, query: str) -> tuple[set[str], set[str]]:
        """(entities with every word of the query, entities with any of them)."""
        return self._matches(query)

    def every(self, query: str) -> set[str]:
        """Entities with every word of the query."""
        return self._matches(query)[0]

    def _matches(self, query: str) -> tuple[set[str], set[str]]:
        clauses = clauses_of(list(dict.fromkeys(words_of(query)))[:16])
        # question words are left out when there are other words (search.STOPWORDS)
        clauses = [
            c for c in clauses if not (len(c[0]) == 1 and c[0][0] in STOPWORDS and not c[1])
        ] or clauses
        matched: dict[str, int] = {}
        for name in self.entities:
            n = sum(self.holds(name, typed, others) for typed, others in clauses)
            if n:
                matched[name] = n
        every = {name for name, n in matched.items() if n == len(clauses)}
        return every, set(matched)


text_strategy = st.lists(
    st.tuples(st.sampled_from(WORDS), st.sampled_from(SEPARATORS)), min_size=1, max_size=4
).map(lambda parts: "".join(w + sep for w, sep in parts).strip(" ,./-") or "x")


def query_word(word: str, start: int, length: int) -> str:
    """A piece of a word, kept free of query syntax (a leading ``-`` would exclude)."""
    piece = word[start % len(word) :][: max(1, length)]
    return piece.lstrip("-") or word


query_strategy = st.lists(
    st.builds(
        query_word,
        st.sampled_from(WORDS + NAMES),
        st.integers(0, 8),
        st.integers(1, 12),
    ),
    min_size=1,
    max_size=3,
).map(" ".join)


class SearchMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        import tempfile

        self.dir = tempfile.TemporaryDirectory()
        path = Path(self.dir.name) / "memory.db"
        build_schema(path)
        self.store = Store(path)
        self.ref = Reference()

    def teardown(self) -> None:
        self.store.close()
        self.dir.cleanup()

    @rule(
        items=st.lists(
            st.tuples(
                st.sampled_from(NAMES), st.sampled_from(TYPES), st.lists(text_strategy, max_size=3)
            ),
            min_size=1,
            max_size=3,
        )
    )
    def create_entities(self, items: list[tuple[str, str, list[str]]]) -> None:
        self.store.create_entities(
            [Entity(name=n, entityType=t, observations=o) for n, t, o in items]
        )
        for name, etype, observations in items:
            if name not in self.ref.entities:
                self.ref.entities[name] = (etype, list(dict.fromkeys(observations)))

    @rule(name=st.sampled_from(NAMES), contents=st.lists(text_strategy, min_size=1, max_size=3))
    def add_observations(self, name: str, contents: list[str]) -> None:
        try:
            self.store.add_observations([ObservationAddition(entityName=name, contents=contents)])
        except EntityNotFoundError:
            assert name not in self.ref.entities
            return
        observations = self.ref.entities[name][1]
        for content in contents:
            if content not in observations:
                observations.append(content)

    @rule(name=st.sampled_from(NAMES), data=st.data())
    def delete_observations(self, name: str, data: st.DataObject) -> None:
        existing = self.ref.entities.get(name, ("", []))[1]
        pool = [*existing, "not stored"]
        doomed = data.draw(st.lists(st.sampled_from(pool), max_size=2))
        self.store.delete_observations([ObservationDeletion(entityName=name, observations=doomed)])
        if name in self.ref.entities:
            self.ref.entities[name][1][:] = [o for o in existing if o not in doomed]

    @rule(
        source=st.sampled_from(NAMES),
        dest=st.sampled_from(NAMES),
        kind=st.sampled_from(["uses", "knows"]),
    )
    def create_relation(self, source: str, dest: str, kind: str) -> None:
        self.store.create_relations(
            [Relation(**{"from": source, "to": dest, "relationType": kind})]
        )
        if (source, dest, kind) not in self.ref.relations:
            self.ref.relations.append((source, dest, kind))

    @rule(data=st.data())
    def delete_relation(self, data: st.DataObject) -> None:
        if not self.ref.relations:
            return
        source, target, kind = data.draw(st.sampled_from(self.ref.relations))
        self.store.delete_relations(
            [Relation(**{"from": source, "to": target, "relationType": kind})]
        )
        self.ref.relations.remove((source, target, kind))

    @rule(names=st.lists(st.sampled_from(NAMES), min_size=1, max_size=2))
    def delete_entities(self, names: list[str]) -> None:
        self.store.delete_entities(names)
        for name in names:
            self.ref.entities.pop(name, None)
        self.ref.relations = [
            r for r in self.ref.relations if r[0] not in names and r[1] not in names
        ]

    @rule(query=query_strategy)
    def search(self, query: str) -> None:
        self.check_search(query)

    @rule(data=st.data())
    def search_stored_words(self, data: st.DataObject) -> None:
        """Queries built from what is stored: whole words, pieces of them, other case."""
        stored = sorted({w for text in self._texts() for w in text.replace(",", " ").split()})
        if not stored:
            return
        parts = data.draw(
            st.lists(
                st.builds(
                    query_word, st.sampled_from(stored), st.integers(0, 4), st.integers(1, 8)
                ),
                min_size=1,
                max_size=3,
            )
        )
        query = " ".join(p.upper() if data.draw(st.booleans()) else p for p in parts)
        if any(p in ("OR", "AND", "NOT") for p in query.split()):
            return  # operators, not words
        self.check_search(query)

    def _texts(self) -> list[str]:
        return [
            t
            for name, (etype, observations) in self.ref.entities.items()
            for t in (name, etype, *observations)
        ]

    def check_search(self, query: str) -> None:
        result = self.store.search_nodes(query, limit=1000)
        event(
            f"search: {'corrected' if result.correctedQuery else 'typed'}, "
            f"{'empty' if not result.entities else 'found'}"
        )
        found = {e.name for e in result.entities}
        assert len(found) == len(result.entities), "an entity was returned twice"
        if result.correctedQuery is not None:
            # no entity had every word as typed; the corrected words were searched instead
            assert self.ref.every(query) == set(), query
            every, expected = self.ref.search(result.correctedQuery)
        else:
            every, expected = self.ref.search(query)
        # the page holds every match (the limit is far above), those with every word first
        assert found == expected, (query, result.correctedQuery)
        assert result.total == len(expected)
        with_every_word = result.total if result.withEveryWord is None else result.withEveryWord
        assert with_every_word == len(every), (query, result.correctedQuery)
        assert {e.name for e in result.entities[:with_every_word]} == every
        expected_relations = [r for r in self.ref.relations if r[0] in found or r[1] in found]
        assert [(r.from_, r.to, r.relationType) for r in result.relations or []] == (
            expected_relations
        )

    @invariant()
    def graph_matches_reference(self) -> None:
        graph = self.store.read_graph()
        assert {e.name: (e.entityType, e.observations) for e in graph.entities} == (
            self.ref.entities
        )
        assert [(r.from_, r.to, r.relationType) for r in graph.relations] == self.ref.relations

    @invariant()
    def indexes_are_consistent(self) -> None:
        report = self.store.check()
        assert report.ok, report


SearchMachine.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=25,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestSearchMatchesReference = SearchMachine.TestCase
