"""How the ranking fills a page, counts common words, applies filters and exclusions, and how
many SQL statements a search costs (store level, real database files)."""

from __future__ import annotations

from pathlib import Path

import apsw
import pytest

from memfts import ranking
from memfts.models import Entity
from memfts.store import Store

pytestmark = pytest.mark.full_text  # the full-text ranking's exact results (conftest)


def E(name: str, etype: str, *observations: str) -> Entity:
    return Entity(name=name, entityType=etype, observations=list(observations))


def names(store: Store, query: str, **options: object) -> list[str]:
    return [e.name for e in store.search_nodes(query, **options).entities]  # type: ignore[arg-type]


@pytest.fixture
def team(store: Store) -> Store:
    store.create_entities([E(f"filler {i}", "filler", "nothing to see") for i in range(30)])
    store.create_entities(
        [
            E("Billing team", "team", "Owns the billing service and the invoices"),
            E("Priya", "person", "Owner of billing-service since March"),
            E("Alex", "person", "Took billing over to Priya, now on payments"),
            E("ledger", "service", "Double-entry ledger behind the invoices"),
        ]
    )
    return store


def test_the_page_is_filled_with_the_best_partial_matches_after_the_complete_ones(
    team: Store,
) -> None:
    result = team.search_nodes("who owns the billing service")
    found = [e.name for e in result.entities]
    assert found[0] == "Billing team"  # owns, billing, service
    assert result.withEveryWord == 1
    # then by how many of the words they hold ("owner" is not a form of "owns")
    assert found[1:3] == ["Priya", "ledger"]  # billing + service; service (its type)
    assert found[3:] == ["Alex"]  # billing
    assert result.total == 4


def test_with_every_word_is_absent_when_every_match_holds_every_word(team: Store) -> None:
    result = team.search_nodes("invoices")
    assert result.withEveryWord is None
    assert result.total == 2


def test_the_limit_cuts_the_page_and_total_counts_every_match(team: Store) -> None:
    result = team.search_nodes("billing invoices", limit=1)
    assert [e.name for e in result.entities] == ["Billing team"]
    assert (result.total, result.withEveryWord) == (4, 1)  # + Priya, Alex, ledger


def test_total_and_with_every_word_respect_the_type_filter(team: Store) -> None:
    result = team.search_nodes("billing owner", entity_type="person")
    assert [e.name for e in result.entities] == ["Priya", "Alex"]
    assert (result.total, result.withEveryWord) == (2, 1)
    result = team.search_nodes("billing owner -type:person")
    assert [e.name for e in result.entities] == ["Billing team"]
    assert result.total == 1


@pytest.fixture
def few_rows_are_common(monkeypatch: pytest.MonkeyPatch) -> None:
    """A word in more than 3 rows counts as common (the real bound is a thousand rows)."""
    monkeypatch.setattr(ranking, "COMMON_CLAUSE_ROWS", 3)


@pytest.mark.usefixtures("few_rows_are_common")
def test_a_common_word_counts_among_the_entities_of_the_rare_ones(store: Store) -> None:
    store.create_entities(
        [E(f"kafka user {i}", "service", "reads from kafka") for i in range(6)]
        + [
            E("billing", "service", "postgres and kafka in one observation"),
            E("reports", "service", "postgres for the reports"),
        ]
    )
    result = store.search_nodes("postgres kafka")
    # kafka is common: it does not rank on its own, but it counts where postgres is
    assert [e.name for e in result.entities] == ["billing", "reports"]
    assert result.withEveryWord == 1


@pytest.mark.usefixtures("few_rows_are_common")
def test_only_common_words_give_the_latest_entities_holding_all_first(store: Store) -> None:
    store.create_entities(
        [E(f"kafka only {i}", "service", "kafka here") for i in range(4)]
        + [E(f"both {i}", "service", "postgres and kafka") for i in range(4)]
        + [E(f"postgres only {i}", "db", "postgres here") for i in range(4)]
    )
    result = store.search_nodes("postgres kafka", limit=6)
    found = [e.name for e in result.entities]
    assert found[:4] == ["both 3", "both 2", "both 1", "both 0"]
    assert result.totalIsLowerBound
    # the type filter applies while reading: the lower bound counts only that type
    result = store.search_nodes("postgres kafka", entity_type="db")
    assert [e.name for e in result.entities] == [f"postgres only {i}" for i in (3, 2, 1, 0)]
    assert result.total == 4
    assert result.withEveryWord == 0


@pytest.mark.usefixtures("few_rows_are_common")
def test_only_common_words_fill_the_page_with_entities_holding_all_of_them(store: Store) -> None:
    # older entities holding both words, newer ones holding both in three observations each,
    # newest ones holding only the rarer word: the rows holding every word are read until
    # they name enough entities (not for a number of rows, which the newer entities' three
    # rows each would use up, letting the newest partial matches into the page)
    store.create_entities(
        [E(f"both {i}", "service", "postgres and kafka") for i in range(20)]
        + [
            Entity(
                name=f"both thrice {i}",
                entityType="service",
                observations=[f"postgres and kafka, note {n}" for n in range(3)],
            )
            for i in range(10)
        ]
        + [E(f"kafka only {i}", "service", "kafka here") for i in range(40)]
        + [E(f"postgres only {i}", "db", "postgres here") for i in range(10)]
    )
    result = store.search_nodes("postgres kafka", limit=12)
    assert len(result.entities) == 12
    assert all(e.name.startswith("both") for e in result.entities)
    assert result.withEveryWord is not None and result.withEveryWord >= 12


def test_an_excluded_word_leaves_out_exactly_what_the_word_finds(store: Store) -> None:
    store.create_entities(
        [E(f"filler {i}", "filler", "nothing") for i in range(20)]
        + [
            E("ledger-db", "database", "PostgreSQL 15"),
            E("cache", "database", "Redis, not postgres"),
            E("search", "database", "OpenSearch cluster"),
            E("events", "database", "Deployed the postgres migrations"),
        ]
    )
    found = set(names(store, "database"))
    postgres = set(names(store, "postgres"))
    assert postgres == {"ledger-db", "cache", "events"}
    assert set(names(store, "database -postgres")) == found - postgres == {"search"}
    # a form of the word too: "deploying" finds "Deployed", so "-deploying" leaves it out
    assert "events" in names(store, "deploying")
    assert "events" not in names(store, "database -deploying")


def test_snippets_come_from_one_statement_and_mark_each_entitys_own_hits(store: Store) -> None:
    store.create_entities(
        [E(f"svc {i}", "service", f"postgres replica {i}", "unrelated") for i in range(30)]
    )
    with counted(store) as statements:
        result = store.search_nodes("postgres", snippets=True, limit=30)
    assert len(result.entities) == 30
    for hit in result.entities:
        number = hit.name.split()[1]
        assert hit.snippets == [f"**postgres** replica {number}"]
    assert sum("snippet(" in sql for sql in statements) == 1


@pytest.fixture
def counted_store(store: Store) -> Store:
    store.create_entities(
        [E(f"filler {i}", "filler", "nothing") for i in range(20)]
        + [
            E("editor", "preference", "The user prefers Neovim as the editor"),
            E("User", "person", "Works on billing"),
        ]
    )
    return store


class counted:
    """The SQL statements a store runs inside the block (APSW's exec trace)."""

    def __init__(self, store: Store) -> None:
        self.conn = store._db.conn
        self.seen: list[str] = []

    def __enter__(self) -> list[str]:
        def trace(cursor: apsw.Cursor, sql: str, bindings: object) -> bool:
            self.seen.append(sql)
            return True

        self.conn.exec_trace = trace
        return self.seen

    def __exit__(self, *exc: object) -> None:
        self.conn.exec_trace = None


@pytest.mark.parametrize(
    ("query", "options", "most"),
    [
        ("editor", {}, 9),
        ("editor neovim", {}, 9),
        ("what editor does the user prefer", {}, 9),
        ("what editor does the user prefer", {"snippets": True, "depth": 1}, 11),
    ],
)
def test_a_search_runs_a_fixed_number_of_statements(
    counted_store: Store, query: str, options: dict[str, object], most: int
) -> None:
    """BEGIN + first read, vocabulary, clause sizes, ranking, entities, observations,
    relations, COMMIT; +1 for snippets, +1 per hop of depth: whatever the number of words."""
    with counted(counted_store) as statements:
        counted_store.search_nodes(query, **options)  # type: ignore[arg-type]
    assert len(statements) <= most, statements


def test_words_typed_as_one_rank_the_entity_holding_them_together_first(store: Store) -> None:
    store.create_entities(
        [E(f"filler {i}", "filler", "nothing") for i in range(20)]
        + [
            E("refunds", "doc", "Refund rules: round the total, then refund"),
            E("flaky test", "bug", "test_refund_rounding fails when TZ is unset"),
        ]
    )
    assert names(store, "refund_round")[0] == "flaky test"  # refund, round* side by side
    assert names(store, "refund round")[0] == "refunds"  # two words: both entities have both


def test_a_name_starting_with_the_query_comes_first(store: Store) -> None:
    store.create_entities(
        [E(f"filler {i}", "filler", "nothing") for i in range(20)]
        + [
            E("notes", "doc", "The konbini adapter retries twice"),
            E("konbini-adapter", "service", "Pays at convenience stores"),
        ]
    )
    assert names(store, "konbini adap")[0] == "konbini-adapter"


def test_words_another_process_adds_are_found_by_a_store_that_searched_before(
    db_path: Path,
) -> None:
    """A store keeps the expansions of the words it looked up (the words containing them,
    their forms) while the vocabulary is unchanged; a word written by another store on the
    same file (another process) makes it look again."""
    one, two = Store(db_path), Store(db_path)
    try:
        one.create_entities([E(f"filler {i}", "filler", "nothing") for i in range(10)])
        one.create_entities([E("web", "app", "written in JavaScript")])
        assert names(one, "script") == ["web"]
        two.create_entities([E("api", "service", "written in TypeScript, deploys nightly")])
        assert sorted(names(one, "script")) == ["api", "web"]
        assert names(one, "deploying") == ["api"]  # a form recorded by the other store
    finally:
        one.close()
        two.close()


def test_flags_and_lone_exclusions_are_searched_for(tmp_path: Path) -> None:
    """An agent's memory holds command lines: ``--no-verify``, ``-x`` and ``-rf`` are the text
    looked for (they used to leave it out and list everything else), and so is a query of
    nothing but exclusions; ``-word`` after other words still leaves it out."""
    store = Store(tmp_path / "memory.db")
    try:
        store.create_entities(
            [
                Entity(name="git workflow", entityType="convention",
                       observations=["Never use git commit --no-verify", "Rebase, then merge"]),
                Entity(name="pytest", entityType="tool",
                       observations=["Run with -x to stop at the first failure"]),
                Entity(name="other", entityType="note", observations=["Verify the backups"]),
                Entity(name="shell safety", entityType="convention",
                       observations=["Never rm -rf a path built from a variable"]),
            ]
        )  # fmt: skip

        def found(query: str) -> list[str]:
            return [e.name for e in store.search_nodes(query).entities]

        assert found("--no-verify")[0] == "git workflow"
        assert found("git commit --no-verify")[0] == "git workflow"
        assert found("pytest -x")[0] == "pytest"
        assert found("-x")[0] == "pytest"
        assert found("rm -rf")[0] == "shell safety"
        assert found("-backups") == ["other"]
        assert found("verify -backups")[0] == "git workflow"
        assert "other" not in found("verify -backups")
    finally:
        store.close()
