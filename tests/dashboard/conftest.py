"""The browser the dashboard's browser tests share: Debian's headless chromium, driven by
playwright (skipped without it, failing under ``CI=true``), and a fresh tab per test."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

from tests.dashboard.test_browser import CHROMIUM, INSTALL_HINT, LAUNCH_ARGS, Tab, _missing


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """One headless chromium per test module."""
    missing = _missing()
    if missing is not None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{missing}: {INSTALL_HINT}")
        pytest.skip(f"{missing}: {INSTALL_HINT}")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def tab(browser: Any) -> Iterator[Tab]:
    """A fresh context (no cookies) and its page, closed after the test."""
    opened = Tab(browser)
    try:
        yield opened
    finally:
        opened.context.close()
