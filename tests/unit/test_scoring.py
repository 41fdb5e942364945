"""The built-in credit-scoring trainer, in-process: bad parameters are refused when a training is
created or changed, and the demo data it trains on is deterministic.

Its trainings, run for real and their figures recomputed, are in
tests/integration/test_scoring_runs.py.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
from helpers import count, create, fetch, meta_errors

# Refused at creation -----------------------------------------------------------------------


@pytest.fixture
def outside_link(datasets, tmp_path):
    """A CSV outside the datasets folder, linked from inside it as ``linked.csv``."""
    secret = tmp_path / "secret.csv"
    secret.write_text("a,defaulted\n1,0\n2,1\n")
    (datasets / "linked.csv").symlink_to(secret)
    return datasets / "linked.csv"


BAD_META = [
    pytest.param({"colour": "red"}, "colour", id="unknown-parameter"),
    pytest.param({"model": "svm"}, "model", id="unknown-model"),
    pytest.param({"model": ["svm"]}, "model", id="model-not-a-name"),
    pytest.param({"params": {"C": "abc"}}, "params", id="hyper-parameter-of-wrong-type"),
    pytest.param({"params": {"nope": 1}}, "params", id="unknown-hyper-parameter"),
    pytest.param(
        {"model": "random_forest", "params": {"n_estimators": 0}},
        "params",
        id="hyper-parameter-out-of-range",
    ),
    pytest.param({"params": [1]}, "params", id="params-not-an-object"),
    pytest.param({"test_size": 1.5}, "test_size", id="test-size-above-1"),
    pytest.param({"test_size": 0}, "test_size", id="test-size-0"),
    pytest.param({"seed": -1}, "seed", id="negative-seed"),
    pytest.param({"seed": 2**32}, "seed", id="seed-too-large"),
    pytest.param({"seed": 1.5}, "seed", id="fractional-seed"),
    pytest.param({"threshold": 0}, "threshold", id="threshold-0"),
    pytest.param({"threshold": 1}, "threshold", id="threshold-1"),
    pytest.param({"max_runtime": -5}, "max_runtime", id="negative-max-runtime"),
    pytest.param({"features": "age"}, "features", id="features-not-a-list"),
    pytest.param({"features": []}, "features", id="features-empty"),
    pytest.param({"features": ["age", "age"]}, "features", id="features-repeated"),
    pytest.param({"features": ["age", "defaulted"]}, "features", id="features-with-target"),
    pytest.param({"target": ""}, "target", id="empty-target"),
    pytest.param({"positive": [1]}, "positive", id="positive-not-a-value"),
    pytest.param({"dataset": "../../etc/passwd"}, "dataset", id="dataset-climbing-out"),
    pytest.param({"dataset": "missing.csv"}, "dataset", id="dataset-missing"),
    pytest.param({"dataset": "/etc/passwd"}, "dataset", id="dataset-absolute"),
    pytest.param({"dataset": "linked.csv"}, "dataset", id="dataset-symlink-outside"),
    pytest.param({"dataset": 5}, "dataset", id="dataset-not-a-name"),
    pytest.param(
        {"dataset": {"datasource": "nowhere", "query": "SELECT 1"}},
        "dataset",
        id="unknown-datasource",
    ),
    pytest.param(
        {"dataset": {"datasource": ["warehouse"], "query": "SELECT 1"}},
        "dataset",
        id="datasource-not-a-name",
    ),
    pytest.param(
        {"dataset": {"datasource": "warehouse", "query": "DELETE FROM loans"}},
        "dataset",
        id="query-not-a-select",
    ),
]


@pytest.mark.parametrize(("meta", "key"), BAD_META)
def test_bad_parameters_are_refused_at_creation_naming_the_key(
    app, client, auth, loans, outside_link, meta, key
):
    app.config["DATASOURCES"] = {"warehouse": "sqlite:///unused.sqlite3"}

    response = client.post("/trainings", json={"meta": meta}, headers=auth)

    errors = meta_errors(response)
    assert key in errors, errors
    assert all(isinstance(m, str) and m for m in errors[key])
    assert count(client, auth) == 0


def test_every_bad_parameter_is_named_at_once(client, auth, datasets):
    response = client.post(
        "/trainings",
        json={"meta": {"model": "svm", "seed": -1, "threshold": 2, "colour": 1}},
        headers=auth,
    )
    assert set(meta_errors(response)) == {"model", "seed", "threshold", "colour"}


def test_a_put_with_bad_parameters_is_refused_and_changes_nothing(client, auth, loans):
    training = create(client, auth, meta={"dataset": "loans.csv"}, version="v1")

    for meta in ({"model": "svm"}, {"dataset": "../loans.csv"}, {"dataset": "loans.csv", "x": 1}):
        response = client.put(
            f"/trainings/{training['id']}", json={"meta": meta, "version": "v2"}, headers=auth
        )
        assert meta_errors(response)

    assert fetch(client, auth, training["id"]) == training
    good = client.put(
        f"/trainings/{training['id']}",
        json={"meta": {"dataset": "loans.csv", "seed": 3}},
        headers=auth,
    )
    assert good.status_code == 200, good.json
    assert json.loads(good.json["meta"]) == {"dataset": "loans.csv", "seed": 3}


# The demo portfolio's data ------------------------------------------------------------------


def test_demo_data_is_deterministic_with_text_categories_gaps_and_a_0_1_outcome(runner, tmp_path):
    def write(name, seed):
        out = tmp_path / name
        result = runner.invoke(
            args=["trainings", "demo-data", "--rows", "1000", "--seed", str(seed), str(out)]
        )
        assert result.exit_code == 0, result.output
        return out

    first, again, other = write("a.csv", 3), write("b.csv", 3), write("c.csv", 4)

    assert first.read_bytes() == again.read_bytes()
    assert first.read_bytes() != other.read_bytes()
    frame = pd.read_csv(first)
    assert len(frame) == 1000
    text = [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]
    assert {"home_ownership", "purpose", "region"} <= set(text)
    assert frame.isna().any().sum() >= 2  # gaps in several columns
    assert frame["home_ownership"].isna().any()  # a gap in a text column too
    assert set(frame["defaulted"].unique()) == {0, 1}
