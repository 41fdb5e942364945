"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright.

Playwright is pointed at the machine's own binary (``executable_path``); nothing here runs
``playwright install``, so no browser build is ever downloaded. Where no Chromium is found the
tests that use :func:`chromium_page` skip, saying so. ``MAIA_TEST_CHROMIUM`` may name another
binary (a path, or a name looked up on PATH).

A test module that uses the fixtures names them at its top (``chromium_page =
browser.chromium_page``, and ``chromium`` beside it), unless tests/conftest.py loads this
module for every test (``pytest_plugins = ("browser",)``).
"""

from __future__ import annotations

import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Request,
    Response,
    Route,
    sync_playwright,
)

CHROMIUM_VARIABLE = "MAIA_TEST_CHROMIUM"
# Set by .ci/run, which installs Chromium: there the browser tests fail rather than skip.
REQUIRED_VARIABLE = "MAIA_TEST_REQUIRE_CHROMIUM"
# Debian's package installs /usr/bin/chromium; .ci/run installs the package.
DEFAULT_CHROMIUM = "chromium"
SKIP_NO_CHROMIUM = "no Chromium: install Debian's chromium package (see .ci/run)"
# Chromium's own traffic (component updates, sync, safe browsing...) stays off: the machines
# that run the tests reach no outside host, and a page's requests are the only ones to see.
FLAGS = (
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-quic",
    "--no-first-run",
)
# What a page may take to load, or a locator to appear, in milliseconds.
TIMEOUT_MS = 15_000
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def chromium_binary() -> str | None:
    """The Chromium to drive: ``MAIA_TEST_CHROMIUM``'s, else Debian's; None if not installed."""
    return shutil.which(os.environ.get(CHROMIUM_VARIABLE) or DEFAULT_CHROMIUM)


def _origin(url: str) -> str:
    """``scheme://host:port`` of ``url``."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


@dataclass
class BrowserPage:
    """A page in a fresh browser context, recording every request it makes.

    :meth:`open` confines the page to one origin: requests to it carry the bearer token,
    requests anywhere else are recorded and refused (so a token never leaves for another
    host, and nothing leaves the machine).
    """

    page: Page
    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    _origin: str | None = None
    _headers: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.page.set_default_timeout(TIMEOUT_MS)
        self.page.on("request", self._record)
        self.page.on("console", self._console)
        self.page.route("**/*", self._route)

    def _record(self, request: Request) -> None:
        self.requests.append(request.url)

    def _console(self, message: ConsoleMessage) -> None:
        # A refused resource, a blocked style or script (CSP), a script error: all land here.
        if message.type == "error":
            self.console_errors.append(message.text)

    def _route(self, route: Route) -> None:
        if self._origin is None or _origin(route.request.url) != self._origin:
            route.abort("blockedbyclient")
            return
        route.continue_(headers={**route.request.headers, **self._headers})

    def open(self, url: str, token: str | None = None) -> Response | None:
        """Navigate to ``url`` (a browser's own GET, its own Accept header) with ``token`` as
        ``Authorization: Bearer`` on every request to that origin; the main response."""
        self._origin = _origin(url)
        self._headers = {} if token is None else {"Authorization": f"Bearer {token}"}
        return self.page.goto(url, wait_until="load")

    def hosts(self) -> set[str]:
        """``host:port`` of every request the page made (refused ones included)."""
        return {urlsplit(url).netloc for url in self.requests if urlsplit(url).netloc}

    def screenshot(self, folder: Path, name: str) -> Path:
        """The whole page as the PNG ``folder/name``; its path."""
        path = folder / name
        self.page.screenshot(path=str(path), full_page=True)
        return path


def png_size(data: bytes) -> tuple[int, int]:
    """Width and height of a PNG image (from its header); ValueError if ``data`` is not one."""
    if not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", data[16:24])
    return width, height


@pytest.fixture(scope="session")
def chromium() -> Iterator[Browser]:
    """Headless Chromium, started once per test process; skips where none is installed."""
    binary = chromium_binary()
    if binary is None:
        named = os.environ.get(CHROMIUM_VARIABLE)
        reason = f"{CHROMIUM_VARIABLE}={named}: not found" if named else SKIP_NO_CHROMIUM
        if os.environ.get(REQUIRED_VARIABLE):  # CI installs Chromium: its absence is a failure
            pytest.fail(f"{reason} ({REQUIRED_VARIABLE} is set)")
        pytest.skip(reason)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=binary, headless=True, args=FLAGS)
        yield browser
        browser.close()


@pytest.fixture
def chromium_page(chromium: Browser) -> Iterator[BrowserPage]:
    """A page in a context of its own (no cookies or cache shared with another test)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 900})
    try:
        yield BrowserPage(context.new_page())
    finally:
        context.close()
