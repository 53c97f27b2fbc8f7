"""Debian's Chromium, headless, driven by Playwright (PyPI): the browser the HTML preview is
tested in. scripts/test installs both; without them the test is skipped locally and fails
under CI=true."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from tests.support.servers import unavailable

# As the machine's probe starts it: without the background-networking flags Chromium
# tries Google's hosts at every start, and this machine's network refuses them.
FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-default-apps",
]


def chromium_path() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@contextmanager
def chromium() -> Iterator[Any]:
    """A Playwright Browser on the system's Chromium."""
    path = chromium_path()
    if path is None:
        unavailable("no chromium on this machine (scripts/test installs Debian's package)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("playwright is not installed (pip install '.[test]')")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path, args=FLAGS, headless=True)
        try:
            yield browser
        finally:
            browser.close()
