"""Take the README's screenshots of ``memfts ui``: a real server on the demo memory, Chromium.

    .venv/bin/python docs/screenshots.py

Uses Debian's chromium (``apt-get install chromium``) through Playwright, as the browser
tests do, and the team memory of ``tests/ui_demo.py``; writes ``docs/ui-*.png``.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path
from urllib.parse import urlencode

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

from playwright.sync_api import Page, sync_playwright  # noqa: E402

import ui_demo  # noqa: E402
from memfts.store import Store  # noqa: E402
from test_ui_browser import CHROMIUM, CHROMIUM_ARGS  # noqa: E402
from ui_server import UiServer  # noqa: E402


def shoot(page: Page, url: str, name: str, *, full: bool = False) -> None:
    page.goto(url)
    page.wait_for_load_state("networkidle")
    path = DOCS / f"ui-{name}.png"
    page.screenshot(path=str(path), full_page=full)
    print(f"wrote {path.relative_to(DOCS.parent)}")


def main() -> None:
    with tempfile.TemporaryDirectory() as scratch:
        db = Path(scratch) / "memory.db"
        store = Store(db)
        ui_demo.fill(store)
        store.close()
        with UiServer(db) as ui, sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1200, "height": 760})
            base = ui.base
            shoot(page, f"{base}/?{urlencode({'q': 'idempotency key'})}", "search")
            shoot(page, f"{base}/entity?{urlencode({'name': 'billing-worker'})}", "entity")
            page.set_viewport_size({"width": 1200, "height": 1180})
            shoot(
                page, f"{base}/graph?{urlencode({'name': 'billing-worker', 'depth': 2})}", "graph"
            )
            page.set_viewport_size({"width": 1200, "height": 640})
            shoot(page, f"{base}/duplicates", "duplicates")
            page.get_by_role("button", name="Merge into PostgreSQL…").click()
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(DOCS / "ui-merge.png"))
            print("wrote docs/ui-merge.png")
            browser.close()


if __name__ == "__main__":
    main()
