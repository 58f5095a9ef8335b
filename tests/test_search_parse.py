"""The query parser on its own: text -> Query, as a table (no database).

Each row is what a user or a model types and the structure the search is built from. The
search's answers follow from these; test_search_protocol.py checks the answers themselves.
"""

from __future__ import annotations

import pytest

from memfts.search import Clause, Query, Term, parse


def w(*words: str, prefix: bool = False, exact: bool = False, name_only: bool = False) -> Term:
    return Term(tuple(words), prefix=prefix, exact=exact, name_only=name_only)


def one(term: Term) -> Clause:
    return Clause((term,))


CASES: list[tuple[str, Query]] = [
    # plain words: folded like the index (case, accents), each one required
    ("Postgres Café", Query(required=[one(w("postgres")), one(w("cafe"))])),
    ("postgres postgres", Query(required=[one(w("postgres"))])),
    # punctuation inside a word: several index words, each required
    ("C++ node.js", Query(required=[one(w("c")), one(w("node")), one(w("js"))])),
    ("node.js*", Query(required=[one(w("node")), one(w("js", prefix=True))])),
    # phrases and prefixes
    ('"exact phrase" word*', Query(required=[one(w("exact", "phrase", exact=True)),
                                             one(w("word", prefix=True))])),
    ('"the"', Query(required=[one(w("the", exact=True))])),  # quoted: never a stopword
    ('"foo bar"*', Query(required=[one(w("foo", "bar", prefix=True, exact=True))])),
    # OR and |
    ("a OR b", Query(required=[Clause((w("a"), w("b")))])),
    ("x | y z", Query(required=[Clause((w("x"), w("y"))), one(w("z"))])),
    ("OR foo", Query(required=[one(w("foo"))])),  # nothing before OR: a plain word
    ("foo AND bar", Query(required=[one(w("foo")), one(w("bar"))])),
    # exclusions
    ("postgres -mysql", Query(required=[one(w("postgres"))], excluded=[one(w("mysql"))])),
    ("NOT foo bar", Query(required=[one(w("bar"))], excluded=[one(w("foo"))])),
    ("x -node.js", Query(required=[one(w("x"))], excluded=[one(w("node", "js", exact=True))])),
    ('x -"foo bar"', Query(required=[one(w("x"))], excluded=[one(w("foo", "bar", exact=True))])),
    # nothing but exclusions: the words are what is searched for
    ("-cache", Query(required=[one(w("cache"))])),
    ("NOT foo", Query(required=[one(w("foo"))])),
    ("the -cache", Query(required=[one(w("cache"))])),
    ('-"foo bar"', Query(required=[one(w("foo", "bar", exact=True))])),
    # a flag or a one-letter option is text, never an exclusion
    # ("no" is a stopword; the words side by side rank first)
    ("--no-verify", Query(required=[one(w("verify"))])),
    ("git commit --no-verify", Query(required=[one(w("git")), one(w("commit")),
                                               one(w("verify"))])),
    ("pytest -x", Query(required=[one(w("pytest")), one(w("x"))])),
    ("rm -rf", Query(required=[one(w("rm")), one(w("rf"))])),
    ("docs -api", Query(required=[one(w("docs"))], excluded=[one(w("api"))])),
    ("redis -- cache", Query(required=[one(w("redis")), one(w("cache"))])),
    # fields
    ("name:alice", Query(required=[one(w("alice", name_only=True))])),
    ('name:"Alice Smith"', Query(required=[one(w("alice", "smith", exact=True, name_only=True))])),
    ("-name:bob x", Query(required=[one(w("x"))], excluded=[one(w("bob", name_only=True))])),
    ("type:Person bug", Query(required=[one(w("bug"))], entity_types=["Person"])),
    ('entityType:"web service"', Query(entity_types=["web service"])),
    ("-type:bot", Query(excluded_types=["bot"])),
    ("name: green", Query(required=[one(w("green"))])),  # a field with nothing after it
    ("type:", Query()),
    ("TYPE:x NAME:y", Query(required=[one(w("y", name_only=True))], entity_types=["x"])),
    # stopwords: dropped when other words remain, kept when the query is only stopwords
    ("what is postgres", Query(required=[one(w("postgres"))])),
    ("what is the", Query(required=[one(w("what")), one(w("is")), one(w("the"))])),
    ("name:it", Query(required=[one(w("it", name_only=True))])),
    # CJK: one index word per run
    ("東京タワー", Query(required=[one(w("東京タワー"))])),
    ("東京 大阪", Query(required=[one(w("東京")), one(w("大阪"))])),
    # broken syntax reads as the words around it, or as nothing
    ('"unbalanced', Query(required=[one(w("unbalanced"))])),
    ("foo AND", Query(required=[one(w("foo"))])),
    ("NEAR(a b, 3)", Query(required=[one(w("near")), one(w("b")), one(w("3"))])),
    ("a:b", Query(required=[one(w("b"))])),
    ("C++", Query(required=[one(w("c"))])),
    ("*", Query()),
    ('""', Query()),
    ("", Query()),
    ("nul\x00byte", Query(required=[one(w("nul")), one(w("byte"))])),
    ("'; DROP TABLE entities; --", Query(required=[one(w("drop")), one(w("table")),
                                                   one(w("entities"))])),
]  # fmt: skip


@pytest.mark.parametrize(("text", "expected"), CASES, ids=[repr(c[0]) for c in CASES])
def test_text_parses_to_query(text: str, expected: Query) -> None:
    assert parse(text) == expected


def test_words_past_the_cap_are_ignored() -> None:
    parsed = parse(" ".join(f"word{i}" for i in range(40)))
    assert parsed.words == [f"word{i}" for i in range(16)]


def test_filters_count_toward_the_cap() -> None:
    parsed = parse("alpha " + " ".join(f"-type:t{i}" for i in range(100)) + " omega")
    assert parsed.words == ["alpha"]
    assert parsed.excluded_types == [f"t{i}" for i in range(15)]
    parsed = parse(" ".join(f"type:x{i} w{i}" for i in range(1000)))
    assert len(parsed.entity_types) + len(parsed.words) == 16


def test_the_typed_text_is_kept_but_not_compared() -> None:
    assert parse("  Foo ").text == "  Foo "
    assert parse("foo") == parse("FOO")
