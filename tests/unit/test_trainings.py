"""Create, read, update and delete one training: POST, GET, PUT and DELETE /trainings[/{id}]."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime

import pytest
from conftest import bearer, make_token
from helpers import count, create, fetch, set_columns

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FUTURE = "2999-01-02T03:04:05.678Z"
LATER = "3000-06-07T08:09:10.111Z"
PAST = "2001-01-02T03:04:05.678Z"
NOT_FOUND = {"code": 404, "message": "the resource was not found"}
REPRESENTATION_FIELDS = [
    "id",
    "uuid",
    "accuracy",
    "precission",
    "mae",
    "rmse",
    "binaryPath",
    "version",
    "meta",
    "published_at",
    "created_by",
    "updated_by",
    "status",
    "scheduled_at",
    "started_at",
    "finished_at",
    "created_at",
    "updated_at",
    "attempts",
    "error",
    "progress",
    "binarySha256",
    "binarySize",
    "metrics",
    "schedule_id",
    "callback_url",
    "model_name",
    "published_by",
    "publish_note",
]
METRICS = ("accuracy", "precission", "mae", "rmse")


def post_raw_json(client, auth, text):
    return client.post("/trainings", data=text, content_type="application/json", headers=auth)


# POST /trainings -------------------------------------------------------------------------


def test_create_returns_the_full_representation(client, auth):
    body = create(client, auth, uuid="run-1", binaryPath="m/model.bin", version="v1", meta="x")

    assert list(body) == REPRESENTATION_FIELDS
    assert isinstance(body["id"], str)
    assert body["id"].isdigit()
    assert body["uuid"] == "run-1"
    assert body["binaryPath"] == "m/model.bin"
    assert body["version"] == "v1"
    assert body["meta"] == "x"
    assert body["status"] == "queued"
    assert body["created_by"] == body["updated_by"] == "writer"
    assert body["attempts"] == 0
    for name in (*METRICS, "published_at", "scheduled_at", "started_at", "finished_at", "error"):
        assert body[name] is None, name
    assert TIMESTAMP.match(body["created_at"])
    assert TIMESTAMP.match(body["updated_at"])


def test_created_training_can_be_read_back(client, auth):
    created = create(client, auth, uuid="run-1", version="v1", meta="m", scheduled_at=FUTURE)

    assert fetch(client, auth, created["id"]) == created
    assert count(client, auth) == 1


def test_client_metrics_are_validated_but_not_stored(client, auth):
    created = create(client, auth, accuracy=0.9, precission=0.8, mae=1.5, rmse=2.5)

    for body in (created, fetch(client, auth, created["id"])):
        assert [body[name] for name in METRICS] == [None, None, None, None]


def test_create_without_uuid_generates_a_distinct_uuid4_each_time(client, auth):
    first = create(client, auth)
    second = create(client, auth)

    assert UUID4.match(first["uuid"])
    assert UUID4.match(second["uuid"])
    assert first["uuid"] != second["uuid"]
    assert count(client, auth) == 2


@pytest.mark.parametrize(
    "kwargs",
    [
        pytest.param({}, id="no-body-no-content-type"),
        pytest.param({"json": {}}, id="empty-json-object"),
        pytest.param({"data": "", "content_type": "application/json"}, id="empty-json-body"),
    ],
)
def test_empty_body_creates_a_queued_training(client, auth, kwargs):
    response = client.post("/trainings", headers=auth, **kwargs)

    assert response.status_code == 200, response.json
    assert response.json["status"] == "queued"
    assert UUID4.match(response.json["uuid"])
    assert count(client, auth) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uuid", "u"),
        ("uuid", "x" * 128),
        ("uuid", "élan vital ✓"),
        ("accuracy", 0),
        ("accuracy", 1),
        ("precission", 0.0),
        ("precission", 1.0),
        ("mae", 0),
        ("mae", 1e300),
        ("rmse", 0),
        ("rmse", 12.5),
        ("binaryPath", "model.bin"),
        ("binaryPath", "a/b/./c.bin"),
        ("binaryPath", "not/yet/there.bin"),
        ("version", "v" * 64),
        ("meta", "m" * 64 * 1024),
        ("meta", "é" * 32 * 1024),
        ("meta", ""),
        ("version", None),
        ("meta", None),
        ("binaryPath", None),
        ("scheduled_at", None),
    ],
)
def test_create_accepts_values_within_the_rules(client, auth, field, value):
    response = client.post("/trainings", json={field: value}, headers=auth)

    assert response.status_code == 200, response.json
    assert count(client, auth) == 1


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("uuid", ""),
        ("uuid", "x" * 129),
        ("uuid", "line\nbreak"),
        ("uuid", "nul\x00"),
        ("uuid", 5),
        ("uuid", None),
        ("accuracy", "abc"),
        ("accuracy", True),
        ("accuracy", 2),
        ("accuracy", -1),
        ("accuracy", "1e400"),
        ("precission", 1.0001),
        ("precission", -0.5),
        ("precission", False),
        ("mae", -1),
        ("mae", "abc"),
        ("mae", "inf"),
        ("rmse", -0.001),
        ("rmse", "nan"),
        ("rmse", [1]),
        ("binaryPath", "/etc/x"),
        ("binaryPath", "../x"),
        ("binaryPath", "a/../../x"),
        ("binaryPath", "a/../b"),
        ("binaryPath", "a\\b"),
        ("binaryPath", "..\\x"),
        ("binaryPath", "a\x00b"),
        ("binaryPath", "C:/x"),
        ("binaryPath", ""),
        ("binaryPath", "."),
        ("binaryPath", "x" * 1025),
        ("binaryPath", 7),
        ("version", "v" * 65),
        ("version", 3),
        ("meta", "m" * (64 * 1024 + 1)),
        ("meta", "é" * (32 * 1024) + "m"),
        ("meta", 42),
        ("meta", [1, 2]),
        ("scheduled_at", "not a date"),
        ("scheduled_at", "2026-13-01T00:00:00Z"),
        ("scheduled_at", 1767225600),
    ],
)
def test_create_rejects_invalid_values_and_stores_nothing(client, auth, field, value):
    response = client.post("/trainings", json={field: value}, headers=auth)

    assert response.status_code == 400
    assert response.json["code"] == 400
    assert field in response.json["errors"]
    assert count(client, auth) == 0


@pytest.mark.parametrize("field", METRICS)
def test_create_rejects_a_json_number_too_large_for_a_float(client, auth, field):
    for literal in ("1e400", "-1e400", "9" * 400):
        response = post_raw_json(client, auth, f'{{"{field}": {literal}}}')

        assert response.status_code == 400, literal
        assert field in response.json["errors"]
    assert count(client, auth) == 0


@pytest.mark.parametrize("field", ["color", "precision", "binary_path", "request_fingerprint"])
def test_create_rejects_an_unknown_field_naming_it(client, auth, field):
    response = client.post("/trainings", json={"meta": "m", field: "x"}, headers=auth)

    assert response.status_code == 400
    assert list(response.json["errors"]) == [field]
    assert count(client, auth) == 0


def test_create_rejects_a_binary_path_through_a_symlink_leaving_the_models_folder(
    client, auth, instance_path, tmp_path
):
    outside = tmp_path / "outside"
    outside.mkdir()
    models = instance_path / "models"
    models.mkdir()
    (models / "escape").symlink_to(outside)

    for path in ("escape", "escape/model.bin"):
        response = client.post("/trainings", json={"binaryPath": path}, headers=auth)

        assert response.status_code == 400, path
        assert "binaryPath" in response.json["errors"]
    assert count(client, auth) == 0


def test_create_accepts_a_binary_path_through_a_symlink_staying_inside(client, auth, instance_path):
    models = instance_path / "models"
    (models / "real").mkdir(parents=True)
    (models / "alias").symlink_to(models / "real")

    body = create(client, auth, binaryPath="alias/model.bin")

    assert body["binaryPath"] == "alias/model.bin"


def test_a_json_object_as_meta_is_stored_as_its_json_text(client, auth):
    meta = {"epochs": 3, "layers": [64, 32], "name": "café"}

    body = create(client, auth, meta=meta)

    assert isinstance(body["meta"], str)
    assert json.loads(body["meta"]) == meta
    assert fetch(client, auth, body["id"])["meta"] == body["meta"]


@pytest.mark.parametrize(
    ("scheduled_at", "status"),
    [(FUTURE, "scheduled"), (PAST, "queued"), (None, "queued")],
    ids=["future", "past", "null"],
)
def test_scheduled_at_decides_between_scheduled_and_queued(client, auth, scheduled_at, status):
    body = create(client, auth, scheduled_at=scheduled_at)

    assert body["status"] == status
    assert body["scheduled_at"] == scheduled_at
    assert fetch(client, auth, body["id"])["status"] == status


@pytest.mark.parametrize(
    ("sent", "shown"),
    [
        ("2999-01-02T03:04:05", "2999-01-02T03:04:05.000Z"),
        ("2999-01-02T03:04:05.678", "2999-01-02T03:04:05.678Z"),
        ("2999-01-02T03:04:05+02:00", "2999-01-02T01:04:05.000Z"),
        ("2999-01-02T03:04:05.123456z", "2999-01-02T03:04:05.123Z"),
        ("2999-01-02T00:30:00-01:00", "2999-01-02T01:30:00.000Z"),
    ],
)
def test_scheduled_at_is_shown_in_utc_with_milliseconds(client, auth, sent, shown):
    body = create(client, auth, scheduled_at=sent)

    assert body["scheduled_at"] == shown
    assert fetch(client, auth, body["id"])["scheduled_at"] == shown


@pytest.mark.parametrize(
    "sent", ["9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00"], ids=["max", "min"]
)
def test_create_rejects_a_scheduled_at_outside_the_representable_range(client, auth, sent):
    response = client.post("/trainings", json={"scheduled_at": sent}, headers=auth)

    assert response.status_code == 400
    assert "scheduled_at" in response.json["errors"]
    assert count(client, auth) == 0


@pytest.mark.parametrize("field", ["meta", "version", "binaryPath"])
def test_create_rejects_text_that_is_not_valid_unicode(client, auth, field):
    # A lone surrogate is valid JSON text (\ud800) but cannot be stored as UTF-8.
    response = post_raw_json(client, auth, f'{{"{field}": "ab\\ud800"}}')

    assert response.status_code == 400
    assert field in response.json["errors"]
    assert count(client, auth) == 0


def test_create_ignores_read_only_fields(client, auth):
    read_only = {
        "id": "999",
        "status": "running",
        "published_at": PAST,
        "created_by": "mallory",
        "updated_by": "mallory",
        "started_at": PAST,
        "finished_at": PAST,
        "created_at": PAST,
        "updated_at": PAST,
        "attempts": 7,
        "error": "boom",
    }

    body = create(client, auth, uuid="run-1", **read_only)

    assert body["id"] != "999"
    assert body["status"] == "queued"
    assert body["created_by"] == body["updated_by"] == "writer"
    assert body["attempts"] == 0
    for name in ("published_at", "started_at", "finished_at", "error"):
        assert body[name] is None
    assert body["created_at"] != PAST
    assert body["updated_at"] != PAST
    assert fetch(client, auth, body["id"]) == body


# Idempotency by uuid -------------------------------------------------------------------------


def test_posting_the_same_body_twice_returns_the_same_training(client, auth):
    payload = {"uuid": "run-1", "version": "v1", "meta": "m", "scheduled_at": FUTURE, "mae": 1}

    first = client.post("/trainings", json=payload, headers=auth)
    second = client.post("/trainings", json=payload, headers=auth)

    assert first.status_code == second.status_code == 200
    assert second.json == first.json
    assert count(client, auth) == 1


def test_posting_a_taken_uuid_with_a_different_body_is_a_conflict(client, auth):
    original = create(client, auth, uuid="run-1", meta="first")

    response = client.post("/trainings", json={"uuid": "run-1", "meta": "second"}, headers=auth)

    assert response.status_code == 409
    assert set(response.json) == {"code", "message"}
    assert response.json["code"] == 409
    assert count(client, auth) == 1
    assert fetch(client, auth, original["id"]) == original


def test_retrying_the_original_post_after_an_update_returns_the_existing_training(client, auth):
    payload = {"uuid": "run-1", "meta": "first"}
    original = create(client, auth, **payload)
    changed = client.put(f"/trainings/{original['id']}", json={"meta": "edited"}, headers=auth)
    assert changed.status_code == 200

    response = client.post("/trainings", json=payload, headers=auth)

    assert response.status_code == 200
    assert response.json["id"] == original["id"]
    assert response.json == changed.json
    assert count(client, auth) == 1


# GET /trainings/{id} -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "training_id", ["2", "0", "abc", "-1", "1.5", "1e0", " 1", "9" * 19, "9" * 40, "²"]
)
def test_get_of_an_unknown_or_malformed_id_is_not_found(client, auth, training_id):
    create(client, auth)  # training 1 exists

    response = client.get(f"/trainings/{training_id}", headers=auth)

    assert response.status_code == 404
    assert response.json == NOT_FOUND


# PUT /trainings/{id} ---------------------------------------------------------------------


def test_put_changes_only_the_fields_sent_and_records_who_and_when(app, client, auth):
    created = create(client, auth, uuid="run-1", version="v1", meta="m1", binaryPath="a.bin")
    old = datetime(2020, 1, 1, tzinfo=UTC)
    set_columns(app, created["id"], updated_at=old)
    editor = bearer(make_token(app, "editor"))

    response = client.put(f"/trainings/{created['id']}", json={"meta": "m2"}, headers=editor)

    assert response.status_code == 200
    body = response.json
    assert body["meta"] == "m2"
    assert body["version"] == "v1"
    assert body["binaryPath"] == "a.bin"
    assert body["created_by"] == "writer"
    assert body["updated_by"] == "editor"
    assert body["created_at"] == created["created_at"]
    assert TIMESTAMP.match(body["updated_at"])
    assert body["updated_at"] > "2020-01-01T00:00:00.000Z"
    assert fetch(client, auth, created["id"]) == body


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("meta", "new meta"),
        ("meta", None),
        ("version", "v2"),
        ("version", None),
        ("binaryPath", "b/model.bin"),
        ("binaryPath", None),
        ("scheduled_at", LATER),
    ],
)
def test_put_changes_one_field(client, auth, field, value):
    created = create(client, auth, version="v1", meta="m", binaryPath="a.bin", scheduled_at=FUTURE)

    response = client.put(f"/trainings/{created['id']}", json={field: value}, headers=auth)

    assert response.status_code == 200
    assert response.json[field] == value
    assert fetch(client, auth, created["id"])[field] == value


def test_put_stores_a_json_object_meta_as_its_json_text(client, auth):
    created = create(client, auth, meta="m")

    response = client.put(f"/trainings/{created['id']}", json={"meta": {"a": 1}}, headers=auth)

    assert response.status_code == 200
    assert json.loads(fetch(client, auth, created["id"])["meta"]) == {"a": 1}


@pytest.mark.parametrize(
    ("initial", "new", "status"),
    [
        (FUTURE, PAST, "queued"),
        (FUTURE, None, "queued"),
        (FUTURE, LATER, "scheduled"),
        (None, FUTURE, "scheduled"),
        (PAST, FUTURE, "scheduled"),
        (None, PAST, "queued"),
    ],
    ids=[
        "scheduled-to-past-is-queued",
        "scheduled-cleared-is-queued",
        "scheduled-to-later-stays-scheduled",
        "queued-to-future-is-scheduled",
        "queued-past-to-future-is-scheduled",
        "queued-to-past-stays-queued",
    ],
)
def test_moving_scheduled_at_sets_the_status(client, auth, initial, new, status):
    created = create(client, auth, scheduled_at=initial)

    response = client.put(f"/trainings/{created['id']}", json={"scheduled_at": new}, headers=auth)

    assert response.status_code == 200
    assert response.json["scheduled_at"] == new
    assert response.json["status"] == status
    assert fetch(client, auth, created["id"])["status"] == status


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "cancelled"])
@pytest.mark.parametrize(
    ("field", "value"), [("scheduled_at", LATER), ("scheduled_at", None), ("binaryPath", "b.bin")]
)
def test_put_cannot_change_schedule_or_binary_once_the_training_left_the_queue(
    app, client, auth, status, field, value
):
    created = create(client, auth, scheduled_at=FUTURE, binaryPath="a.bin")
    set_columns(app, created["id"], status=status)
    before = fetch(client, auth, created["id"])

    response = client.put(
        f"/trainings/{created['id']}", json={field: value, "meta": "m"}, headers=auth
    )

    assert response.status_code == 409
    assert response.json["code"] == 409
    assert fetch(client, auth, created["id"]) == before


@pytest.mark.parametrize("status", ["running", "succeeded", "failed", "cancelled"])
def test_put_can_change_meta_and_version_once_the_training_left_the_queue(
    app, client, auth, status
):
    created = create(client, auth, scheduled_at=FUTURE, binaryPath="a.bin")
    set_columns(app, created["id"], status=status)

    response = client.put(
        f"/trainings/{created['id']}", json={"meta": "m2", "version": "v2"}, headers=auth
    )

    assert response.status_code == 200
    body = fetch(client, auth, created["id"])
    assert (body["meta"], body["version"], body["status"]) == ("m2", "v2", status)
    assert body["scheduled_at"] == FUTURE


def test_put_cannot_change_the_uuid(client, auth):
    created = create(client, auth, uuid="run-1", meta="m")

    response = client.put(
        f"/trainings/{created['id']}", json={"uuid": "run-2", "meta": "m2"}, headers=auth
    )

    assert response.status_code == 409
    assert fetch(client, auth, created["id"]) == created


def test_put_with_the_unchanged_uuid_is_accepted(client, auth):
    created = create(client, auth, uuid="run-1", meta="m")

    response = client.put(
        f"/trainings/{created['id']}", json={"uuid": "run-1", "meta": "m2"}, headers=auth
    )

    assert response.status_code == 200
    assert response.json["uuid"] == "run-1"
    assert fetch(client, auth, created["id"])["meta"] == "m2"


def test_put_of_an_empty_body_changes_nothing(client, auth):
    created = create(client, auth, meta="m")

    response = client.put(f"/trainings/{created['id']}", json={}, headers=auth)

    assert response.status_code == 200
    assert response.json == created
    assert fetch(client, auth, created["id"]) == created


@pytest.mark.parametrize("finished", [False, True], ids=["queued", "succeeded"])
def test_putting_back_the_representation_changes_nothing(app, client, auth, finished):
    created = create(
        client, auth, uuid="run-1", version="v1", meta="m", binaryPath="a.bin", scheduled_at=FUTURE
    )
    if finished:
        set_columns(
            app,
            created["id"],
            status="succeeded",
            accuracy=0.93,
            precission=0.91,
            mae=0.12,
            rmse=0.34,
            started_at=datetime(2026, 1, 1, 10, tzinfo=UTC),
            finished_at=datetime(2026, 1, 1, 11, tzinfo=UTC),
            published_at=datetime(2026, 1, 1, 12, tzinfo=UTC),
            attempts=1,
        )
    before = fetch(client, auth, created["id"])
    editor = bearer(make_token(app, "editor"))

    response = client.put(f"/trainings/{created['id']}", json=before, headers=editor)

    assert response.status_code == 200, response.json
    assert response.json == before
    assert fetch(client, auth, created["id"]) == before


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"color": "red"}, "color"),
        ({"meta": "m2", "precision": 0.5}, "precision"),
        ({"version": "v" * 65}, "version"),
        ({"binaryPath": "../x"}, "binaryPath"),
        ({"scheduled_at": "tomorrow"}, "scheduled_at"),
        ({"accuracy": 2}, "accuracy"),
        ({"uuid": ""}, "uuid"),
    ],
)
def test_put_rejects_invalid_fields_and_changes_nothing(client, auth, body, field):
    created = create(client, auth, meta="m")

    response = client.put(f"/trainings/{created['id']}", json=body, headers=auth)

    assert response.status_code == 400
    assert field in response.json["errors"]
    assert fetch(client, auth, created["id"]) == created


@pytest.mark.parametrize("training_id", ["2", "abc", "-1", "9" * 40])
def test_put_on_an_unknown_id_is_not_found(client, auth, training_id):
    create(client, auth)

    response = client.put(f"/trainings/{training_id}", json={"meta": "m"}, headers=auth)

    assert response.status_code == 404
    assert response.json == NOT_FOUND
    assert count(client, auth) == 1


# DELETE /trainings/{id} ------------------------------------------------------------------


@pytest.mark.parametrize("status", ["scheduled", "queued", "succeeded", "failed", "cancelled"])
def test_delete_returns_the_deleted_training_and_removes_it(app, client, auth, status):
    created = create(client, auth, uuid="run-1", meta="m", scheduled_at=FUTURE)
    set_columns(app, created["id"], status=status)
    before = fetch(client, auth, created["id"])

    response = client.delete(f"/trainings/{created['id']}", headers=auth)

    assert response.status_code == 200
    assert response.json == before
    gone = client.get(f"/trainings/{created['id']}", headers=auth)
    assert gone.status_code == 404
    assert gone.json == NOT_FOUND
    assert count(client, auth) == 0


def test_delete_of_a_running_training_is_a_conflict(app, client, auth):
    created = create(client, auth, meta="m")
    set_columns(app, created["id"], status="running")

    response = client.delete(f"/trainings/{created['id']}", headers=auth)

    assert response.status_code == 409
    assert response.json["code"] == 409
    assert fetch(client, auth, created["id"])["status"] == "running"
    assert count(client, auth) == 1


@pytest.mark.parametrize("training_id", ["2", "abc", "-1"])
def test_delete_of_an_unknown_id_is_not_found(client, auth, training_id):
    create(client, auth)

    response = client.delete(f"/trainings/{training_id}", headers=auth)

    assert response.status_code == 404
    assert response.json == NOT_FOUND
    assert count(client, auth) == 1


def test_out_of_range_metrics_are_answered_with_the_documented_messages(client, auth):
    response = client.post("/trainings", json={"accuracy": 2, "mae": -1}, headers=auth)

    assert response.status_code == 400
    assert response.json["errors"] == {
        "accuracy": ["Must be greater than or equal to 0 and less than or equal to 1."],
        "mae": ["Must be greater than or equal to 0."],
    }


def test_a_conflict_names_the_fields_that_cannot_change_any_more(app, client, auth):
    created = create(client, auth, meta="m")
    set_columns(app, created["id"], status="running")

    response = client.put(
        f"/trainings/{created['id']}",
        json={"scheduled_at": "2030-01-01T00:00:00Z", "binaryPath": "other/model.bin"},
        headers=auth,
    )

    assert response.status_code == 409
    assert response.json["message"] == (
        "scheduled_at and binaryPath can only change while the training is scheduled or queued"
    )


def test_a_model_file_that_left_the_models_folder_is_not_served(app, client, auth, tmp_path):
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    (outside / "model.bin").write_bytes(b"not for clients")
    models = tmp_path / "instance" / "models"
    models.mkdir(parents=True, exist_ok=True)
    (models / "published").symlink_to(outside)  # a link in the folder, changed after publishing
    created = create(client, auth)
    set_columns(app, created["id"], binary_path="published/model.bin", binary_sha256="0" * 64)

    response = client.get(f"/trainings/{created['id']}/binary", headers=auth)

    assert response.status_code == 404
    assert response.json == {
        "code": 404,
        "message": "the model file is missing from the models folder",
    }
