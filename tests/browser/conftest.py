"""Fixtures of the browser tests: Debian's chromium driven by Playwright against the session's served
graph (``served`` in tests/conftest.py). Playwright's own browser download needs a network CI does not
have, so the system's chromium is launched by path (``make test-deps`` installs it). Every page may
reach this machine only: a request elsewhere (a CDN, say) is refused and fails the test. Screenshots
go to tests/browser/artifacts/ (git-ignored), at 1280x800 and at 390x844 (a phone)."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path
from urllib.parse import urlparse

import pytest

from tests.browser.pages import DESKTOP, TIMEOUT_MS

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def chromium():
    """One browser per module, closed after it: Playwright's sync API keeps an asyncio loop running in
    this thread while it is started, which would make every later synchronous Ray handle call
    (``.result()``) and asyncio test of the session refuse to run."""
    from playwright.sync_api import sync_playwright

    exe = shutil.which("chromium") or CHROMIUM
    assert Path(exe).exists(), (
        "the browser tests need Debian's chromium: apt-get install chromium (make test-deps)"
    )
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=exe, args=ARGS)
        yield browser
        browser.close()
    assert not _loop_running(), "Playwright left an asyncio loop running in the test thread"


def _loop_running() -> bool:
    try:
        asyncio.get_running_loop()
        return True
    except RuntimeError:
        return False


@pytest.fixture
def page(chromium):
    """A fresh page (own sessionStorage) at 1280x800 that may reach loopback only and must not throw."""
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = chromium.new_context(viewport=DESKTOP)
    refused, thrown = [], []

    def local_only(route):
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host in ("127.0.0.1", "localhost"):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", local_only)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    page.on("pageerror", lambda err: thrown.append(str(err)))
    yield page
    context.close()
    assert not refused, f"the page tried to reach beyond this machine: {refused}"
    assert not thrown, f"uncaught errors in the page: {thrown}"
