"""The API reference page at /docs, opened in headless Chromium from a real server: Swagger UI
renders every operation of /openapi.json from files the service serves itself."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import browser
import pytest
from conftest import Server, start_server, stop_server

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    started = start_server(tmp_path / "instance")
    yield started
    stop_server(started)


def _document(server: Server) -> dict:
    with urllib.request.urlopen(server.url + "/openapi.json", timeout=30) as answer:
        return json.loads(answer.read())


def test_the_reference_page_renders_every_operation_from_the_service_alone(
    chromium_page: browser.BrowserPage, server: Server, tmp_path: Path
) -> None:
    document = _document(server)
    operations = {
        f"{method.upper()} {path}"
        for path, item in document["paths"].items()
        for method in item
        if method in METHODS
    }
    # No token: the page, its files and the document are public.
    response = chromium_page.open(server.url + "/docs")
    assert response is not None
    assert response.status == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in response.headers["content-security-policy"]

    page = chromium_page.page
    page.locator(".opblock").first.wait_for()
    shown = set(
        page.locator(".opblock .opblock-summary").evaluate_all(
            """blocks => blocks.map(block =>
                block.querySelector(".opblock-summary-method").textContent.trim() + " " +
                block.querySelector("[data-path]").getAttribute("data-path"))"""
        )
    )
    assert shown == operations
    assert page.get_by_role("button", name="Authorize").is_visible()
    # Everything came from the service itself, and nothing was refused (its CSP included).
    assert chromium_page.hosts() == {f"127.0.0.1:{server.port}"}, chromium_page.requests
    assert any(url.endswith("/openapi.json") for url in chromium_page.requests)
    assert chromium_page.console_errors == []
    chromium_page.screenshot(tmp_path, "docs.png")
