"""Synonyms: a query word or phrase also finds the other members of its group in the shipped
table (src/memfts/synonyms.txt) and in the user's files (MEMFTS_SYNONYMS)."""

from __future__ import annotations

from pathlib import Path

import pytest

from memfts import search, vocabulary
from memfts.errors import DatabaseOpenError
from memfts.models import Entity
from memfts.store import Store

NOTES = [
    Entity(name="cluster", entityType="infra", observations=["Kubernetes 1.29 on three nodes"]),
    Entity(name="pods", entityType="infra", observations=["k8s pods restart at night"]),
    Entity(name="okta", entityType="vendor", observations=["Handles single sign-on for staff"]),
    Entity(name="login", entityType="service", observations=["SSO through Okta since May"]),
    Entity(name="ledger-db", entityType="database", observations=["Postgres 15"]),
    Entity(name="leave", entityType="policy", observations=["25 days of vacation a year"]),
]


def names(store: Store, query: str) -> list[str]:
    return [e.name for e in store.search_nodes(query).entities]


@pytest.fixture
def notes(store: Store) -> Store:
    store.create_entities(NOTES)
    store.create_entities(
        [Entity(name=f"filler {i}", entityType="t", observations=["nothing"]) for i in range(20)]
    )
    return store


@pytest.mark.parametrize(
    ("query", "first", "also"),
    [
        ("k8s", "pods", {"cluster"}),
        ("kubernetes", "cluster", {"pods"}),
        ("sso", "login", {"okta"}),
        ("single sign-on", "okta", {"login"}),
        ("time off", "leave", set()),
        ("databases", "ledger-db", set()),  # "db" and "database" by stem
    ],
)
def test_a_word_finds_its_synonyms_after_itself(
    notes: Store, query: str, first: str, also: set[str]
) -> None:
    found = names(notes, query)
    assert found[0] == first
    assert set(found[1:]) == also


def test_a_quoted_word_has_no_synonyms(notes: Store) -> None:
    assert names(notes, '"k8s"') == ["pods"]


def test_a_synonym_counts_as_the_word_for_every_word_to_hold(notes: Store) -> None:
    result = notes.search_nodes("kubernetes restart")
    assert [e.name for e in result.entities] == ["pods", "cluster"]
    assert result.withEveryWord == 1


def test_the_users_files_add_groups(db_path: Path, tmp_path: Path) -> None:
    mine = tmp_path / "team.txt"
    mine.write_text("# our jargon\nhalyard, the platform\nbilling, invoicing  # and more\n")
    store = Store(db_path, synonyms=str(mine))
    try:
        store.create_entities(
            [
                Entity(name="Halyard", entityType="company", observations=["We build it"]),
                Entity(name="invoicer", entityType="service", observations=["invoicing runs"]),
            ]
        )
        assert names(store, "the platform") == ["Halyard"]
        assert names(store, "billing") == ["invoicer"]
        assert names(store, "k8s") == []  # the shipped table still applies (nothing matches)
    finally:
        store.close()


def test_the_files_come_from_the_environment(
    db_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    one, two = tmp_path / "one.txt", tmp_path / "two.txt"
    one.write_text("alpha, first letter\n")
    two.write_text("omega, last letter\n")
    monkeypatch.setenv("MEMFTS_SYNONYMS", f"{one}:{two}")
    store = Store(db_path)
    try:
        store.create_entities([Entity(name="greek", entityType="t", observations=["omega"])])
        assert names(store, "last letter") == ["greek"]
    finally:
        store.close()


def test_an_unreadable_synonyms_file_is_one_clear_line(db_path: Path, tmp_path: Path) -> None:
    with pytest.raises(DatabaseOpenError, match=r"MEMFTS_SYNONYMS: cannot read the synonyms file"):
        Store(db_path, synonyms=str(tmp_path / "missing.txt"))


class Table:
    """A synonym table of the parser's protocol, for the parse cases below."""

    longest = 3

    def __init__(self, groups: list[list[str]]) -> None:
        self.table = vocabulary.Synonyms(groups, vocabulary.Stems("english"))

    def alternatives(self, words: tuple[str, ...]) -> list[tuple[str, ...]]:
        return self.table.alternatives(words)


def test_the_parser_merges_the_longest_run_with_synonyms() -> None:
    table = Table([["sso", "single sign on"], ["sign", "signature"]])
    parsed = search.parse("single sign on setup", synonyms=table)
    assert parsed.required == [
        search.Clause(
            (
                search.Term(("single", "sign", "on"), exact=True),
                search.Term(("sso",), synonym=True),
            )
        ),
        search.Clause((search.Term(("setup",)),)),
    ]
    assert parsed.words == ["single", "sign", "on", "setup"]  # what was typed
    # alone, "sign" has its own group
    assert search.parse("sign here", synonyms=table).required[0].terms[1] == search.Term(
        ("signature",), synonym=True
    )
