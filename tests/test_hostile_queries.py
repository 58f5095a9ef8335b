"""No text a user or a model types can break search: every hostile string comes back as a
normal result over MCP, never an FTS5 syntax error, and the indexes stay consistent."""

from __future__ import annotations

import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcp_session import Session, error_text, only_text, params_for, session
from memfts.models import Entity
from memfts.store import Store

HOSTILE = [
    "C++",
    "C#",
    "node.js",
    '"unbalanced',
    'two "quoted" words',
    '""',
    "foo AND",
    "AND foo",
    "NEAR(",
    "NEAR(a b, 3)",
    "-x",
    "x -y",
    "*",
    "ab*",
    "a:b",
    "name:alice",
    "entity_type:person",
    "%",
    "_",
    "%_%",
    "'; DROP TABLE entities; --",
    "') OR 1=1 --",
    "nul\x00byte",
    "\x00",
    "🧠🚀",
    "emoji 🧠 in text",
    "東京タワー",
    "日本語のテキスト",
    "",
    " ",
    "\t\n\r ",
    "AND",
    "OR",
    "NOT",
    "NEAR",
    "and or not near",
    "^",
    "^alice",
    "{a b}: c",
    "{name entity_type}: person",
    "(",
    ")",
    "()",
    "((a OR b)",
    "a + b",
    "\\",
    "\\\\",
    "back\\slash",
    "C:\\Users\\me",
    "'",
    '"',
    "`",
    "‘single’",
    "“double”",
    "«guillemets»",
    "„low“",
    "'mixed\" `quotes'",
    "[brackets]",
    "$1 ?1 :name @p",
    "a" * 2048,
    ("word " * 409)[:2048],
    "alice " * 2_000,
    string.punctuation,
    "é",
    "ÉCOLE",
]


@pytest.fixture(scope="module")
def db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("hostile") / "memory.db"


@pytest.fixture(scope="module")
def mcp(db: Path) -> Iterator[Session]:
    with session(params_for(db)) as s:
        s.ok(
            "create_entities",
            {
                "entities": [
                    {"name": "C++", "entityType": "language", "observations": ["fast", "C# too"]},
                    {"name": "Alice", "entityType": "person", "observations": ["likes node.js"]},
                    {
                        "name": "東京タワー",
                        "entityType": "place",
                        "observations": ["日本語のテキスト"],
                    },
                    {"name": "'; DROP TABLE entities; --", "entityType": "attack"},
                    {"name": "École", "entityType": "school", "observations": ["ÉCOLE é"]},
                ]
                + [
                    {"name": f"text {i}", "entityType": "note", "observations": [h]}
                    for i, h in enumerate(HOSTILE)
                    if h.strip() and "\x00" not in h
                ]
            },
        )
        s.ok(
            "create_relations",
            {"relations": [{"from": "Alice", "to": "C++", "relationType": "uses"}]},
        )
        yield s


@pytest.fixture(scope="module")
def store(db: Path, mcp: Session) -> Iterator[Store]:
    """A second process's view of the same file (the server keeps running)."""
    s = Store(db)
    yield s
    s.close()


def assert_normal_search(result: Any) -> dict[str, Any]:
    assert not result.is_error, error_text(result)
    structured = result.structured_content
    assert structured is not None
    assert {"entities", "relations", "total"} <= set(structured)
    assert isinstance(structured["entities"], list)
    assert isinstance(structured["relations"], list)
    assert isinstance(structured["total"], int)
    assert structured["total"] >= len(structured["entities"])
    assert json.loads(only_text(result)) == structured
    return structured


@pytest.mark.parametrize("query", HOSTILE, ids=[repr(h[:30]) for h in HOSTILE])
def test_hostile_query_is_a_normal_search(mcp: Session, store: Store, query: str) -> None:
    assert_normal_search(mcp.call("search_nodes", {"query": query}))
    assert_normal_search(mcp.call("search_nodes", {"query": "alice", "entityType": query}))
    assert_normal_search(mcp.call("search_nodes", {"query": query, "limit": 1}))


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("C++", "C++"),
        ("node.js", "Alice"),
        ("東京タワー", "東京タワー"),
        ("日本語のテキスト", "東京タワー"),
        ("'; DROP TABLE entities; --", "'; DROP TABLE entities; --"),
        ("école", "École"),
        ("ÉCOLE", "École"),
    ],
)
def test_hostile_text_is_searched_as_plain_words(mcp: Session, query: str, expected: str) -> None:
    found = assert_normal_search(mcp.call("search_nodes", {"query": query, "limit": 100}))
    assert expected in [e["name"] for e in found["entities"]]


@pytest.mark.parametrize(
    "query",
    [
        "x" * 10_000,
        "word " * 2_000,
        "東京" * 5_000,
        '"' * 10_000,
        "(" * 5_000 + "alice",
        " ".join(f"w{i}" for i in range(2_000)),
        "-" * 10_000,
    ],
    ids=["one-word", "words", "cjk", "quotes", "parens", "distinct-words", "dashes"],
)
def test_a_ten_thousand_character_query_is_a_normal_search(mcp: Session, query: str) -> None:
    assert_normal_search(mcp.call("search_nodes", {"query": query}))


def test_a_query_past_the_bound_is_a_clear_validation_error(mcp: Session) -> None:
    over = mcp.call("search_nodes", {"query": "y" * 100_001})
    assert over.is_error
    message = error_text(over)
    assert "query" in message and "100000" in message, message
    assert_normal_search(mcp.call("search_nodes", {"query": "y" * 100_000}))


def test_the_graph_is_intact_and_consistent_after_the_hostile_queries(
    mcp: Session, store: Store
) -> None:
    for query in HOSTILE:
        mcp.call("search_nodes", {"query": query})
    names = [e["name"] for e in mcp.ok("read_graph").structured_content["entities"]]
    assert "C++" in names and "'; DROP TABLE entities; --" in names
    report = store.check()
    assert report.ok, report
    assert report.entities == len(names)


FTS_SPECIALS = "+-*:^\"()'{}[].,;!?\\ \t\n\x00%_`" + "東京é🧠" + "ANDORNTE"


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    query=st.one_of(
        st.text(alphabet=FTS_SPECIALS, max_size=60),
        st.lists(
            st.sampled_from(
                ["AND", "OR", "NOT", "NEAR", "NEAR(", "*", '"', "c++", "x:y", "-", "^"]
            ),
            max_size=12,
        ).map(" ".join),
        st.text(max_size=80),
    ),
    entity_type=st.one_of(st.none(), st.text(max_size=10)),
)
def test_any_text_searches_without_error_in_the_store(
    tmp_path_factory: pytest.TempPathFactory, query: str, entity_type: str | None
) -> None:
    store = _fuzz_store(tmp_path_factory)
    result = store.search_nodes(query, limit=5, entity_type=entity_type)
    assert len(result.entities) <= 5
    assert result.total >= len(result.entities)


_FUZZ_STORE: list[Store] = []


def _fuzz_store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """One store for all examples: a small graph holding many of the special characters."""
    if not _FUZZ_STORE:
        from conftest import build_schema

        path = tmp_path_factory.mktemp("fuzz") / "memory.db"
        build_schema(path)
        store = Store(path)
        store.create_entities(
            [
                Entity(name=f"e{i}", entityType="t", observations=[h])
                for i, h in enumerate(HOSTILE)
                if "\x00" not in h
            ]
        )
        _FUZZ_STORE.append(store)
    return _FUZZ_STORE[0]


@pytest.fixture(scope="module", autouse=True)
def _close_fuzz_store() -> Iterator[None]:
    yield
    while _FUZZ_STORE:
        store = _FUZZ_STORE.pop()
        assert store.check().ok
        store.close()
