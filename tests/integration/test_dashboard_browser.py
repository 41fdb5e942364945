"""The dashboard at ``/``, driven in headless Chromium against a real server.

A person enters a token, launches trainings of the built-in scoring trainer from the form,
watches them succeed in the table, opens one (its log, its report's four charts, its model
file), publishes it and sees its model's chart. A read token sees no write controls; a revoked
token is asked for again; a stopped server shows a banner. Every request the page makes goes
to the server itself, and it asks for nothing its Content-Security-Policy refuses.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterator
from pathlib import Path

import browser
import pytest
from conftest import ROWS, SCORING, Server, flask_command, server_env, start_server, stop_server
from playwright.sync_api import Page, expect
from test_report_browser import assert_non_trivial_png, assert_shows_the_four_charts

# Two trainings of ROWS demo loans take a few seconds each; this is the bound for a slow machine.
TRAINING_TIMEOUT_MS = 120_000
MODEL = "retail"
IMPORT_TIMEOUT_MS = 30_000


def token(server: Server, name: str, scope: str = "write") -> str:
    """A new token on ``server``'s database, made with the CLI; its secret."""
    out = subprocess.run(
        flask_command("trainings", "token", "create", name, "--scope", scope),
        env=server_env(server.instance, **server.settings),
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return out.strip().splitlines()[-1]


def revoke(server: Server, name: str) -> None:
    subprocess.run(
        flask_command("trainings", "token", "revoke", name),
        env=server_env(server.instance, **server.settings),
        check=True,
        capture_output=True,
    )


def sign_in(page: Page, secret: str) -> None:
    expect(page.get_by_label("API token")).to_be_visible()
    page.get_by_label("API token").fill(secret)
    page.get_by_role("button", name="Use this token").click()
    expect(page.get_by_role("table", name="Trainings")).to_be_visible()


def row(page: Page, training_id: str):
    return page.locator(f'#trainings tr[data-id="{training_id}"]')


@pytest.fixture(scope="module")
def scoring_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module (SQLite: the page is the same whatever the database), running
    the scoring trainer on a small book, publishing only by hand."""
    server = start_server(
        tmp_path_factory.mktemp("dashboard") / "instance",
        TRAINER=SCORING,
        DEMO_ROWS=str(ROWS),
        PUBLISH_POLICY="manual",
    )
    yield server
    stop_server(server)


def test_launch_watch_open_report_download_and_publish(
    chromium_page: browser.BrowserPage, scoring_server: Server, tmp_path: Path
):
    page = chromium_page.page
    response = chromium_page.open(scoring_server.url + "/")

    assert response is not None
    assert response.status == 200
    policy = response.headers["content-security-policy"]
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    sign_in(page, scoring_server.token)
    expect(page.locator("#who")).to_have_text("tester (write)")

    # Two trainings of one model from the form: two versions for its chart.
    page.get_by_label("Model name").fill(MODEL)
    page.get_by_label("Meta (JSON)").fill('{"seed": 1}')
    page.get_by_role("button", name="Launch").click()
    # The first meta to check imports the trainer's module (scikit-learn): seconds on a busy box.
    expect(page.locator("#launch-message")).to_contain_text("queued", timeout=IMPORT_TIMEOUT_MS)
    first = page.locator("#launch-message").inner_text().split("#")[1].split()[0]
    page.get_by_label("Meta (JSON)").fill('{"seed": 2}')
    page.get_by_role("button", name="Launch").click()
    expect(page.locator("#launch-message")).not_to_contain_text(f"#{first} ")
    second = page.locator("#launch-message").inner_text().split("#")[1].split()[0]
    # Meta that is not JSON is refused on the page, before any request.
    page.get_by_label("Meta (JSON)").fill("{seed: 3}")
    page.get_by_role("button", name="Launch").click()
    expect(page.locator("#launch-message")).to_contain_text("Meta is not JSON")

    for training_id in (first, second):
        expect(row(page, training_id).locator(".badge")).to_have_text(
            "succeeded", timeout=TRAINING_TIMEOUT_MS
        )
    expect(row(page, second)).to_contain_text("AUC 0.")
    # The filters: by status, then by a model that has none.
    page.get_by_label("Filter by status").select_option("succeeded")
    expect(page.locator("#page-info")).to_have_text("1-2 of 2")
    page.get_by_label("Filter by model").fill("nothing")
    page.get_by_label("Filter by model").press("Enter")  # commits the value: a change event
    expect(page.locator("#trainings-empty")).to_be_visible()
    page.get_by_label("Filter by model").fill(MODEL)
    page.get_by_label("Filter by model").press("Enter")
    expect(row(page, first)).to_be_visible()
    chromium_page.screenshot(tmp_path, "trainings.png")

    # Its page: the log, the report's four charts, the model file.
    row(page, first).get_by_role("link").click()
    expect(page.locator("#training-title")).to_contain_text(f"Training #{first}")
    expect(page.get_by_label("Training log")).to_contain_text("ROC AUC")
    expect(page.get_by_role("img", name="Cumulative gains")).to_be_visible()
    assert_shows_the_four_charts(page)
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)  # it has finished
    training = scoring_server.get(f"/trainings/{first}")
    with page.expect_download() as download:
        page.get_by_role("button", name="Download model").click()
    saved = Path(download.value.path())
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == training["binarySha256"]
    assert download.value.suggested_filename == Path(training["binaryPath"]).name
    assert_non_trivial_png(chromium_page.screenshot(tmp_path, "training.png"))

    page.get_by_role("button", name="Publish").click()
    expect(page.locator("#training-message")).to_contain_text("published")
    expect(page.get_by_role("button", name="Publish")).to_have_count(0)
    assert scoring_server.get(f"/models/{MODEL}")["id"] == first

    # The overview: the champion, and its model's chart with both versions.
    page.get_by_role("link", name="all trainings").click()
    model = page.locator(f'#models [data-model="{MODEL}"]')
    expect(model).to_contain_text(f"Champion: version {training['version']} (#{first})")
    chart = page.get_by_role("img", name=f"AUC, Gini and KS of {MODEL} by version")
    expect(chart).to_be_visible()
    lines = chart.evaluate(
        """svg => [...svg.querySelectorAll("polyline.series")].map(line => ({
            series: line.dataset.series, points: line.points.numberOfItems,
            width: line.getBBox().width }))"""
    )
    assert [line["series"] for line in lines] == ["roc_auc", "gini", "ks"], lines
    assert all(line["points"] == 2 and line["width"] > 0 for line in lines), lines
    expect(row(page, first)).to_contain_text("champion")
    assert_non_trivial_png(chromium_page.screenshot(tmp_path, "dashboard.png"))

    assert chromium_page.hosts() == {f"127.0.0.1:{scoring_server.port}"}, chromium_page.requests
    assert chromium_page.console_errors == []


def test_a_read_token_sees_no_write_controls(
    chromium_page: browser.BrowserPage, scoring_server: Server
):
    waiting = scoring_server.post("/trainings", {"scheduled_at": "2999-01-01T00:00:00Z"})
    reader = token(scoring_server, "dashboard-reader", "read")
    page = chromium_page.page
    chromium_page.open(f"{scoring_server.url}/#/trainings/{waiting['id']}")

    # A write token first: the same page offers cancelling and launching...
    sign_in_to_training(page, scoring_server.token)
    expect(page.get_by_role("button", name="Cancel")).to_be_visible()
    page.get_by_role("button", name="Forget token").click()
    # ...a read token sees the training, and neither.
    sign_in_to_training(page, reader)
    expect(page.locator("#who")).to_have_text("dashboard-reader (read)")
    expect(page.locator("#training-facts")).to_contain_text(waiting["uuid"])
    expect(page.get_by_role("button", name="Cancel")).to_have_count(0)
    expect(page.get_by_role("button", name="Publish")).to_have_count(0)
    page.get_by_role("link", name="all trainings").click()
    expect(row(page, waiting["id"]).locator(".badge")).to_have_text("scheduled")
    expect(page.get_by_role("button", name="Launch")).to_be_hidden()
    expect(page.get_by_label("Model name")).to_be_hidden()
    assert scoring_server.get(f"/trainings/{waiting['id']}")["status"] == "scheduled"
    assert chromium_page.hosts() == {f"127.0.0.1:{scoring_server.port}"}, chromium_page.requests


def sign_in_to_training(page: Page, secret: str) -> None:
    page.get_by_label("API token").fill(secret)
    page.get_by_role("button", name="Use this token").click()
    expect(page.locator("#training-title")).to_contain_text("Training #")


def test_a_revoked_token_is_asked_for_again_and_a_stopped_server_shows_a_banner(
    chromium_page: browser.BrowserPage, tmp_path: Path
):
    server = start_server(tmp_path / "instance")
    try:
        page = chromium_page.page
        chromium_page.open(server.url + "/")
        sign_in(page, server.token)

        revoke(server, "tester")
        expect(page.locator("#login-message")).to_contain_text("refused")
        expect(page.get_by_role("table", name="Trainings")).to_be_hidden()
        assert page.evaluate("sessionStorage.length") == 0

        # A wrong token is refused at once; a good one opens the dashboard again.
        page.get_by_label("API token").fill("mt_not-a-token")
        page.get_by_role("button", name="Use this token").click()
        expect(page.locator("#login-message")).to_contain_text("refused")
        sign_in(page, token(server, "second"))
        expect(page.locator("#banner")).to_be_hidden()
    finally:
        stop_server(server)

    banner = page.get_by_role("alert")
    expect(banner).to_contain_text("not reachable")
    expect(page.get_by_role("table", name="Trainings")).to_be_visible()  # not a blank page
    assert chromium_page.hosts() == {f"127.0.0.1:{server.port}"}, chromium_page.requests
