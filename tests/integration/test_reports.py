"""Validation reports of trainings run for real (run-pending): GET /trainings/{id}/report as
JSON, XML and a printable page; its figures against scikit-learn's on the published artifact,
its reproducibility record, stability against the champion, and if_better's reasons.

The page in a real browser is in tests/integration/test_report_browser.py; the pack's
functions on small known data in tests/unit/test_validation.py.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import sqlite3

import numpy as np
import pandas as pd
import pytest
from conftest import bearer
from defusedxml import ElementTree
from helpers import create, fetch, is_error_body
from sklearn import metrics as skm
from test_scoring_runs import load_artifact, run_pending, succeeded, trainer_split

from maia_trainings.trainers import portfolio
from maia_trainings.trainers.datasets import encode_target

CHARTS = (
    "ROC curve",
    "KS: cumulative shares by score",
    "Calibration by decile",
    "Cumulative gains",
)
SECTIONS = {
    "training",
    "discrimination",
    "gains",
    "calibration",
    "stability",
    "top_features",
    "score_bins",
    "reproducibility",
}


def report(client, auth, training_id, accept="application/json"):
    return client.get(f"/trainings/{training_id}/report", headers={**auth, "Accept": accept})


def trained(client, auth, runner, **fields):
    training = create(client, auth, **fields)
    run_pending(runner)
    return succeeded(client, auth, training)


def test_the_report_recomputes_from_the_artifact_and_records_how_to_reproduce_it(
    client, auth, runner, loans, tmp_path
):
    training = trained(client, auth, runner, meta={"dataset": "loans.csv", "seed": 5})

    response = report(client, auth, training["id"])

    assert response.status_code == 200, response.json
    pack = response.json
    assert set(pack) == SECTIONS
    # The held-out rows as the trainer documents its split, scored by the published file.
    frame = pd.read_csv(loans)
    outcome, _ = encode_target(frame[portfolio.TARGET])
    _, test_x, _, test_y = trainer_split(frame.drop(columns=portfolio.TARGET), outcome, seed=5)
    p = load_artifact(client, auth, training, tmp_path).predict_proba(test_x)[:, 1]
    discrimination = pack["discrimination"]
    assert discrimination["auc"] == pytest.approx(skm.roc_auc_score(test_y, p), abs=1e-12)
    assert discrimination["gini"] == pytest.approx(2 * skm.roc_auc_score(test_y, p) - 1)
    assert discrimination["brier"] == pytest.approx(skm.brier_score_loss(test_y, p), abs=1e-12)
    fpr, tpr, _ = skm.roc_curve(test_y, p)
    assert discrimination["ks"] == pytest.approx(np.max(tpr - fpr), abs=1e-12)
    assert discrimination["auc"] == pytest.approx(training["metrics"]["roc_auc"], abs=1e-12)
    assert sum(row["rows"] for row in pack["gains"]) == len(test_y)
    assert sum(row["defaults"] for row in pack["gains"]) == int(np.sum(test_y))
    assert len(pack["calibration"]["deciles"]) == 10
    assert pack["calibration"]["hosmer_lemeshow"]["df"] == 8
    assert pack["top_features"]["method"] == "coefficient"
    assert len(pack["top_features"]["features"]) == 20
    assert pack["stability"] is None  # the model's first training: no champion yet

    record = pack["reproducibility"]
    assert record["dataset"] == {
        "kind": "csv",
        "name": "loans.csv",
        "sha256": hashlib.sha256(loans.read_bytes()).hexdigest(),
        "rows": len(frame),
        "columns": list(frame.columns),
    }
    assert record["trainer"] == "maia_trainings.trainers.scoring:train"
    assert record["parameters"] == {"dataset": "loans.csv", "seed": 5}
    assert record["seed"] == 5
    assert record["hyperparameters"]["max_iter"] == 1000
    assert set(record["versions"]) >= {"python", "scikit-learn", "numpy", "pandas", "skops"}
    assert all(record["versions"].values())

    facts = pack["training"]
    assert facts["id"] == training["id"]
    assert facts["binarySha256"] == training["binarySha256"]
    assert facts["champion"] is True
    assert facts["publish_note"] == "policy always"


def test_the_page_is_self_contained_with_four_charts_drawn_when_it_ran(
    client, auth, runner, datasets
):
    training = trained(client, auth, runner, meta={"seed": 3})

    # What a browser asks for when it follows a link.
    page = report(client, auth, training["id"], "text/html,application/xml;q=0.9,*/*;q=0.8")

    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    for label in CHARTS:
        assert f'aria-label="{label}"' in html
    assert html.count("<polyline") >= 7  # model and chance lines, both KS lines, ...
    assert f"training {training['id']}" in html
    assert training["binarySha256"] in html
    record = report(client, auth, training["id"]).json["reproducibility"]
    assert record["dataset"]["sha256"] in html
    assert f"<th>scikit-learn</th><td>{record['versions']['scikit-learn']}</td>" in html
    # Nothing to fetch: no script, image, link or frame, and no address but SVG's namespace.
    assert not re.search(r"<(script|img|link|iframe|object)\b", html)
    assert set(re.findall(r"https?://[^\s\"'<>]+", html)) == {"http://www.w3.org/2000/svg"}
    policy = page.headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy
    assert "style-src 'sha256-" in policy
    digest = re.search(r"<style>(.*?)</style>", html, re.S).group(1)
    style_hash = base64.b64encode(hashlib.sha256(digest.encode()).digest()).decode()
    assert f"'sha256-{style_hash}'" in policy
    # curl's */* gets the figures; XML is there too, for the clients that read XML.
    assert report(client, auth, training["id"], "*/*").mimetype == "application/json"
    xml = report(client, auth, training["id"], "application/xml")
    root = ElementTree.fromstring(xml.get_data())
    assert root.tag == "report"
    assert float(root.findtext("discrimination/auc")) == pytest.approx(
        training["metrics"]["roc_auc"]
    )


def test_stability_is_measured_against_the_champion_the_run_started_with(
    client, auth, runner, datasets
):
    first = trained(client, auth, runner, meta={"seed": 1})
    same = trained(client, auth, runner, meta={"seed": 1})
    other = trained(client, auth, runner, meta={"seed": 2, "features": ["region", "purpose"]})

    assert report(client, auth, first["id"]).json["stability"] is None
    against_first = report(client, auth, same["id"]).json["stability"]
    # The same data, split and model: the same scores, so no shift at all.
    assert against_first["champion_id"] == first["id"]
    assert against_first["psi"] == pytest.approx(0.0, abs=1e-12)
    assert len(against_first["bins"]) == 10
    shifted = report(client, auth, other["id"]).json["stability"]
    assert shifted["champion_id"] == same["id"]  # policy always: the latest is the champion
    assert shifted["psi"] > 0.1  # two text columns score loans nothing like the full model
    assert sum(row["actual_share"] for row in shifted["bins"]) == pytest.approx(1.0)


def test_if_better_publishes_a_better_challenger_keeps_a_worse_one_out_and_says_why(
    app, client, auth, runner, datasets
):
    app.config.update(PUBLISH_POLICY="if_better", PUBLISH_MARGIN=0.01)
    weak_meta = {"features": ["region"]}
    weak = trained(client, auth, runner, meta=weak_meta)
    strong = trained(client, auth, runner, meta={"seed": 42})
    weaker = trained(client, auth, runner, meta={**weak_meta, "seed": 7})

    assert fetch(client, auth, weak["id"])["published_at"]  # no champion yet
    assert (
        report(client, auth, weak["id"])
        .json["training"]["publish_note"]
        .startswith("if_better: gini")
    )
    strong_facts = report(client, auth, strong["id"]).json["training"]
    assert strong_facts["champion"] is True
    assert " beats champion " in strong_facts["publish_note"]
    kept_out = report(client, auth, weaker["id"]).json
    assert kept_out["training"]["champion"] is False
    assert kept_out["training"]["published_at"] is None
    assert " does not beat champion " in kept_out["training"]["publish_note"]
    assert kept_out["stability"]["champion_id"] == strong["id"]
    champion = client.get("/models/default", headers=auth).json
    assert champion["id"] == strong["id"]
    # The page says it too.
    page = report(client, auth, weaker["id"], "text/html").get_data(as_text=True)
    assert "does not beat champion" in page


def test_a_query_datasource_records_the_query_and_a_digest_of_its_rows(
    app, client, auth, runner, datasets, tmp_path, loans_csv
):
    warehouse = tmp_path / "warehouse.sqlite3"
    with sqlite3.connect(warehouse) as connection:
        pd.read_csv(loans_csv).to_sql("loans", connection, index=False)
    app.config["DATASOURCES"] = {"warehouse": f"sqlite:///{warehouse}"}
    # Text a client wrote reaches the page escaped: here, in the query.
    query = "SELECT *, '<script>alert(1)</script>' AS note FROM loans WHERE loan_amount > 0"
    dataset = {"datasource": "warehouse", "query": query}

    first = trained(client, auth, runner, meta={"dataset": dataset})
    again = trained(client, auth, runner, meta={"dataset": dataset, "seed": 9})

    record = report(client, auth, first["id"]).json["reproducibility"]["dataset"]
    assert record["kind"] == "query"
    assert record["query"] == query
    assert record["name"] == "warehouse"
    assert re.fullmatch(r"[0-9a-f]{64}", record["sha256"])
    # The same rows give the same digest, whatever else the training changed.
    assert report(client, auth, again["id"]).json["reproducibility"]["dataset"] == record
    page = report(client, auth, first["id"], "text/html").get_data(as_text=True)
    assert "<script" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_no_pack_is_a_404_that_says_why_and_reading_needs_a_token(
    app, client, auth, read_token, runner, datasets
):
    pending = create(client, auth, scheduled_at="2031-01-01T00:00:00.000Z")
    response = report(client, auth, pending["id"])
    assert response.status_code == 404
    assert is_error_body(response.json, 404)
    assert "no validation report" in response.json["message"]
    assert is_error_body(report(client, auth, "999999").json, 404)
    assert report(client, auth, "abc").status_code == 404

    done = trained(client, auth, runner)
    assert report(client, bearer(read_token), done["id"]).status_code == 200
    assert report(client, {}, done["id"]).status_code == 403  # the documented answer


def test_deleting_a_challenger_deletes_its_report(app, client, auth, runner, datasets):
    app.config["PUBLISH_POLICY"] = "manual"
    challenger = trained(client, auth, runner)
    assert report(client, auth, challenger["id"]).status_code == 200

    assert client.delete(f"/trainings/{challenger['id']}", headers=auth).status_code == 200

    assert report(client, auth, challenger["id"]).status_code == 404
    again = trained(client, auth, runner)
    assert json.loads(json.dumps(report(client, auth, again["id"]).json))["stability"] is None


# A custom trainer's pack, through the trainer interface ---------------------------------------

OWN_PACK = {
    "discrimination": {
        "auc": 0.75,
        "roc": [{"fpr": 0.0, "tpr": 0.0}, {"fpr": 0.2, "tpr": 0.7}, {"fpr": 1.0, "tpr": 1.0}],
    },
    "fairness": {"groups": ["a", "b"], "gap": 0.01},
    "champion": "told",
    "training": {"id": "forged", "champion": True},  # the service's facts win
}


def sample_run(client, auth, runner, meta):
    training = create(client, auth, meta=meta)
    run_pending(runner)
    return fetch(client, auth, training["id"])


def test_a_custom_trainers_pack_is_stored_served_and_drawn_as_far_as_it_goes(client, auth, runner):
    first = sample_run(client, auth, runner, {"report": OWN_PACK})
    second = sample_run(client, auth, runner, {"report": OWN_PACK})
    assert first["status"] == second["status"] == "succeeded"

    pack = report(client, auth, first["id"]).json
    assert pack["fairness"] == OWN_PACK["fairness"]  # its own sections, in the JSON
    assert pack["training"]["id"] == first["id"]
    assert pack["training"]["binarySha256"] == first["binarySha256"]
    assert pack["discrimination"] == OWN_PACK["discrimination"]
    assert pack["champion"] is None  # the first training of its model had no champion
    told = report(client, auth, second["id"]).json["champion"]
    assert told == {"id": first["id"], "version": first["version"], "score_bins": None}
    page = report(client, auth, second["id"], "text/html")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert all(f'aria-label="{label}"' in html for label in CHARTS)
    assert "0.7500" in html  # its AUC, in the discrimination table


def test_a_pack_in_no_known_shape_still_gets_a_page_and_a_bad_one_fails_the_run(
    client, auth, runner
):
    odd = sample_run(client, auth, runner, {"report": {"gains": 5, "calibration": "none"}})
    page = report(client, auth, odd["id"], "text/html")
    assert page.status_code == 200
    assert "not in the reference shape" in page.get_data(as_text=True)
    assert report(client, auth, odd["id"]).json["gains"] == 5

    refused = sample_run(client, auth, runner, {"report": ["not", "a", "mapping"]})
    assert refused["status"] == "failed"
    assert "report must be a mapping" in refused["error"]
