"""A training's validation report, opened in headless Chromium: its four charts are drawn.

The first test is issue 13's: a real server runs the built-in scoring trainer, and the browser
opens ``GET /trainings/{id}/report`` as a person would (a navigation, the browser's own Accept
header, the token on every request). The others render a pack straight from
``trainers.report_page`` and check the browser plumbing of ``tests/browser.py`` itself.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import browser
import numpy as np
import pytest
from conftest import ROWS, SCORING, Server, start_server, stop_server
from playwright.sync_api import Page
from test_executor import wait_finished

from maia_trainings.trainers import report_page, validation

# The aria-labels of the report's charts, in the page's order.
CHARTS = (
    "ROC curve",
    "KS: cumulative shares by score",
    "Calibration by decile",
    "Cumulative gains",
)
# A training of ROWS demo loans takes a few seconds; this is the bound for a slow machine.
TRAINING_TIMEOUT = 120
# A blank page of the same size compresses to a few KB; four charts and their tables do not.
MIN_SCREENSHOT_BYTES = 20_000


def assert_shows_the_four_charts(page: Page) -> None:
    """Each chart is one visible SVG image named by its aria-label, of a non-zero size, with
    a solid (data, not reference) line of at least two points drawn inside it."""
    for label in CHARTS:
        chart = page.get_by_role("img", name=label, exact=True)
        assert chart.count() == 1, f"{label!r}: {chart.count()} images so named"
        assert chart.evaluate("e => e.tagName.toLowerCase()") == "svg", label
        assert chart.is_visible(), label
        box = chart.bounding_box()
        assert box is not None, label
        assert box["width"] > 0, label
        assert box["height"] > 0, label
        lines = chart.evaluate(
            """svg => [...svg.querySelectorAll("polyline")].map(line => ({
                points: line.points.numberOfItems,
                dashed: line.hasAttribute("stroke-dasharray"),
                width: line.getBBox().width,
                height: line.getBBox().height,
            }))"""
        )
        drawn = [
            line
            for line in lines
            if not line["dashed"] and line["points"] >= 2 and line["width"] > 0 and line["height"]
        ]
        assert drawn, f"{label!r} draws no line of data: {lines}"


def assert_non_trivial_png(path: Path) -> None:
    data = path.read_bytes()
    width, height = browser.png_size(data)  # a PNG, or ValueError
    assert width >= 600, (width, height)
    assert height >= 400, (width, height)
    assert len(data) >= MIN_SCREENSHOT_BYTES, len(data)


# The report of a real training -------------------------------------------------------------


@pytest.fixture
def scoring_server(tmp_path: Path) -> Iterator[Server]:
    """A server (SQLite: the browser sees the same page whatever the database) running the
    built-in scoring trainer on a small demo book."""
    server = start_server(tmp_path / "instance", TRAINER=SCORING, DEMO_ROWS=str(ROWS))
    yield server
    stop_server(server)


def test_a_trainings_report_opens_in_chromium_with_its_four_charts(
    chromium_page: browser.BrowserPage, scoring_server: Server, tmp_path: Path
):
    # The browser first: where there is none, the test skips before starting a server.
    created = scoring_server.post("/trainings", {"meta": {}})
    done = wait_finished(scoring_server, created["id"], TRAINING_TIMEOUT)
    assert done["status"] == "succeeded", done["error"]

    path = f"/trainings/{done['id']}/report"
    response = chromium_page.open(scoring_server.url + path, token=scoring_server.token)

    assert response is not None
    assert response.status == 200, f"GET {path} answered {response.status}: {response.text()}"
    assert response.headers["content-type"].startswith("text/html"), response.headers
    page = chromium_page.page
    assert_shows_the_four_charts(page)
    title = page.title()
    assert done["uuid"] in title or re.search(rf"\b{done['id']}\b", title), title
    # Self-contained: everything the page asked for came from the service itself.
    assert chromium_page.hosts() == {f"127.0.0.1:{scoring_server.port}"}, chromium_page.requests
    # Nothing refused or broken, its inline stylesheet included (a CSP would refuse it).
    assert chromium_page.console_errors == []
    assert_non_trivial_png(chromium_page.screenshot(tmp_path, "report.png"))


# The page itself, and the browser plumbing -------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: _PageServer

    def do_GET(self) -> None:
        self.server.seen.append((self.path, self.headers.get("Authorization")))
        body = self.server.body.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the test's output is not the place for an access log


class _PageServer(ThreadingHTTPServer):
    """Answers every GET with one HTML page, remembering each request's path and token."""

    def __init__(self, body: str) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.body = body
        self.seen: list[tuple[str, str | None]] = []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def serve_page() -> Iterator[Callable[[str], _PageServer]]:
    """``serve_page(html)``: a local HTTP server answering with ``html``, stopped at the end."""
    started: list[_PageServer] = []

    def serve(body: str) -> _PageServer:
        server = _PageServer(body)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        started.append(server)
        return server

    yield serve
    for server in started:
        server.shutdown()
        server.server_close()


def synthetic_pack(rows: int = 2000, seed: int = 3) -> dict:
    """The validation pack of a model that ranks synthetic loans well, but not perfectly."""
    rng = np.random.default_rng(seed)
    risk = rng.normal(size=rows)
    p_default = 1 / (1 + np.exp(2.0 - 1.5 * risk))
    outcome = (rng.random(rows) < p_default).astype(int)
    return validation.validation_pack(outcome, p_default)


def test_a_rendered_pack_shows_its_four_charts_from_its_own_host(
    chromium_page: browser.BrowserPage, serve_page, tmp_path: Path
):
    title = "Validation report: synthetic loans"
    html = report_page.render(synthetic_pack(), title=title, facts={"training": 7, "rows": 2000})
    server = serve_page(html)

    response = chromium_page.open(server.url + "/report", token="mt_synthetic")

    assert response is not None
    assert response.status == 200
    assert_shows_the_four_charts(chromium_page.page)
    assert chromium_page.page.title() == title
    assert chromium_page.hosts() == {server.url.removeprefix("http://")}
    assert chromium_page.console_errors == []
    assert server.seen
    assert all(token == "Bearer mt_synthetic" for _, token in server.seen), server.seen
    assert_non_trivial_png(chromium_page.screenshot(tmp_path, "report.png"))


def test_requests_to_other_hosts_are_recorded_refused_and_never_carry_the_token(
    chromium_page: browser.BrowserPage, serve_page
):
    other = serve_page("<!DOCTYPE html><title>elsewhere</title>")
    page = serve_page(
        "<!DOCTYPE html><title>leaky</title>"
        f'<img src="{other.url}/pixel.png" alt="">'
        '<img src="http://example.invalid/pixel.png" alt="">'
    )

    chromium_page.open(page.url + "/", token="mt_secret")

    assert chromium_page.hosts() == {
        page.url.removeprefix("http://"),
        other.url.removeprefix("http://"),
        "example.invalid",
    }
    assert other.seen == []  # refused in the browser: the token never left for it
    assert page.seen == [("/", "Bearer mt_secret")]
