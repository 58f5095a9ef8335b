"""Word forms: a query word finds the other forms of it (Snowball stems, sql/003), while
phrases, prefixes and other scripts stay exact; files from before word forms get their stems."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from conftest import SQL_DIR
from memfts.errors import DatabaseOpenError
from memfts.models import Entity, ObservationAddition
from memfts.store import Store

pytestmark = pytest.mark.full_text  # the full-text ranking's exact results (conftest)

NOTES = [
    Entity(name="certbot", entityType="tool", observations=["Could not renew the certificate"]),
    Entity(name="ci-runner", entityType="service", observations=["The flaky test fails on main"]),
    Entity(name="vault", entityType="service", observations=["Rotate the API key every 90 days"]),
    Entity(name="release", entityType="process", observations=["Deployments go out at noon"]),
    Entity(name="deploy-bot", entityType="tool", observations=["Posts deploy notices"]),
    Entity(name="東京オフィス", entityType="office", observations=["東京タワーの近く"]),
]


def names(store: Store, query: str) -> list[str]:
    return [e.name for e in store.search_nodes(query).entities]


@pytest.fixture
def notes(store: Store) -> Store:
    store.create_entities(NOTES)
    # filler, so that bm25 has something to weigh the words against
    store.create_entities(
        [Entity(name=f"filler {i}", entityType="t", observations=["nothing"]) for i in range(20)]
    )
    return store


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("renewing certificates", ["certbot"]),
        ("failing tests", ["ci-runner"]),
        ("rotating keys", ["vault"]),
        ("deployment", ["deploy-bot", "release"]),
    ],
)
def test_a_word_finds_its_other_forms(notes: Store, query: str, expected: list[str]) -> None:
    assert sorted(names(notes, query)) == expected


def test_the_form_as_typed_ranks_above_other_forms(notes: Store) -> None:
    assert names(notes, "deploy") == ["deploy-bot", "release"]
    assert names(notes, "deployments") == ["release", "deploy-bot"]


def test_quoted_words_phrases_and_prefixes_stay_exact(notes: Store) -> None:
    assert names(notes, '"renewing"') == []
    assert names(notes, '"deployments go"') == ["release"]
    assert names(notes, '"deploy go"') == []
    assert names(notes, "renew*") == ["certbot"]
    # no form of "renewi" is a word start: found only as a typo, and said so
    assert notes.search_nodes("renewi*").correctedQuery == "renew"


def test_other_scripts_are_unchanged(notes: Store) -> None:
    assert names(notes, "東京") == ["東京オフィス"]
    assert names(notes, "タワー") == ["東京オフィス"]


def test_no_word_forms_when_the_language_is_none(db_path: Path) -> None:
    store = Store(db_path, language="none")
    try:
        store.create_entities(NOTES)
        assert names(store, "renewing") == []
        assert names(store, "renew certificate") == ["certbot"]
    finally:
        store.close()


def test_an_unknown_language_is_one_clear_line(db_path: Path) -> None:
    with pytest.raises(DatabaseOpenError, match=r"'klingon' is not a language .* or none"):
        Store(db_path, language="klingon")


def test_the_language_comes_from_the_environment(
    db_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MEMFTS_LANGUAGE", "german")
    store = Store(db_path)
    try:
        store.create_entities([Entity(name="Buch", entityType="t", observations=["gelesen"])])
        assert names(store, "Bücher") == ["Buch"]
    finally:
        store.close()
    assert settings(db_path) == {"stem_language": "german"}


def settings(path: Path) -> dict[str, str]:
    conn = apsw.Connection(str(path))
    try:
        return dict(conn.execute("SELECT name, value FROM search_settings").fetchall())
    finally:
        conn.close()


def unstemmed(path: Path) -> int:
    conn = apsw.Connection(str(path))
    try:
        return int(conn.execute("SELECT count(*) FROM search_terms WHERE stem IS NULL").get)
    finally:
        conn.close()


def test_changing_the_language_stems_the_words_again(db_path: Path) -> None:
    Store(db_path).close()
    store = Store(db_path, language="german")
    try:
        store.create_entities([Entity(name="Buch", entityType="t", observations=["gelesen"])])
        assert names(store, "Bücher") == ["Buch"]
    finally:
        store.close()
    store = Store(db_path)  # english again
    try:
        assert names(store, "Bücher") == []  # not an English form of "buch"
    finally:
        store.close()
    assert settings(db_path) == {"stem_language": "english"}
    assert unstemmed(db_path) == 0


def test_a_file_from_before_word_forms_gets_its_stems_on_open(tmp_path: Path) -> None:
    """A v0.1 file (schema 001-002) with words recorded the v0.1 way, without stems."""
    path = tmp_path / "v01.db"
    conn = apsw.Connection(str(path))
    conn.pragma("journal_mode", "wal")
    for version, name in ((1, "001_schema.sql"), (2, "002_loose_terms.sql")):
        with conn:
            conn.execute((SQL_DIR / name).read_text())
            conn.pragma("user_version", version)
    with conn:
        conn.execute("INSERT INTO entities(id, name, entity_type) VALUES (1, 'certbot', 'tool')")
        conn.execute(
            "INSERT INTO observations(id, entity_id, content) "
            "VALUES (1 << 20, 1, 'could not renew the certificate')"
        )
        conn.executemany(
            "INSERT INTO search_terms(term) VALUES (?)",
            [(w,) for w in ["certbot", "tool", "could", "not", "renew", "the", "certificate"]],
        )
    conn.close()
    store = Store(path)
    try:
        assert names(store, "renewing certificates") == ["certbot"]
    finally:
        store.close()
    assert unstemmed(path) == 0
    assert settings(path) == {"stem_language": "english"}


def test_words_recorded_without_a_stem_get_one_at_the_next_write(notes: Store) -> None:
    """Another tool (or an older memfts on the same file) records a word with no stem."""
    with notes._db.write() as db:
        db.execute("INSERT INTO entities(id, name, entity_type) VALUES (9999, 'legacy', 't')")
        db.execute(
            "INSERT INTO observations(id, entity_id, content) "
            "VALUES (9999 << 20, 9999, 'migrations')"
        )
        db.execute("INSERT INTO search_terms(term) VALUES ('migrations')")
    assert names(notes, "migrate") == []
    notes.add_observations([ObservationAddition(entityName="vault", contents=["sealed"])])
    assert names(notes, "migrate") == ["legacy"]


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ("Mueller", "Jürgen Müller"),
        ("Juergen", "Jürgen Müller"),
        ("Schroeder", "Wolfgang Schröder"),
        ("Aalborg", "Ålborg office"),
        ("Moeller", "Søren Møller"),
        ("Strasse", "Straße des 17. Juni"),
    ],
)
def test_german_and_nordic_transliterations_find_the_letters(
    store: Store, query: str, expected: str
) -> None:
    store.create_entities(
        [
            Entity(name="Jürgen Müller", entityType="person", observations=["payments"]),
            Entity(name="Wolfgang Schröder", entityType="person", observations=["billing"]),
            Entity(name="Ålborg office", entityType="office", observations=["Denmark"]),
            Entity(name="Søren Møller", entityType="person", observations=["VPN"]),
            Entity(name="Straße des 17. Juni", entityType="address", observations=["Berlin"]),
        ]
    )
    assert names(store, query) == [expected]


def test_a_word_shared_only_through_a_transliteration_ranks_below_the_word(store: Store) -> None:
    """ "due" and "du" share a spelling key (ue -> u): the word typed comes first."""
    store.create_entities(
        [
            Entity(name="du", entityType="tool", observations=["disk usage"]),
            Entity(name="invoice", entityType="thing", observations=["payment due in 30 days"]),
        ]
        + [Entity(name=f"filler {i}", entityType="t", observations=["x"]) for i in range(20)]
    )
    assert names(store, "due") == ["invoice", "du"]
