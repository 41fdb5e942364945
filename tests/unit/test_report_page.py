"""The validation pack's page: self-contained (no outside request), four charts, escaped text."""

from __future__ import annotations

import re
from html.parser import HTMLParser

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from maia_trainings.trainers import report_page
from maia_trainings.trainers.validation import validation_pack


@pytest.fixture(scope="module")
def pack():
    rng = np.random.default_rng(7)
    x = rng.normal(size=(600, 3))
    y = (rng.random(600) < 1 / (1 + np.exp(-(x[:, 0] - 1)))).astype(int)
    model = LogisticRegression().fit(x, y)
    p = model.predict_proba(x)[:, 1]
    return validation_pack(
        y,
        p,
        champion_scores=rng.random(500),
        model=model,
        feature_names=["income", "age", "debt"],
        X=x,
    )


class Elements(HTMLParser):
    """Every start tag with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))


def parsed(page: str) -> Elements:
    elements = Elements()
    elements.feed(page)
    return elements


def test_the_page_has_its_four_charts_and_every_table(pack):
    page = report_page.render(pack, title="Training 7", facts={"version": "3"})
    tags = parsed(page).tags
    labels = [attrs.get("aria-label") for tag, attrs in tags if tag == "svg"]
    assert labels == [
        "ROC curve",
        "KS: cumulative shares by score",
        "Calibration by decile",
        "Cumulative gains",
    ]
    # Each chart draws the model's line with points, not an empty polyline.
    lines = [attrs["points"] for tag, attrs in tags if tag == "polyline"]
    assert len(lines) == 8
    assert all(len(points.split()) >= 2 for points in lines)
    assert page.count("<table") == 6  # facts, discrimination, gains, calibration, PSI, features
    assert "Hosmer-Lemeshow" in page
    assert "income" in page


def test_the_page_asks_nothing_of_any_other_host(pack):
    page = report_page.render(pack, title="t", facts={})
    for tag, attrs in parsed(page).tags:
        assert tag not in ("script", "img", "link", "iframe", "object")
        for name in ("src", "href"):
            assert attrs.get(name) is None, (tag, attrs)
    # The SVG namespace is an identifier, not a request; no other URL appears.
    assert set(re.findall(r"https?://[^\s\"']+", page)) == {"http://www.w3.org/2000/svg"}


def test_text_from_outside_is_escaped(pack):
    page = report_page.render(pack, title="<script>x</script>", facts={"<b>": "<i>v</i>"})
    assert "<script>" not in page
    assert "&lt;script&gt;x&lt;/script&gt;" in page
    assert "&lt;i&gt;v&lt;/i&gt;" in page


def test_a_pack_without_figures_still_renders(pack):
    page = report_page.render({}, title="empty", facts={})
    assert page.count("<svg") == 4
    assert "No champion to compare with" in page
