"""/api/docs/ renders Swagger UI in a real browser under the site's CSP, offline."""

from __future__ import annotations

import pytest

from tests.browser import launch_chromium

pytestmark = pytest.mark.browser


def test_api_docs_render_every_operation(live_server, transactional_db) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch_chromium(p)
        page = browser.new_page()
        problems: list[str] = []
        page.on("console", lambda msg: problems.append(msg.text) if msg.type == "error" else None)
        outside: list[str] = []
        page.on("request", lambda r: outside.append(r.url) if not r.url.startswith(live_server.url) else None)
        try:
            page.goto(live_server.url + "/api/docs/", wait_until="domcontentloaded", timeout=60_000)
            page.wait_for_selector(".opblock", timeout=60_000)
            paths = page.locator(".opblock-summary-path").all_inner_texts()
        finally:
            browser.close()
    assert any(path.startswith("/api/v1/conversations") for path in paths), paths
    assert "/api/v1/wallet" in paths
    assert problems == []  # no CSP refusal, no failed load
    assert [u for u in outside if not u.startswith("data:")] == []  # nothing from a CDN
