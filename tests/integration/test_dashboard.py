"""The status page in a real headless Chromium (Debian's `chromium`, driven by Playwright).

Skips when Chromium or Playwright is missing, except in CI (CI=true), where `make test`
installs Chromium and a missing browser is a failure.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from lbtest import BalancerProcess

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 15_000


def missing(reason: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI=true: the dashboard test must run)")
    pytest.skip(reason)


@pytest.fixture
def browser_page(tmp_path: Path):
    """Yields (page, problems): a fresh Chromium page and the console errors it logs."""
    if not (os.path.exists(CHROMIUM) or shutil.which("chromium")):
        missing("chromium is not installed (apt-get install chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        missing("playwright is not installed (pip install -e '.[dev]')")
    problems: list[str] = []
    with sync_playwright() as playwright:
        context = playwright.chromium.launch_persistent_context(
            str(tmp_path / "profile"),  # a fresh --user-data-dir
            executable_path=CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium"),
            headless=True,
            args=FLAGS,
        )
        try:
            page = context.new_page()
            page.on(
                "console",
                lambda message: problems.append(message.text) if message.type == "error" else None,
            )
            page.on("pageerror", lambda error: problems.append(str(error)))
            yield page, problems
        finally:
            context.close()


def rows(page) -> list[str]:
    return page.eval_on_selector_all("#replicas tbody tr", "rows => rows.map(r => r.dataset.name)")


def test_dashboard_shows_the_replicas_and_follows_an_add(
    balancer: BalancerProcess, browser_page
) -> None:
    page, problems = browser_page
    page.goto(f"http://127.0.0.1:{balancer.port}/dashboard")
    page.wait_for_function(
        "document.querySelectorAll('#replicas tbody tr').length === 3", timeout=WAIT_MS
    )
    assert rows(page) == ["server_1", "server_2", "server_3"]
    assert page.locator("#ring path").count() > 0  # the Maglev table, drawn as a circle
    assert "joined server_1" in page.locator("#events").inner_text()

    assert balancer.call("POST", "/add", {"n": 1, "hostnames": ["S4"]}).status == 200
    page.wait_for_selector('#replicas tbody tr[data-name="S4"]', timeout=WAIT_MS)
    assert rows(page) == ["server_1", "server_2", "server_3", "S4"]
    page.wait_for_function(
        "document.getElementById('events').innerText.includes('joined S4')", timeout=WAIT_MS
    )
    assert page.locator('#replicas tr[data-name="S4"] td').nth(1).inner_text() == "serving"
    assert problems == []
