"""Generated input: whatever a client sends, the answer is 200 or a 4xx with the error body.

Never a 500, and a request that is refused stores nothing. Hypothesis makes the bodies (JSON
objects with any keys and values, any bytes under each content type) and the query strings;
the examples run through Flask's test client, so the whole file takes seconds.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
from helpers import count, create, fetch
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

SCORING = "maia_trainings.trainers.scoring:train"
JSON = "application/json"
XML = "application/xml"
FORM = "application/x-www-form-urlencoded"
BOUNDARY = "hYp0th3s1s"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"
ERROR_KEYS = {"code", "message", "errors"}

SETTINGS = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
    database=None,  # nothing written into the checkout
)

# The fields a training has, and what the service sets itself: the keys worth guessing.
FIELDS = [
    "uuid",
    "accuracy",
    "precission",
    "mae",
    "rmse",
    "binaryPath",
    "version",
    "meta",
    "scheduled_at",
    "id",
    "status",
    "created_at",
    "metrics",
    "attempts",
]
OPERATORS = ["eq", "ne", "lt", "lte", "gt", "gte", "in", "nin", "contains", "ncontains"]
OPERATORS += ["containss", "ncontainss", "null", "like", ""]
HOSTILE_TEXT = [
    "",
    "../../etc/passwd",
    "/etc/passwd",
    "..\\..\\x",
    "C:/x",
    "%2e%2e%2f",
    "' OR 1=1--",
    "%' OR '1'='1",
    "id;DROP TABLE trainings",
    "\x00",
    "\ud800",
    "NaN",
    "Infinity",
    "1e999",
    "9999-12-31T23:59:59-01:00",
    "2999-01-01T00:00:00Z",
    "-1",
    "99999999999999999999",
]


# JSON text, with what json.dumps will not write ------------------------------------------


@dataclass(frozen=True)
class Digits:
    """An integer literal too long for int(): 4,300 digits is Python's limit."""

    text: str


def to_json(value: Any) -> str:
    """``value`` as JSON text; NaN, Infinity and huge integers written as they are."""
    if isinstance(value, Digits):
        return value.text
    if isinstance(value, dict):
        items = (f"{json.dumps(key)}:{to_json(item)}" for key, item in value.items())
        return "{" + ",".join(items) + "}"
    if isinstance(value, list):
        return "[" + ",".join(to_json(item) for item in value) + "]"
    return json.dumps(value, allow_nan=True)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from([2**63, -(2**64), 10**300, 10**400, -(10**400)]),
    st.sampled_from([4299, 4300, 4301, 5000]).map(lambda n: Digits("9" * n)),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.sampled_from(HOSTILE_TEXT),
    st.datetimes().map(lambda moment: moment.isoformat()),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)
json_objects = st.dictionaries(
    st.sampled_from(FIELDS) | st.text(max_size=20), json_values, max_size=8
)


# Bodies of every accepted type, as bytes ---------------------------------------------------

VALID_BODIES = {
    JSON: b'{"uuid": "u-1", "version": "1", "meta": "m", "accuracy": 0.5}',
    "application/vnd.maia+json": b'{"meta": {"a": [1, 2]}, "scheduled_at": null}',
    XML: b'<?xml version="1.0"?><item><uuid>u-2</uuid><meta>m</meta></item>',
    "text/xml": b"<item><version>2</version><binaryPath>a/b.bin</binaryPath></item>",
    "application/vnd.maia+xml": b"<item><scheduled_at>2999-01-01T00:00:00Z</scheduled_at></item>",
    FORM: b"uuid=u-3&meta=%7B%22a%22%3A1%7D&version=3",
    MULTIPART: (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="uuid"\r\n\r\nu-4\r\n'
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="meta"\r\n\r\nm\r\n'
        f"--{BOUNDARY}--\r\n"
    ).encode(),
    "text/plain": b'{"uuid": "u-5"}',
    "": b'{"uuid": "u-6"}',
}


@st.composite
def mutated(draw: st.DrawFn, valid: bytes) -> bytes:
    """``valid`` with a slice replaced by random bytes: cut short, spliced, or grown."""
    start = draw(st.integers(0, len(valid)))
    end = draw(st.integers(start, len(valid)))
    return valid[:start] + draw(st.binary(max_size=24)) + valid[end:]


@st.composite
def typed_bodies(draw: st.DrawFn) -> tuple[str, bytes]:
    content_type = draw(st.sampled_from(sorted(VALID_BODIES)))
    body = draw(st.binary(max_size=400) | mutated(VALID_BODIES[content_type]))
    return content_type, body


# Query strings -----------------------------------------------------------------------------

parameter_names = st.one_of(
    st.builds(
        lambda field, op: f"{field}_{op}" if op else field,
        st.sampled_from([*FIELDS, "progress", "error", "published_at"]),
        st.sampled_from(OPERATORS),
    ),
    st.sampled_from(["_limit", "_start", "_sort", "_where", "_q"]),
    st.text(max_size=15),
)
parameter_values = st.one_of(
    st.text(max_size=30),
    st.integers().map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(str),
    st.sampled_from(HOSTILE_TEXT),
    st.sampled_from(["true", "false", "id:DESC", "uuid:asc,id", "id:", ":ASC", "-1", "0"]),
)
# Lone surrogates become the bytes of invalid UTF-8 (%ED%A0%80).
encoded_queries = st.lists(st.tuples(parameter_names, parameter_values), max_size=6).map(
    lambda pairs: urlencode(pairs, errors="surrogatepass")
)
# Raw text, percent signs and all, with only what cannot go in a URL escaped.
raw_queries = st.text(max_size=60).map(
    lambda text: quote(text, safe="=&%+;:,/?'", errors="surrogatepass")
)


# The scoring trainer's parameters ----------------------------------------------------------

HYPERPARAMETERS = [
    "C",
    "penalty",
    "solver",
    "max_iter",
    "tol",
    "class_weight",
    "learning_rate",
    "max_depth",
    "max_leaf_nodes",
    "l2_regularization",
    "n_estimators",
    "min_samples_leaf",
    "max_features",
    "criterion",
    "random_state",
    "n_jobs",
    "verbose",
    "no_such_parameter",
]
dataset_names = st.one_of(
    st.text(max_size=40),
    st.sampled_from([*HOSTILE_TEXT, "loans.csv", "escape.csv", "loop.csv", "sub/", "."]),
    st.integers(0, 600).map(lambda n: "d" * n),
    st.builds("/".join, st.lists(st.sampled_from(["..", ".", "sub", "loans.csv", ""]), max_size=5)),
)
datasets = st.one_of(
    dataset_names,
    st.fixed_dictionaries(
        {"datasource": st.text(max_size=10) | st.just("warehouse"), "query": json_values}
    ),
    json_values,
)
scoring_params = st.fixed_dictionaries(
    {},
    optional={
        "dataset": datasets,
        "model": st.sampled_from(["logistic_regression", "gradient_boosting", "random_forest"])
        | json_values,
        "params": st.dictionaries(st.sampled_from(HYPERPARAMETERS), json_values, max_size=3)
        | json_values,
        "target": json_values,
        "features": st.lists(st.text(max_size=8), max_size=4) | json_values,
        "positive": json_values,
        "seed": json_values,
        "test_size": json_values,
        "threshold": json_values,
        "max_runtime": json_values,
    },
)


# Checks ------------------------------------------------------------------------------------


def assert_answered(response) -> None:
    """200, or a 4xx with exactly {code, message[, errors]}: never a 5xx, a trace or HTML."""
    event(f"status {response.status_code}")
    text = response.get_data(as_text=True)
    assert "Traceback" not in text
    assert "<html" not in text.lower()
    if response.status_code == 200:
        return
    assert 400 <= response.status_code < 500, text[:500]
    assert response.mimetype == JSON
    body = response.json
    assert {"code", "message"} <= set(body) <= ERROR_KEYS, body
    assert type(body["code"]) is int
    assert body["code"] == response.status_code
    assert isinstance(body["message"], str)
    assert body["message"]
    if "errors" in body:
        assert isinstance(body["errors"], dict)


def assert_created_at_most_one(client, auth, response, before: int) -> None:
    """A refused request stored nothing; an accepted one stored one training (or none, when
    its uuid was already there)."""
    after = count(client, auth)
    if response.status_code == 200:
        assert after in (before, before + 1)
    else:
        assert after == before


@pytest.fixture
def scoring(app, instance_path):
    """The scoring trainer configured, with a dataset, a sub-folder and links leading out."""
    folder = instance_path / "datasets"
    (folder / "sub").mkdir(parents=True)
    (folder / "loans.csv").write_text("age,defaulted\n30,0\n40,1\n")
    (folder / "escape.csv").symlink_to("/etc/passwd")
    (folder / "loop.csv").symlink_to("loop.csv")
    app.config["TRAINER"] = SCORING
    app.config["DATASETS_DIR"] = str(folder)
    app.config["DATASOURCES"] = {"warehouse": f"sqlite:///{instance_path / 'warehouse.db'}"}
    return folder


@pytest.fixture
def training(client, auth) -> dict[str, Any]:
    """One stored training for the PUT properties (made once per test, not per example)."""
    return create(client, auth, uuid="property-target", version="1", meta="m")


# Properties --------------------------------------------------------------------------------


@SETTINGS
@given(fields=json_objects)
def test_any_json_object_is_answered_and_refusals_store_nothing(client, auth, fields):
    before = count(client, auth)
    body = to_json(fields).encode("utf-8", "surrogatepass")
    response = client.post("/trainings", data=body, content_type=JSON, headers=auth)
    assert_answered(response)
    assert_created_at_most_one(client, auth, response, before)


@SETTINGS
@given(fields=json_objects)
def test_any_json_object_put_is_answered_and_refusals_change_nothing(
    client, auth, training, fields
):
    before = fetch(client, auth, training["id"])
    body = to_json(fields).encode("utf-8", "surrogatepass")
    response = client.put(
        f"/trainings/{training['id']}", data=body, content_type=JSON, headers=auth
    )
    assert_answered(response)
    if response.status_code != 200:
        assert fetch(client, auth, training["id"]) == before


@SETTINGS
@given(typed=typed_bodies())
def test_any_bytes_under_any_content_type_are_answered(client, auth, typed):
    content_type, body = typed
    before = count(client, auth)
    headers = {**auth, "Content-Type": content_type} if content_type else auth
    response = client.post("/trainings", data=body, headers=headers)
    assert_answered(response)
    assert_created_at_most_one(client, auth, response, before)


@SETTINGS
@given(
    query=encoded_queries | raw_queries, path=st.sampled_from(["/trainings", "/trainings/count"])
)
def test_any_query_string_is_answered(client, auth, query, path):
    create(client, auth, uuid="listed", version="1", meta="m")  # idempotent: one row
    response = client.get(path, query_string=query, headers=auth)
    assert_answered(response)
    if response.status_code == 200:
        expected = list if path == "/trainings" else int
        assert isinstance(response.json, expected)
    else:
        assert response.status_code == 400, response.json


@settings(SETTINGS, max_examples=60)
@given(depth=st.integers(0, 3000))
@example(depth=2000)
def test_meta_text_of_any_nesting_is_answered(client, auth, depth):
    # Meta is free text: JSON text nested deeper than the parser goes is still only text.
    before = count(client, auth)
    meta = "[" * depth + "]" * depth
    response = client.post("/trainings", json={"meta": meta}, headers=auth)
    assert_answered(response)
    assert_created_at_most_one(client, auth, response, before)


@settings(SETTINGS, max_examples=150)
@given(params=scoring_params, as_text=st.booleans())
# What earlier runs found, kept so that every run tries it.
@example(params={"test_size": 10**400}, as_text=False)
@example(params={"dataset": "d" * 300}, as_text=True)
@example(params={"dataset": "loop.csv"}, as_text=False)
def test_any_scoring_parameters_are_answered(client, auth, scoring, params, as_text):
    # The built-in trainer checks its parameters (the meta) before anything is stored.
    before = count(client, auth)
    meta = to_json(params)
    body = to_json({"meta": meta if as_text else params}).encode("utf-8", "surrogatepass")
    response = client.post("/trainings", data=body, content_type=JSON, headers=auth)
    assert_answered(response)
    assert_created_at_most_one(client, auth, response, before)
