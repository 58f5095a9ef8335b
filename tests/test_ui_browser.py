"""``memfts ui`` in a real headless Chromium, as a person uses it, checking the file after
each step through its own connection.

The browser is Debian's ``chromium`` (``.ci/run`` installs it), driven by Playwright; nothing
downloads a browser build. The server is a real ``memfts ui`` process; the agents writing
meanwhile are real ``memfts`` MCP servers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

import ui_demo
from memfts.models import Entity
from memfts.store import Store
from test_curation import observations_of, relations_of
from test_store import rows
from ui_server import UiServer
from workers import RawServer

CHROMIUM = os.environ.get("MEMFTS_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HOSTILE = '<script>window.owned = 1; alert("owned")</script><img src=x onerror="window.owned=2">'


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not Path(CHROMIUM).exists():
        pytest.fail(f"no browser at {CHROMIUM}: apt-get install chromium (.ci/run does)")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def demo(db_path: Path) -> Path:
    store = Store(db_path)
    ui_demo.fill(store)
    store.create_entities(
        [Entity(name="Mallory's note", entityType="note", observations=[HOSTILE, "plain text"])]
    )
    store.close()
    return db_path


@pytest.fixture
def ui(demo: Path) -> Iterator[UiServer]:
    with UiServer(demo) as server:
        yield server


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    opened = context.new_page()
    dialogs: list[str] = []
    opened.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    opened.set_default_timeout(15_000)
    yield opened
    context.close()
    assert dialogs == [], f"a dialog opened: {dialogs}"
    assert errors == [], f"script errors on the page: {errors}"


def unfold(page: Page, summary: str) -> None:
    """Open the ``<details>`` whose summary reads ``summary``."""
    page.locator("summary", has_text=re.compile(f"^{re.escape(summary)}$")).click()


def entity_names(db: Path) -> set[str]:
    return {name for (name,) in rows(db, "SELECT name FROM entities")}


def test_search_entity_rename_merge_graph(ui: UiServer, page: Page, demo: Path) -> None:
    page.goto(ui.url)
    expect(page.get_by_role("heading", name="Memory")).to_be_visible()

    # search: ranked hits, N of M, snippets with the hits marked
    page.get_by_role("searchbox", name="Search").fill("idempotency key")
    page.keyboard.press("Enter")
    expect(page.locator(".summary")).to_contain_text(re.compile(r"\d+ of \d+ entit"))
    assert page.locator(".hit .name").first.inner_text() == "Idempotency key"
    expect(page.locator(".snippets mark").first).to_have_text(re.compile("idempotency|key", re.I))

    # entity page
    page.locator(".hit .name", has_text="billing-worker").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("billing-worker")
    expect(page.locator(".observations")).to_contain_text(
        "Idempotency key is the payment intent id"
    )
    expect(page.locator(".in")).to_contain_text("checkout-service")

    # rename: relations follow in both directions
    unfold(page, "Rename")
    page.get_by_label("New name").fill("billing-service")
    page.get_by_role("button", name="Rename").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("billing-service")
    expect(page.locator(".notice")).to_have_text("Renamed from 'billing-worker'.")
    expect(page).not_to_have_url(re.compile("billing-worker"))  # once ui.js has run
    names = entity_names(demo)
    assert "billing-service" in names and "billing-worker" not in names
    relations = relations_of(demo)
    assert ("checkout-service", "billing-service", "sends_jobs_to") in relations
    assert ("billing-service", "ledger", "writes_to") in relations
    assert not any("billing-worker" in (f, t) for f, t, _ in relations)

    # merge: postgresql into PostgreSQL, confirmed after seeing what will change
    page.goto(f"{ui.base}/entity?name=postgresql")
    unfold(page, "Merge into…")
    page.get_by_label("Entity to merge into").fill("PostgreSQL")
    page.get_by_role("button", name="Review the merge…").click()
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "Merge 'postgresql' into 'PostgreSQL'?"
    )
    expect(page.locator(".changes")).to_contain_text(
        "1 observation of 'postgresql' appended to 'PostgreSQL'"
    )
    assert "postgresql" in entity_names(demo)  # nothing changed yet
    page.get_by_role("button", name="Merge into PostgreSQL").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("PostgreSQL")
    expect(page.locator(".notice")).to_have_text("Merged 'postgresql' into this entity.")
    expect(page.locator(".observations li").last).to_contain_text("pg_dump --format=custom")
    assert "postgresql" not in entity_names(demo)
    assert [c for _, c in observations_of(demo, "PostgreSQL")][-1].startswith("Use pg_dump")
    assert ("ledger", "PostgreSQL", "stored_in") in relations_of(demo)

    # graph view: depth 1, then 2; hovering lights a node's links; a click re-centres
    before = rows(demo, "SELECT count(*) FROM entities")
    page.get_by_role("link", name="Graph view").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Around PostgreSQL")
    one = page.locator(".graph .node").count()
    # Sam Ortiz, checkout-service, search-indexer, INC-2060, and ledger from the merge
    assert one == 1 + 5
    page.get_by_role("link", name="2", exact=True).click()
    expect(page.locator(".depth.current")).to_have_text("2")
    assert page.locator(".graph .node").count() > one
    node = page.locator(".graph .node", has_text="checkout-service")
    node.hover()
    expect(page.locator(".graph .edge.hot").first).to_be_attached()
    assert page.locator(".graph .edge.hot").count() >= 5
    node.click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Around checkout-service")
    assert rows(demo, "SELECT count(*) FROM entities") == before


def test_script_from_the_database_is_shown_as_text(ui: UiServer, page: Page) -> None:
    page.goto(f"{ui.base}/entity?name=Mallory%27s%20note")
    expect(page.locator(".observations .text").first).to_have_text(HOSTILE)
    page.goto(f"{ui.base}/?q=owned")
    expect(page.locator(".hit .name").first).to_have_text("Mallory's note")
    expect(page.locator(".snippets").first).to_contain_text("<script>window.")
    page.goto(f"{ui.base}/graph?name=Mallory%27s%20note")
    page.goto(f"{ui.base}/recent")
    assert page.evaluate("window.owned") is None  # no script of the data ever ran


def test_the_page_follows_what_agents_write(ui: UiServer, page: Page, demo: Path) -> None:
    page.goto(f"{ui.base}/entity?name=Redis")
    page.evaluate("window.sameDocument = true")
    with RawServer(demo) as agent:
        agent.call_ok("add_observations", {"observations": [
            {"entityName": "Redis", "contents": ["Evictions alarm at 80 % memory"]}]})  # fmt: skip
        expect(page.locator(".observations")).to_contain_text("Evictions alarm", timeout=10_000)
        assert page.evaluate("window.sameDocument") is True  # updated in place, not reloaded

        # a search page shows a new match by itself
        page.goto(f"{ui.base}/?q=valkey")
        expect(page.locator(".summary")).to_contain_text("0 of 0")
        valkey = {"name": "Valkey", "entityType": "database", "observations": ["Redis fork"]}
        agent.call_ok("create_entities", {"entities": [valkey]})
        expect(page.locator(".hit .name")).to_have_text("Valkey", timeout=10_000)

        # while a person edits, the page says so instead of throwing the edit away
        page.goto(f"{ui.base}/entity?name=Redis")
        page.locator("details.edit summary").first.click()
        page.locator("details.edit textarea").first.fill("half-typed")
        agent.call_ok("add_observations", {"observations": [
            {"entityName": "Redis", "contents": ["written meanwhile"]}]})  # fmt: skip
        expect(page.locator("#stale")).to_be_visible(timeout=10_000)
        expect(page.locator("details.edit textarea").first).to_have_value("half-typed")
        page.get_by_role("button", name="Show the new version").click()
        expect(page.locator(".observations")).to_contain_text("written meanwhile")


def test_edit_delete_retype_and_duplicates_in_the_page(
    ui: UiServer, page: Page, demo: Path
) -> None:
    page.goto(f"{ui.base}/entity?name=Redis")
    page.locator("details.edit summary").first.click()
    page.locator("details.edit textarea").first.fill("Caches carts for 45 minutes\nthen drops them")
    page.get_by_role("button", name="Save").first.click()
    expect(page.locator(".notice")).to_have_text("Observation edited.")
    assert [c for _, c in observations_of(demo, "Redis")] == [
        "Caches carts for 45 minutes\nthen drops them",
        "Used as the job queue broker",
    ]

    page.locator(".observations li").nth(1).get_by_role("button", name="Delete…").click()
    expect(page.locator(".changes")).to_contain_text("Used as the job queue broker")
    assert len(observations_of(demo, "Redis")) == 2
    page.get_by_role("button", name="Delete the observation").click()
    expect(page.locator(".notice")).to_have_text("Observation deleted.")
    assert len(observations_of(demo, "Redis")) == 1

    unfold(page, "Change type")
    page.get_by_label("New type").fill("cache")
    page.get_by_role("button", name="Change type").click()
    expect(page.locator(".meta .type")).to_have_text("cache")
    assert rows(demo, "SELECT entity_type FROM entities WHERE name = 'Redis'") == [("cache",)]

    # a rename onto a taken name is refused with the merge it meant, one click away
    page.goto(f"{ui.base}/entity?name=nodejs")
    unfold(page, "Rename")
    page.get_by_label("New name").fill("Node.js")
    page.get_by_role("button", name="Rename").click()
    expect(page.locator(".error")).to_contain_text("exists already: merge 'nodejs' into it")
    assert "nodejs" in entity_names(demo)
    page.get_by_role("button", name="Merge nodejs into Node.js…").click()
    page.get_by_role("button", name="Merge into Node.js").click()
    expect(page.get_by_role("heading", level=1)).to_have_text("Node.js")
    assert "nodejs" not in entity_names(demo)

    # likely duplicates: a click, a confirmation, merged
    page.goto(f"{ui.base}/duplicates")
    groups = page.locator(".group")
    expect(groups).to_have_count(2)
    page.get_by_role("button", name="Merge into Deploy checklist…").click()
    page.get_by_role("button", name="Merge into Deploy checklist").click()
    expect(page.locator(".notice")).to_have_text("Merged 'deploy checklists' into this entity.")
    assert "deploy checklists" not in entity_names(demo)
    page.goto(f"{ui.base}/duplicates")
    expect(page.locator(".group")).to_have_count(1)

    # delete an entity: confirmed, then gone with its relations
    page.goto(f"{ui.base}/entity?name=Sentry")
    page.get_by_role("button", name="Delete…").first.click()
    expect(page.locator(".changes")).to_contain_text("and 2 relations to or from it")
    page.get_by_role("button", name="Delete Sentry").click()
    expect(page.locator(".notice")).to_have_text("Deleted 'Sentry'.")
    assert "Sentry" not in entity_names(demo)
    assert not any("Sentry" in (f, t) for f, t, _ in relations_of(demo))


def test_text_a_browser_would_rewrite_reaches_the_store_as_stored(
    ui: UiServer, page: Page, demo: Path
) -> None:
    """A browser turns every line break of a form field into CR LF, so stored text holding
    CR LF or a lone CR (written on Windows, imported) must not travel as form text; and an
    observation as long as the store allows, in a script of three bytes a character, can
    still be edited."""
    store = Store(demo)
    store.create_entities(
        [
            Entity(
                name="Windows\r\nnote",
                entityType="note",
                observations=["line one\r\nline two", "lone\rreturn", "\nstarts with a newline"],
            ),
            Entity(name="長い観察", entityType="note", observations=["観" * 100_000, "short"]),
        ]
    )
    store.close()
    page.goto(f"{ui.base}/entity?name=Windows%0D%0Anote")
    for kept in (["lone\rreturn", "\nstarts with a newline"], ["\nstarts with a newline"]):
        page.locator(".observations li").first.get_by_role("button", name="Delete…").click()
        page.get_by_role("button", name="Delete the observation").click()
        expect(page.locator(".notice")).to_have_text("Observation deleted.")
        assert [c for _, c in observations_of(demo, "Windows\r\nnote")] == kept
    page.locator("details.edit summary").first.click()
    expect(page.locator("details.edit textarea").first).to_have_value("\nstarts with a newline")
    page.locator("details.edit textarea").first.fill("\nstill starts with a newline")
    page.get_by_role("button", name="Save").first.click()
    expect(page.locator(".notice")).to_have_text("Observation edited.")
    assert observations_of(demo, "Windows\r\nnote")[0][1] == "\nstill starts with a newline"
    unfold(page, "Change type")
    page.get_by_label("New type").fill("memo")
    page.get_by_role("button", name="Change type").click()
    expect(page.locator(".notice")).to_have_text("Type changed.")
    assert rows(demo, "SELECT entity_type FROM entities WHERE name = ?", ("Windows\r\nnote",)) == [
        ("memo",)
    ]

    page.goto(f"{ui.base}/entity?name=%E9%95%B7%E3%81%84%E8%A6%B3%E5%AF%9F")
    page.locator("details.edit summary").first.click()
    page.locator("details.edit textarea").first.fill("察" * 100_000)
    page.get_by_role("button", name="Save").first.click()
    expect(page.locator(".notice")).to_have_text("Observation edited.")
    assert [c for _, c in observations_of(demo, "長い観察")] == ["察" * 100_000, "short"]


def test_a_token_protected_page_works_from_its_printed_url(browser: Browser, demo: Path) -> None:
    with UiServer(demo, env={"MEMFTS_TOKEN": "tok-123-long-enough"}) as ui:
        context = browser.new_context()
        page = context.new_page()
        try:
            response = page.goto(f"{ui.base}/")
            assert response is not None and response.status == 401
            page.goto(ui.url)
            expect(page.get_by_role("heading", name="Memory")).to_be_visible()
            assert "token" not in page.url
            page.goto(f"{ui.base}/entity?name=Redis")
            unfold(page, "Change type")
            page.get_by_label("New type").fill("cache")
            page.get_by_role("button", name="Change type").click()
            expect(page.locator(".meta .type")).to_have_text("cache")
        finally:
            context.close()
