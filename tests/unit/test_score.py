"""Scoring by a model's champion, in-process: POST /models/{model_name}/score answers the
champion's own probabilities on the configured points scale, refuses bad rows naming the column
and the row, and follows every publication (a rollback included).

Champions are real: the built-in scoring trainer runs in this process on a small demo book and
its model file is published as a run's would be. Two servers switching champions at their next
request are in tests/integration/test_score_nodes.py.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import threading
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import skops.io
from conftest import bearer
from helpers import create, fetch, is_error_body
from sklearn.linear_model import LogisticRegression

from maia_trainings import artifacts, create_app, db, queue, scorer
from maia_trainings.publishing import Policy, PublishPolicy
from maia_trainings.trainers import (
    TrainingContext,
    check_result,
    portfolio,
    scoring,
    trainer_settings,
)

OWNER = "score-test:1"
MANUAL = PublishPolicy(Policy.MANUAL)
MODEL = "risk"
# Two different champions of one model, each trained in about a second.
FIRST = {"seed": 1}
SECOND = {"model": "random_forest", "params": {"n_estimators": 10}, "seed": 2}
ANSWER_KEYS = {"scoreProbability", "score", "scoreVersion", "training_id", "model_name"}


# Champions -----------------------------------------------------------------------------------


def _finish(app, training_id, relative, results):
    """Record a claimed training's success with the model file at ``relative``, unpublished."""
    path = Path(app.config["MODELS_DIR"]) / relative
    results = {
        **results,
        "binary_path": relative,
        "binary_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
        "binary_size": path.stat().st_size,
    }
    with db.database(app).session() as session:
        assert queue.finish(session, training_id, OWNER, results=results, policy=MANUAL)


def _claim(app, client, auth, meta, model_name, **fields):
    training_id = int(create(client, auth, meta=meta, model_name=model_name, **fields)["id"])
    with db.database(app).session() as session:
        claimed = queue.claim_next(session, OWNER, lease_seconds=300, among=[training_id])
    assert claimed is not None
    return training_id, claimed.uuid


def train(app, client, auth, meta, model_name=MODEL, **fields):
    """A training of the real scoring trainer, run here as a child would run it; unpublished."""
    training_id, uuid = _claim(app, client, auth, meta, model_name, **fields)
    relative = f"{uuid}/model.skops"
    final = Path(app.config["MODELS_DIR"]) / relative
    final.parent.mkdir(parents=True)
    partial = final.with_name(".model.skops.partial")
    context = TrainingContext(
        params=meta,
        training={"id": str(training_id)},
        output_path=partial,
        settings=trainer_settings(app.config),
        _progress=lambda fraction: None,
        _log=lambda message: None,
    )
    results = check_result(scoring.train(context))
    artifacts.publish(partial, final)
    _finish(app, training_id, relative, results)
    return fetch(client, auth, training_id)


def train_with_file(app, client, auth, content: bytes, model_name=MODEL):
    """A succeeded training whose model file holds ``content``; unpublished."""
    training_id, uuid = _claim(app, client, auth, {}, model_name)
    relative = f"{uuid}/model.skops"
    path = Path(app.config["MODELS_DIR"]) / relative
    path.parent.mkdir(parents=True)
    path.write_bytes(content)
    _finish(app, training_id, relative, {})
    return fetch(client, auth, training_id)


def publish(client, auth, training):
    response = client.post(f"/trainings/{training['id']}/publish", headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def model_file(app, training) -> Path:
    return Path(app.config["MODELS_DIR"]) / training["binaryPath"]


def own_probabilities(app, training, rows):
    """The champion's own predict_proba on the rows: its file loaded as the trainer loads it."""
    model = scoring.load_model(model_file(app, training))
    return model.predict_proba(pd.DataFrame(rows))[:, 1].tolist()


def score(client, headers, body, model_name=MODEL):
    return client.post(f"/models/{model_name}/score", json=body, headers=headers)


def scored(client, headers, body, model_name=MODEL):
    response = score(client, headers, body, model_name)
    assert response.status_code == 200, response.json
    return response.json


@pytest.fixture
def rows():
    """Forty loans as a client sends them: JSON objects, the book's gaps as null."""
    frame = portfolio.generate(40, seed=11).drop(columns=portfolio.TARGET)
    records = json.loads(frame.to_json(orient="records"))
    assert any(value is None for row in records for value in row.values())
    return records


@pytest.fixture
def champion(app, client, auth, datasets):
    return publish(client, auth, train(app, client, auth, FIRST))


# Scores ---------------------------------------------------------------------------------------


def test_one_row_and_a_batch_score_as_the_champion_s_own_model(app, client, auth, champion, rows):
    expected = own_probabilities(app, champion, rows)

    one = scored(client, auth, rows[0])
    batch = scored(client, auth, rows)

    assert isinstance(one, dict)
    assert set(one) == ANSWER_KEYS
    assert abs(one["scoreProbability"] - expected[0]) <= 1e-12
    assert isinstance(batch, list)
    assert len(batch) == len(rows)
    assert batch[0] == one
    for answer, probability in zip(batch, expected, strict=True):
        assert set(answer) == ANSWER_KEYS
        assert abs(answer["scoreProbability"] - probability) <= 1e-12
        assert (answer["scoreVersion"], answer["training_id"], answer["model_name"]) == (
            champion["version"],
            champion["id"],
            MODEL,
        )
    # Different loans, different scores: the rows were not mixed up or repeated.
    assert len({answer["scoreProbability"] for answer in batch}) == len(rows)


@pytest.mark.parametrize(
    "meta",
    [
        {"model": "logistic_regression", "seed": 4},
        {"model": "gradient_boosting", "params": {"max_iter": 20}, "seed": 4},
        {"model": "random_forest", "params": {"n_estimators": 10}, "seed": 4},
        {"features": ["age", "debt_to_income", "late_payments_12m"]},
        {"features": ["region", "purpose", "home_ownership"]},
    ],
    ids=["logistic_regression", "gradient_boosting", "random_forest", "numbers-only", "text-only"],
)
def test_every_model_kind_scores_exactly_as_its_own_pipeline(
    app, client, auth, datasets, rows, meta
):
    # The scorer runs a scoring trainer's pipeline step by step (faster for one row); its
    # answers must be the pipeline's own, to the last bit: gaps, text it never saw included.
    rows = [dict(row) for row in rows]
    rows[1]["region"] = "atlantis"
    rows[2]["home_ownership"] = None
    rows[3].update(age=None, annual_income=None)
    champion = publish(client, auth, train(app, client, auth, meta))

    answers = scored(client, auth, rows)

    assert [a["scoreProbability"] for a in answers] == own_probabilities(app, champion, rows)
    assert scored(client, auth, rows[1])["scoreProbability"] == answers[1]["scoreProbability"]


def test_scores_follow_the_configured_points_scale(app, client, auth, champion, rows):
    app.config.update(SCORE_PDO=40, SCORE_BASE=500)
    factor = 40 / math.log(2)
    offset = 500 - factor * math.log(50)

    for answer in scored(client, auth, rows):
        p = answer["scoreProbability"]
        assert answer["score"] == pytest.approx(offset + factor * math.log((1 - p) / p), abs=0.005)
        assert round(answer["score"], 2) == answer["score"]
    # Odds of 50:1 score the base; twice the odds, the base plus SCORE_PDO.
    points = scorer.Settings.from_config(app.config).points(np.array([1 / 51, 1 / 101]))
    assert points.tolist() == [500.0, 540.0]


def test_extra_keys_are_ignored_and_nulls_are_imputed(app, client, auth, champion, rows):
    row = rows[0]
    gaps = dict.fromkeys(row, None)

    with_extra = scored(client, auth, {**row, "customer": "c-17", "notes": [1, 2]})
    all_null = scored(client, auth, gaps)

    assert with_extra == scored(client, auth, row)
    # As in training: a number's gap is the training data's median, a text's the category
    # "missing" (pandas reads an empty CSV cell as NaN; a JSON null must score the same).
    nan_gaps = pd.DataFrame([gaps]).astype(float)
    text = ["home_ownership", "purpose", "region"]
    nan_gaps[text] = nan_gaps[text].astype(object)
    expected = scoring.load_model(model_file(app, champion)).predict_proba(nan_gaps)[0, 1]
    assert all_null["scoreProbability"] == expected
    assert scored(client, auth, {**row, "region": None}) == scored(
        client, auth, {**row, "region": "missing"}
    )


def test_a_read_token_may_score_and_no_token_may_not(client, read_token, champion, rows):
    assert scored(client, bearer(read_token), rows[:2])[0]["training_id"] == champion["id"]

    refused = score(client, {}, rows[:2])

    # The service answers a missing token as the original API documents it: 403.
    assert refused.status_code == 403
    assert refused.json == {"code": 403, "message": "this operation requires authentication"}


def test_any_version_text_is_answered_as_it_is(app, client, auth, datasets, rows):
    version = 'rc "2" 50% {x} \\ é'
    champion = publish(client, auth, train(app, client, auth, FIRST, version=version))

    answers = scored(client, auth, rows[:2])

    assert champion["version"] == version
    assert [a["scoreVersion"] for a in answers] == [version, version]


def test_scores_are_answered_as_xml_when_asked(client, auth, champion, rows):
    response = score(client, {**auth, "Accept": "application/xml"}, rows[0])

    assert response.status_code == 200
    assert response.mimetype == "application/xml"
    assert b"<scoreProbability>" in response.data
    assert f"<training_id>{champion['id']}</training_id>".encode() in response.data


# Refusals -----------------------------------------------------------------------------------


def without(row, column):
    return {k: v for k, v in row.items() if k != column}


def test_a_row_with_a_missing_or_wrongly_typed_column_is_refused_naming_it(
    client, auth, champion, rows
):
    batch = rows[:4]
    cases = {
        "missing, in an array": ([*batch[:2], without(batch[2], "age"), batch[3]], "age", 2),
        "missing, one object": (without(batch[0], "region"), "region", None),
        "string for a number": ({**batch[0], "annual_income": "52000"}, "annual_income", None),
        "number for text": ([batch[0], {**batch[1], "purpose": 3}], "purpose", 1),
        "bool for a number": (
            [batch[0], {**batch[1], "previous_default": True}],
            "previous_default",
            1,
        ),
        "bool for text": ({**batch[0], "region": False}, "region", None),
        "object for a number": ({**batch[0], "age": {"years": 40}}, "age", None),
        "a number too large": (
            [*batch[:3], {**batch[3], "loan_amount": 10**400}],
            "loan_amount",
            3,
        ),
    }
    for case, (body, column, index) in cases.items():
        response = score(client, auth, body)
        assert response.status_code == 400, case
        message = response.json["message"]
        assert repr(column) in message, (case, message)
        assert (f"row {index}" in message) if index is not None else ("row" not in message), case
        assert list(response.json["errors"]) == [column], case


def test_every_refused_column_is_named_at_once(client, auth, champion, rows):
    body = [rows[0], {**rows[1], "age": "40", "region": 7}]

    response = score(client, auth, body)

    assert response.status_code == 400
    assert response.json["errors"] == {
        "age": ["row 1: 'age' must be a number or null, not a string"],
        "region": ["row 1: 'region' must be a string or null, not a number"],
    }


@pytest.mark.parametrize(
    ("body", "words"),
    [
        pytest.param([], "no rows", id="empty-array"),
        pytest.param("a row", "JSON object", id="a-string"),
        pytest.param(7, "JSON object", id="a-number"),
        pytest.param([{"age": 1}, [1, 2]], "row 1", id="an-array-in-the-array"),
    ],
)
def test_a_body_that_is_no_row_or_array_of_rows_is_refused(client, auth, champion, body, words):
    response = score(client, auth, body)

    assert response.status_code == 400
    assert is_error_body(response.json, 400)
    assert words in response.json["message"]


def test_more_rows_than_score_max_rows_are_refused(app, client, auth, champion, rows):
    app.config["SCORE_MAX_ROWS"] = 5
    assert len(scored(client, auth, rows[:5])) == 5

    response = score(client, auth, rows[:6])

    assert response.status_code == 400
    assert is_error_body(response.json, 400)
    assert "at most 5" in response.json["message"]


def test_a_body_over_score_max_content_length_is_413(app, client, auth, champion, rows):
    body = json.dumps(rows)
    app.config["SCORE_MAX_CONTENT_LENGTH"] = len(body) - 1

    response = client.post(
        f"/models/{MODEL}/score", data=body, content_type="application/json", headers=auth
    )

    assert response.status_code == 413
    assert is_error_body(response.json, 413)


@pytest.mark.parametrize(
    ("content_type", "data"),
    [
        pytest.param("text/csv", "age,region\n40,north\n", id="csv"),
        pytest.param("application/x-www-form-urlencoded", '{"age": 40}', id="form"),
        pytest.param("application/xml", "<item><age>40</age></item>", id="xml"),
        pytest.param(None, '{"age": 40}', id="no-content-type"),
    ],
)
def test_a_body_that_is_not_json_is_415(client, auth, champion, content_type, data):
    response = client.post(
        f"/models/{MODEL}/score", data=data, content_type=content_type, headers=auth
    )

    assert response.status_code == 415
    assert is_error_body(response.json, 415)
    assert "application/json" in response.json["message"]


@pytest.mark.parametrize("data", [b'{"age": ', b"[NaN]", b'{"age": 1e999', b"\xff\xfe"], ids=str)
def test_malformed_json_is_400(client, auth, champion, data):
    response = client.post(
        f"/models/{MODEL}/score", data=data, content_type="application/json", headers=auth
    )

    assert response.status_code == 400
    assert is_error_body(response.json, 400)


def test_infinity_for_a_number_is_refused(client, auth, champion, rows):
    body = json.dumps({**rows[0], "age": 0}, separators=(",", ":")).replace(
        '"age":0', '"age":1e999'
    )

    response = client.post(
        f"/models/{MODEL}/score", data=body, content_type="application/json", headers=auth
    )

    assert response.status_code == 400
    assert response.json["message"] == "'age' must be a finite number"


# Which champion -----------------------------------------------------------------------------


def test_a_model_without_champion_and_an_unknown_model_are_404(client, auth, datasets, rows):
    create(client, auth, model_name=MODEL)  # a model with a training, none published

    for model_name in (MODEL, "unknown", "no such"):
        response = score(client, auth, rows[0], model_name=model_name)
        assert response.status_code == 404
        assert is_error_body(response.json, 404)
        assert response.json == client.get(f"/models/{model_name}", headers=auth).json


def test_a_champion_whose_file_is_gone_is_409(app, client, auth, champion, rows):
    model_file(app, champion).unlink()

    response = score(client, auth, rows[0])

    assert response.status_code == 409
    assert is_error_body(response.json, 409)
    assert "missing" in response.json["message"]


def test_a_refused_champion_is_tried_again_after_a_moment(
    app, client, auth, champion, rows, monkeypatch
):
    path = model_file(app, champion)
    kept = path.read_bytes()
    path.unlink()
    assert score(client, auth, rows[0]).status_code == 409

    path.write_bytes(kept)  # the operator restores the file
    # Within RELOAD_AFTER_FAILURE the refusal is remembered: no hash and load per request.
    assert score(client, auth, rows[0]).status_code == 409
    monkeypatch.setattr(scorer, "RELOAD_AFTER_FAILURE", 0.0)
    assert score(client, auth, rows[0]).status_code == 200


def _foreign_skops(tmp_path):
    path = tmp_path / "foreign.skops"
    skops.io.dump({"when": datetime.timedelta(days=1)}, path)
    return path.read_bytes()


def _bare_estimator(tmp_path):
    path = tmp_path / "bare.skops"
    skops.io.dump(LogisticRegression().fit([[0.0], [1.0]], [0, 1]), path)
    return path.read_bytes()


@pytest.mark.parametrize(
    ("content", "words"),
    [
        pytest.param(_foreign_skops, "not a model the scoring trainer saved", id="foreign-types"),
        pytest.param(lambda _: b"not a zip file", "not a model the scoring trainer", id="no-skops"),
        pytest.param(_bare_estimator, "not a pipeline the scoring trainer made", id="bare-model"),
    ],
)
def test_a_champion_that_is_no_scoring_pipeline_is_409(
    app, client, auth, datasets, rows, tmp_path, content, words
):
    publish(client, auth, train_with_file(app, client, auth, content(tmp_path)))

    response = score(client, auth, rows[0])

    assert response.status_code == 409
    assert is_error_body(response.json, 409)
    assert words in response.json["message"]


def test_a_champion_whose_file_changed_after_publishing_is_409(app, client, auth, champion, rows):
    path = model_file(app, champion)
    path.write_bytes(path.read_bytes() + b"\0")

    response = score(client, auth, rows[0])

    assert response.status_code == 409
    assert "not the one it published" in response.json["message"]


def test_rollback_restores_the_first_champion_s_binary_and_scores(
    app, client, auth, datasets, rows
):
    first = publish(client, auth, train(app, client, auth, FIRST))
    second = train(app, client, auth, SECOND)
    first_scores = scored(client, auth, rows)

    publish(client, auth, second)
    second_scores = scored(client, auth, rows)
    publish(client, auth, first)
    rolled_back = scored(client, auth, rows)

    assert {a["scoreVersion"] for a in second_scores} == {second["version"]} != {first["version"]}
    assert [a["scoreProbability"] for a in second_scores] != [
        a["scoreProbability"] for a in first_scores
    ]
    binary = client.get(f"/models/{MODEL}/binary", headers=auth)
    assert binary.headers["ETag"] == f'"{first["binarySha256"]}"'
    assert rolled_back == first_scores


def test_models_are_scored_each_by_its_own_champion(app, client, auth, datasets, rows):
    risk = publish(client, auth, train(app, client, auth, FIRST))
    other = publish(client, auth, train(app, client, auth, SECOND, model_name="other"))

    assert scored(client, auth, rows[0])["training_id"] == risk["id"]
    assert scored(client, auth, rows[0], model_name="other")["training_id"] == other["id"]
    assert scored(client, auth, rows[0])["training_id"] == risk["id"]


# The loaded models ---------------------------------------------------------------------------


def test_concurrent_first_requests_load_the_champion_once(
    app, client, auth, champion, rows, monkeypatch
):
    loads = []
    real_load = scorer.load

    def counted(*args):
        loads.append(args)
        return real_load(*args)

    monkeypatch.setattr(scorer, "load", counted)
    answers, start = [], threading.Barrier(6)

    def request():
        local = app.test_client()
        start.wait()
        answers.append(score(local, auth, rows[:3]))

    threads = [threading.Thread(target=request) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert [a.status_code for a in answers] == [200] * 6
    assert len({json.dumps(a.json) for a in answers}) == 1
    assert len(loads) == 1


def test_at_most_models_kept_pipelines_are_kept_the_least_recent_dropped(monkeypatch, tmp_path):
    loads = []

    def load(champion, folder):
        loads.append(champion)
        return scorer.Model(champion, None, (), frozenset(), 1, dict.get)

    monkeypatch.setattr(scorer, "load", load)
    kept = scorer.Scorer(tmp_path, capacity=2)
    a, b, c = (scorer.Champion(i, str(i), f"{i}/m", f"sha-{i}") for i in (1, 2, 3))

    kept.model("a", a)
    kept.model("b", b)
    kept.model("a", a)  # a is now the most recently used
    kept.model("c", c)  # b is dropped
    kept.model("a", a)
    kept.model("b", b)  # loaded again

    assert [champion.id for champion in loads] == [1, 2, 3, 2]


def test_a_bad_score_setting_stops_the_start(tmp_path, monkeypatch):
    monkeypatch.setenv("MAIA_INSTANCE_PATH", str(tmp_path))
    url = f"sqlite:///{tmp_path / 't.sqlite3'}"
    for setting, value in (("SCORE_PDO", 0), ("SCORE_BASE", "600"), ("SCORE_MAX_ROWS", 0)):
        with pytest.raises(ValueError, match=setting):
            create_app({"TESTING": True, "DATABASE_URL": url, setting: value})
