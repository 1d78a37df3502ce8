"""Fixtures of the browser tests (tests/ui/helpers_browser.py has their steps)."""

from __future__ import annotations

import pytest
from helpers_app import served
from helpers_browser import CHROMIUM


@pytest.fixture
def served_app(workspace):
    with served(workspace) as (blocks, _, url):
        yield blocks, url


@pytest.fixture
def page():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        pg = context.new_page()
        pg.set_default_timeout(60_000)
        yield pg
        context.close()
        browser.close()
