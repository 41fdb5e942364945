"""The README's dashboard screenshots: docs/dashboard.png and docs/training.png (1280 x 800).

Run with the venv's python (``.venv/bin/python docs/screenshots.py``): it serves a temporary
instance with the scoring trainer, runs three trainings of two models, publishes two, and
photographs the dashboard and one training's page in Debian's Chromium, driven by Playwright
as the browser tests drive it (tests/browser.py).
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent / "tests"))

import browser  # noqa: E402
from conftest import ROWS, SCORING, Server, start_server, stop_server  # noqa: E402
from playwright.sync_api import expect, sync_playwright  # noqa: E402

SIZE = {"width": 1280, "height": 800}
TIMEOUT = 120  # seconds the trainings get to finish


def finished(server: Server, ids: list[str]) -> None:
    deadline = time.monotonic() + TIMEOUT
    while any(server.get(f"/trainings/{i}")["status"] != "succeeded" for i in ids):
        if time.monotonic() > deadline:
            raise RuntimeError(f"trainings {ids} did not all succeed within {TIMEOUT} s")
        time.sleep(0.5)


def main() -> None:
    binary = browser.chromium_binary()
    if binary is None:
        sys.exit(browser.SKIP_NO_CHROMIUM)
    with tempfile.TemporaryDirectory() as folder:
        server = start_server(
            Path(folder) / "instance", TRAINER=SCORING, DEMO_ROWS=str(ROWS), PUBLISH_POLICY="manual"
        )
        try:
            made = [
                server.post("/trainings", {"model_name": name, "meta": meta})
                for name, meta in (
                    ("retail", {"seed": 1}),
                    ("retail", {"seed": 2, "model": "random_forest"}),
                    ("sme", {"seed": 3}),
                )
            ]
            finished(server, [t["id"] for t in made])
            server.post(f"/trainings/{made[0]['id']}/publish")
            server.post(f"/trainings/{made[2]['id']}/publish")
            server.post("/trainings", {"model_name": "retail", "scheduled_at": "2999-01-01"})
            server.post(
                "/schedules",
                {"name": "nightly", "cron": "30 2 * * *", "timezone": "Europe/Madrid"},
            )
            shoot(server, made[1]["id"])
        finally:
            stop_server(server)


def shoot(server: Server, training_id: str) -> None:
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=browser.chromium_binary(), headless=True, args=browser.FLAGS
        )
        page = chromium.new_context(viewport=SIZE).new_page()
        page.goto(server.url + "/")
        page.get_by_label("API token").fill(server.token)
        page.get_by_role("button", name="Use this token").click()
        expect(
            page.get_by_role("img", name="AUC, Gini and KS of retail by version")
        ).to_be_visible()
        page.screenshot(path=str(DOCS / "dashboard.png"))
        page.goto(f"{server.url}/#/trainings/{training_id}")
        expect(page.get_by_role("img", name="Cumulative gains")).to_be_visible()
        page.screenshot(path=str(DOCS / "training.png"))
        chromium.close()
    print(f"wrote {DOCS / 'dashboard.png'} and {DOCS / 'training.png'}")


if __name__ == "__main__":
    main()
