"""A public credit data set, end to end: train, validate, publish and score through a real server.

The German Credit data (tests/data/README.md says where it comes from) is a loan book the
service did not make: thirteen text categories, seven numbers and a good/bad target. One
training of it runs per database; the tests then read its figures and its validation pack,
publish it (PUBLISH_POLICY = manual: nothing is published by itself) and score rows of the same
file with the champion, against the champion's own file loaded here.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sklearn
from conftest import SCORING, TESTS, Server, start_server, stop_server
from test_executor import request as send
from test_executor import wait_finished

from maia_trainings.trainers import scoring

DATA = TESTS / "data" / "germancredit.csv"
TARGET = "creditability"
META = {"dataset": DATA.name, "target": TARGET, "positive": "bad"}
# The file's shape (tests/data/README.md): 1000 loans, 300 of them bad.
ROWS, BAD_RATE = 1000, 0.3
# Held-out AUC of a logistic regression on this data is about 0.75-0.80 in the literature.
MIN_AUC = 0.7
TRAINING_TIMEOUT = 120
# The points scale's defaults (issue 13): 600 points at odds of 50 goods to 1 bad, 20 points
# to double the odds.
SCORE_BASE, SCORE_ODDS, SCORE_PDO = 600, 50, 20
SCORED_ROWS = 40


@dataclass
class Trained:
    server: Server
    training: dict[str, Any]


def text_columns() -> list[str]:
    frame = pd.read_csv(DATA, nrows=50).drop(columns=TARGET)
    return [c for c in frame.columns if not pd.api.types.is_numeric_dtype(frame[c])]


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def client_rows(count: int) -> list[dict[str, Any]]:
    """Rows of the file as a client sends them: text as strings, numbers as numbers, no
    target."""
    frame = pd.read_csv(DATA).drop(columns=TARGET).head(count)
    return json.loads(frame.to_json(orient="records"))


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def trained(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Trained]:
    """A server with the data set in its datasets folder, and one training of it run there;
    once per database."""
    postgres = request.getfixturevalue("postgres_run") if request.param == "postgresql" else None
    instance = tmp_path_factory.mktemp("public") / "instance"
    datasets = instance / "datasets"
    datasets.mkdir(parents=True)
    shutil.copyfile(DATA, datasets / DATA.name)
    database = {} if postgres is None else {"DATABASE_URL": postgres.new_schema()}
    server = start_server(
        instance,
        **database,
        TRAINER=SCORING,
        DATASETS_DIR=str(datasets),
        PUBLISH_POLICY="manual",
    )
    try:
        created = server.post("/trainings", {"meta": META})
        training = wait_finished(server, created["id"], TRAINING_TIMEOUT)
        yield Trained(server, training)
    finally:
        stop_server(server)


@pytest.fixture(scope="module")
def published(trained: Trained) -> dict[str, Any]:
    """The training, published by hand: POST /trainings/{id}/publish's answer."""
    assert trained.training["status"] == "succeeded", trained.training["error"]
    return trained.server.post(f"/trainings/{trained.training['id']}/publish")


def score(server: Server, body: Any) -> tuple[int, Any]:
    """POST ``body`` to the default model's scoring; (status, decoded JSON answer)."""
    status, _, data = send(server, "POST", "/models/default/score", body)
    return status, json.loads(data)


# Training and its figures -------------------------------------------------------------------


def test_the_data_set_is_the_documented_file():
    frame = pd.read_csv(DATA)
    assert frame.shape == (ROWS, 21)
    assert frame[TARGET].value_counts().to_dict() == {"good": 700, "bad": 300}
    assert len(text_columns()) == 13
    readme = (DATA.parent / "README.md").read_text()
    assert file_sha256(DATA) in readme


def test_it_trains_on_text_categories_to_a_plausible_model(trained: Trained):
    done = trained.training

    assert done["status"] == "succeeded", done["error"]
    metrics = done["metrics"]
    assert metrics["n_train"] + metrics["n_test"] == ROWS
    assert metrics["positive_rate"] == pytest.approx(BAD_RATE)  # "bad" is the default
    assert MIN_AUC < metrics["roc_auc"] < 0.95, metrics
    assert metrics["gini"] == pytest.approx(2 * metrics["roc_auc"] - 1)
    assert done["published_at"] is None  # PUBLISH_POLICY = manual: not until asked


def test_its_report_holds_every_figure_and_the_files_digest(trained: Trained):
    done = trained.training
    report = trained.server.get(f"/trainings/{done['id']}/report")

    discrimination = report["discrimination"]
    assert discrimination["auc"] == pytest.approx(done["metrics"]["roc_auc"])
    assert discrimination["gini"] == pytest.approx(done["metrics"]["gini"])
    assert discrimination["ks"] == pytest.approx(done["metrics"]["ks"])
    assert discrimination["roc"]
    assert discrimination["ks_curve"]
    gains = report["gains"]
    test_rows = done["metrics"]["n_test"]
    assert sum(row["rows"] for row in gains) == test_rows
    assert sum(row["defaults"] for row in gains) == round(test_rows * BAD_RATE)
    assert gains[-1]["cumulative_defaults_share"] == pytest.approx(1.0)
    assert gains[0]["lift"] > 1  # the riskiest decile holds more than its share of bads
    assert len(report["calibration"]["deciles"]) == len(gains)
    assert 0 <= report["calibration"]["hosmer_lemeshow"]["p_value"] <= 1
    assert report["stability"] is None  # the model had no champion when it ran
    features = [row["name"] for row in report["top_features"]["features"]]
    assert 0 < len(features) <= 20
    # The text categories count: one of them is among the most important features.
    assert any(column in name for name in features for column in text_columns()), features
    reproducibility = report["reproducibility"]
    assert reproducibility["dataset"]["sha256"] == file_sha256(DATA)
    assert reproducibility["dataset"]["rows"] == ROWS
    assert reproducibility["versions"]["scikit-learn"] == sklearn.__version__


# Publishing and scoring ---------------------------------------------------------------------


def test_publishing_makes_it_the_champion(trained: Trained, published: dict[str, Any]):
    assert published["id"] == trained.training["id"]
    assert published["published_at"] is not None
    champion = trained.server.get("/models/default")
    assert champion["id"] == trained.training["id"]
    status, _, _ = send(trained.server, "GET", "/models/default/binary")
    assert status == 200


def test_the_champion_scores_rows_as_its_own_file_does(
    trained: Trained, published: dict[str, Any], tmp_path: Path
):
    rows = client_rows(SCORED_ROWS)
    model_file = tmp_path / "champion.skops"
    status, _, data = send(trained.server, "GET", "/models/default/binary")
    assert status == 200
    model_file.write_bytes(data)
    assert hashlib.sha256(data).hexdigest() == published["binarySha256"]
    expected = scoring.load_model(model_file).predict_proba(pd.DataFrame(rows))[:, 1]

    status, answer = score(trained.server, rows)

    assert status == 200, answer
    assert len(answer) == len(rows)
    for row, probability in zip(answer, expected, strict=True):
        assert row["scoreProbability"] == pytest.approx(probability, rel=1e-6, abs=1e-9)
        odds = (1 - probability) / probability
        points = SCORE_BASE + SCORE_PDO / math.log(2) * math.log(odds / SCORE_ODDS)
        assert row["score"] == pytest.approx(points, abs=0.5)  # rounded to a point, or not
        assert str(row["scoreVersion"]) == str(published["version"])
        assert str(row["training_id"]) == str(published["id"])
        assert row["model_name"] == "default"
    status, one = score(trained.server, rows[0])
    assert status == 200, one
    assert one["scoreProbability"] == pytest.approx(expected[0], rel=1e-6, abs=1e-9)


@pytest.mark.parametrize(
    ("column", "value"),
    [
        pytest.param("purpose", None, id="a-missing-text-column"),
        pytest.param("age_in_years", "sixty", id="text-where-a-number-belongs"),
    ],
)
def test_a_row_missing_a_column_or_with_a_wrong_type_is_refused_naming_it(
    trained: Trained, published: dict[str, Any], column: str, value: Any
):
    (row,) = client_rows(1)
    if value is None:
        del row[column]
    else:
        row[column] = value

    status, answer = score(trained.server, row)

    assert status == 400, answer
    assert answer["code"] == 400
    assert column in answer["message"], answer
