"""The built-in credit-scoring trainer's trainings, run for real through the API and run-pending.

Every figure a training reports is recomputed here with scikit-learn's own functions, from the
artifact the service publishes and the same data split the trainer is documented to make.
The parameters refused before anything runs are in tests/unit/test_scoring.py.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import ROWS
from helpers import count, create, fetch, meta_errors
from sklearn import metrics as skm
from sklearn.model_selection import train_test_split

from maia_trainings.trainers import portfolio, scoring

# Few trees and rounds: the file must run quickly on a small machine.
FAST_PARAMS = {
    "logistic_regression": {},
    "gradient_boosting": {"max_iter": 30},
    "random_forest": {"n_estimators": 10},
}


def run_pending(runner, *args):
    result = runner.invoke(args=["trainings", "run-pending", *args])
    # It ends with sys.exit (1 when a training failed); anything else escaping it is a crash.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result


def succeeded(client, auth, training):
    current = fetch(client, auth, training["id"])
    assert current["status"] == "succeeded", current["error"]
    return current


def failed(client, auth, training):
    current = fetch(client, auth, training["id"])
    assert current["status"] == "failed", current
    return current


def download(client, auth, training):
    response = client.get(f"/trainings/{training['id']}/binary", headers=auth)
    assert response.status_code == 200, response.json
    return response.get_data()


def load_artifact(client, auth, training, folder):
    """The published model, downloaded through the API and loaded with the trainer's loader."""
    path = folder / f"downloaded-{training['id']}.skops"
    path.write_bytes(download(client, auth, training))
    return scoring.load_model(path)


def trainer_split(frame, outcome, test_size=0.2, seed=42):
    """The trainer's documented split: stratified on the outcome, ``seed`` as random_state."""
    return train_test_split(
        frame, outcome, test_size=test_size, stratify=outcome, random_state=seed
    )


def expected_figures(model, test_x, test_y, threshold=0.5):
    """Every reported figure, computed here with scikit-learn from the artifact's scores."""
    test_y = np.asarray(test_y)
    probability = model.predict_proba(test_x)[:, 1]
    predicted = (probability >= threshold).astype(int)
    auc = skm.roc_auc_score(test_y, probability)
    fpr, tpr, _ = skm.roc_curve(test_y, probability)
    return {
        "accuracy": skm.accuracy_score(test_y, predicted),
        "precission": skm.precision_score(test_y, predicted, zero_division=0),
        "mae": skm.mean_absolute_error(test_y, probability),
        "rmse": np.sqrt(skm.mean_squared_error(test_y, probability)),
        "metrics": {
            "roc_auc": auc,
            "gini": 2 * auc - 1,
            "ks": np.max(tpr - fpr),
            "recall": skm.recall_score(test_y, predicted, zero_division=0),
            "f1": skm.f1_score(test_y, predicted, zero_division=0),
            "brier": skm.brier_score_loss(test_y, probability),
        },
    }


def assert_reported(training, expected):
    """The training's figures equal the expected ones, up to floating-point rounding."""
    close = {"rel": 1e-5, "abs": 1e-6}
    for name in ("accuracy", "precission", "mae", "rmse"):
        assert training[name] == pytest.approx(expected[name], **close), name
    for name, value in expected["metrics"].items():
        assert training["metrics"][name] == pytest.approx(value, **close), name


# Each model kind, its figures recomputed --------------------------------------------------


@pytest.mark.parametrize("model", ["logistic_regression", "gradient_boosting", "random_forest"])
def test_each_model_kind_reports_figures_scikit_learn_reproduces_from_the_artifact(
    client, auth, runner, loans, tmp_path, model
):
    meta = {"dataset": "loans.csv"}
    if model != "logistic_regression":  # the default model is named by leaving it out
        meta |= {"model": model, "params": FAST_PARAMS[model]}
    training = create(client, auth, meta=meta)

    result = run_pending(runner)

    assert result.exit_code == 0, result.output
    done = succeeded(client, auth, training)
    pipeline = load_artifact(client, auth, done, tmp_path)
    assert type(pipeline.named_steps["model"]) is scoring.MODELS[model]

    # Raw rows, as a client holds them: text categories, gaps, 64-bit numbers. The artifact
    # must score them as the trainer scored its test part, or its figures are not the model's.
    frame = pd.read_csv(loans)
    outcome = frame.pop("defaulted")
    train_x, test_x, _, test_y = trainer_split(frame, outcome)
    assert_reported(done, expected_figures(pipeline, test_x, test_y))
    assert done["metrics"]["n_train"] == len(train_x) == ROWS * 4 // 5
    assert done["metrics"]["n_test"] == len(test_x) == ROWS // 5
    assert done["metrics"]["positive_rate"] == pytest.approx(outcome.mean())
    assert 0.6 < done["metrics"]["roc_auc"] < 0.95  # it learnt something, and not the answer


def test_same_data_params_and_seed_give_the_same_figures_another_seed_others(
    client, auth, runner, loans
):
    meta = {
        "dataset": "loans.csv",
        "model": "random_forest",
        "params": FAST_PARAMS["random_forest"],
    }
    first = create(client, auth, meta=meta | {"seed": 5})
    again = create(client, auth, meta=meta | {"seed": 5})
    other = create(client, auth, meta=meta | {"seed": 6})

    assert run_pending(runner).exit_code == 0

    figures = ("accuracy", "precission", "mae", "rmse", "metrics")
    first, again, other = (succeeded(client, auth, t) for t in (first, again, other))
    assert {k: first[k] for k in figures} == {k: again[k] for k in figures}
    assert first["metrics"] != other["metrics"]
    assert first["mae"] != other["mae"]


# The demo portfolio ------------------------------------------------------------------------


def test_demo_portfolio_separates_a_good_model_from_a_poor_one(app, client, auth, runner, datasets):
    app.config["DEMO_ROWS"] = 20_000  # the default size, the one the documentation speaks of
    good = create(client, auth, meta={})
    poor = create(client, auth, meta={"features": ["region"]})

    assert run_pending(runner).exit_code == 0

    good, poor = succeeded(client, auth, good), succeeded(client, auth, poor)
    assert 0.75 <= good["metrics"]["roc_auc"] <= 0.88
    assert poor["metrics"]["roc_auc"] < 0.65
    assert good["metrics"]["n_train"] + good["metrics"]["n_test"] == 20_000
    assert "demo portfolio" in fetch_log(client, auth, good)


# Where the data comes from -----------------------------------------------------------------


def make_warehouse(path, rows=ROWS, seed=11):
    frame = portfolio.generate(rows, seed)
    with sqlite3.connect(path) as connection:
        frame.to_sql("loans", connection, index=False)
    connection.close()
    return frame


def loans_in(path):
    with sqlite3.connect(path) as connection:
        (number,) = connection.execute("SELECT count(*) FROM loans").fetchone()
    connection.close()
    return number


def test_a_datasource_query_trains_and_cannot_write(app, client, auth, runner, datasets, tmp_path):
    warehouse = tmp_path / "warehouse.sqlite3"
    make_warehouse(warehouse)
    app.config["DATASOURCES"] = {"warehouse": f"sqlite:///{warehouse}"}

    plain = create(
        client,
        auth,
        meta={"dataset": {"datasource": "warehouse", "query": "SELECT * FROM loans"}},
    )
    with_cte = create(
        client,
        auth,
        meta={
            "dataset": {
                "datasource": "warehouse",
                "query": "WITH x AS (SELECT 1) SELECT * FROM loans",
            }
        },
    )
    writing = client.post(
        "/trainings",
        json={
            "meta": {"dataset": {"datasource": "warehouse", "query": "SELECT 1; DELETE FROM loans"}}
        },
        headers=auth,
    )
    assert "dataset" in meta_errors(writing)
    assert count(client, auth) == 2

    assert run_pending(runner).exit_code == 0

    plain, with_cte = succeeded(client, auth, plain), succeeded(client, auth, with_cte)
    assert plain["metrics"]["n_train"] + plain["metrics"]["n_test"] == ROWS
    assert plain["metrics"] == with_cte["metrics"]  # the same rows, the same model
    assert "the datasource warehouse" in fetch_log(client, auth, plain)
    assert loans_in(warehouse) == ROWS


def test_a_write_disguised_as_a_with_query_changes_nothing(
    app, client, auth, runner, datasets, tmp_path
):
    warehouse = tmp_path / "warehouse.sqlite3"
    make_warehouse(warehouse, rows=200)
    app.config["DATASOURCES"] = {"warehouse": f"sqlite:///{warehouse}"}
    queries = (
        "WITH x AS (SELECT 1) DELETE FROM loans",
        "WITH x AS (SELECT 1) DELETE FROM loans RETURNING *",
        "WITH x AS (SELECT 1) INSERT INTO loans (age) VALUES (30) RETURNING *",
    )
    for query in queries:
        response = client.post(
            "/trainings",
            json={"meta": {"dataset": {"datasource": "warehouse", "query": query}}},
            headers=auth,
        )
        if response.status_code == 200:  # accepted: the run must then be refused the write
            run_pending(runner)
            ran = fetch(client, auth, response.json["id"])
            assert ran["status"] == "failed", (query, ran)
            assert "readonly" in ran["error"], ran["error"]  # refused by the database itself
        else:
            assert "dataset" in meta_errors(response), query
        assert loans_in(warehouse) == 200, query


@pytest.mark.parametrize(
    "colour",
    [
        pytest.param(["red", "blue"] * 50_000 + [None] * 500, id="blank-in-the-last-chunk"),
        pytest.param([None] * 100_000 + ["red", "blue"] * 250, id="blank-in-the-first-chunk"),
    ],
)
def test_a_csv_longer_than_a_chunk_with_a_text_column_blank_in_one_chunk_trains(
    client, auth, runner, datasets, colour
):
    # Files are read 100,000 rows at a time; a text column may have no value in a whole chunk.
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"amount": rng.normal(size=len(colour)), "colour": colour})
    frame["defaulted"] = (rng.random(len(frame)) < 1 / (1 + np.exp(1 - frame["amount"]))).astype(
        int
    )
    frame.to_csv(datasets / "long.csv", index=False)
    training = create(client, auth, meta={"dataset": "long.csv"})

    run_pending(runner)

    done = succeeded(client, auth, training)
    assert done["metrics"]["n_train"] + done["metrics"]["n_test"] == len(frame)


# Text outcomes -----------------------------------------------------------------------------


def test_a_good_bad_text_target_takes_bad_as_the_default(
    client, auth, runner, datasets, loans_csv, tmp_path
):
    frame = pd.read_csv(loans_csv)
    frame["status"] = np.where(frame.pop("defaulted") == 1, "bad", "good")
    frame.to_csv(datasets / "graded.csv", index=False)
    training = create(client, auth, meta={"dataset": "graded.csv", "target": "status"})

    assert run_pending(runner).exit_code == 0

    done = succeeded(client, auth, training)
    raw = pd.read_csv(datasets / "graded.csv")
    outcome = (raw.pop("status") == "bad").astype(int)
    _, test_x, _, test_y = trainer_split(raw, outcome)
    pipeline = load_artifact(client, auth, done, tmp_path)
    assert_reported(done, expected_figures(pipeline, test_x, test_y))
    assert done["metrics"]["positive_rate"] == pytest.approx(outcome.mean())
    assert outcome.mean() < 0.5  # "bad" is the rare class: taking "good" would be obvious
    assert "status = 'bad'" in fetch_log(client, auth, done)


def test_a_two_valued_text_target_needs_positive_to_name_the_default(
    client, auth, runner, datasets, loans_csv
):
    frame = pd.read_csv(loans_csv)
    frame["grade"] = np.where(frame.pop("defaulted") == 1, "B", "A")
    frame.to_csv(datasets / "grades.csv", index=False)
    unnamed = create(client, auth, meta={"dataset": "grades.csv", "target": "grade"})
    named = create(client, auth, meta={"dataset": "grades.csv", "target": "grade", "positive": "B"})

    assert run_pending(runner).exit_code == 1

    error = failed(client, auth, unnamed)["error"]
    assert "positive" in error
    assert "A and B" in error
    assert failed(client, auth, unnamed)["binaryPath"] is None
    done = succeeded(client, auth, named)
    assert done["metrics"]["positive_rate"] == pytest.approx((frame["grade"] == "B").mean())


# Failures while running --------------------------------------------------------------------


def files_under(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_a_feature_the_data_lacks_fails_naming_it_and_the_columns(client, auth, runner, loans):
    training = create(client, auth, meta={"dataset": "loans.csv", "features": ["age", "shoe_size"]})

    assert run_pending(runner).exit_code == 1

    error = failed(client, auth, training)["error"]
    assert "'shoe_size'" in error
    assert "loans.csv" in error
    for column in pd.read_csv(loans, nrows=1).columns:
        assert column in error


def test_a_failed_run_leaves_no_artifact(app, client, auth, runner, loans):
    no_target = create(client, auth, meta={"dataset": "loans.csv", "target": "outcome"})
    # Stopped while fitting: many trees on the default demo portfolio take seconds.
    app.config["DEMO_ROWS"] = 20_000
    too_slow = create(
        client,
        auth,
        meta={"model": "random_forest", "params": {"n_estimators": 500}, "max_runtime": 0.5},
    )

    assert run_pending(runner).exit_code == 1

    assert "'outcome'" in failed(client, auth, no_target)["error"]
    assert "timed out" in failed(client, auth, too_slow)["error"]
    models = Path(app.config["MODELS_DIR"])
    for training in (no_target, too_slow):
        done = failed(client, auth, training)
        assert done["binaryPath"] is None
        assert done["binarySha256"] is None
        assert done["binarySize"] is None
        assert done["published_at"] is None
        assert done["version"] is None
        assert files_under(models / training["uuid"]) == []
        response = client.get(f"/trainings/{training['id']}/binary", headers=auth)
        assert response.status_code == 404
        assert response.json["code"] == 404
        assert response.json["message"]
    assert files_under(models) == []


# The artifact, versions and the log --------------------------------------------------------


def test_the_published_artifact_is_named_hashed_sized_and_cached(app, client, auth, runner, loans):
    default = create(client, auth, meta={"dataset": "loans.csv"})
    chosen = create(client, auth, meta={"dataset": "loans.csv"}, binaryPath="team/scorer.skops")
    before = client.get(f"/trainings/{default['id']}/binary", headers=auth)
    assert before.status_code == 404
    assert before.json["code"] == 404

    assert run_pending(runner).exit_code == 0

    models = Path(app.config["MODELS_DIR"])
    for training, relative in (
        (default, f"{default['uuid']}/model.skops"),
        (chosen, "team/scorer.skops"),
    ):
        done = succeeded(client, auth, training)
        assert done["binaryPath"] == relative
        assert files_under(models / Path(relative).parent) == [models / relative]
        data = download(client, auth, done)
        digest = hashlib.sha256(data).hexdigest()
        assert done["binarySha256"] == digest
        assert done["binarySize"] == len(data) == (models / relative).stat().st_size
        response = client.get(f"/trainings/{done['id']}/binary", headers=auth)
        assert response.headers["ETag"] == f'"{digest}"'
        cached = client.get(
            f"/trainings/{done['id']}/binary", headers={**auth, "If-None-Match": f'"{digest}"'}
        )
        assert cached.status_code == 304
        assert cached.get_data() == b""


def test_versions_are_the_clients_or_the_next_automatic_number_in_finishing_order(
    client, auth, runner, loans
):
    meta = {"dataset": "loans.csv"}
    first = create(client, auth, meta=meta)
    client_numbered = create(client, auth, meta=meta, version="10")
    second = create(client, auth, meta=meta)
    broken = create(client, auth, meta=meta | {"target": "outcome"})

    run_pending(runner, "--workers", "1")  # one at a time: they finish in the order made

    assert succeeded(client, auth, first)["version"] == "1"
    assert succeeded(client, auth, client_numbered)["version"] == "10"
    assert succeeded(client, auth, second)["version"] == "2"
    assert failed(client, auth, broken)["version"] is None

    third = create(client, auth, meta=meta)
    assert run_pending(runner).exit_code == 0
    done = succeeded(client, auth, third)
    assert done["version"] == "3"  # after the highest automatic one, not the client's 10
    for training in (first, client_numbered, second, third):
        current = fetch(client, auth, training["id"])
        assert current["published_at"] is not None
        assert current["published_at"] <= current["finished_at"]


def fetch_log(client, auth, training):
    response = client.get(f"/trainings/{training['id']}/log", headers=auth)
    assert response.status_code == 200
    return response.get_data(as_text=True)


def test_the_log_tells_rows_class_balance_and_each_steps_duration(client, auth, runner, loans):
    training = create(client, auth, meta={"dataset": "loans.csv"})

    assert run_pending(runner).exit_code == 0

    done = succeeded(client, auth, training)
    assert done["progress"] == 1.0
    log = fetch_log(client, auth, done)
    defaults = int(pd.read_csv(loans)["defaulted"].sum())
    assert f"loaded {ROWS} rows" in log
    assert "the CSV file loans.csv" in log
    assert f"{defaults} defaults" in log
    for step in ("loading", "fitting logistic_regression", "evaluating", "saving the model"):
        assert re.search(rf"{step}\b.* in \d+\.\d\d s$", log, re.MULTILINE), (step, log)
