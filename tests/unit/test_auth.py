"""Bearer tokens: who may call what, revocation, the CLI, and that only hashes are stored."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from conftest import bearer, make_token
from sqlalchemy.engine import make_url

AUTH_REQUIRED = {"code": 403, "message": "this operation requires authentication"}
BODY = '{"uuid": "first", "version": "1", "meta": "kept"}'
CHANGE = '{"version": "2", "meta": "changed"}'

ROUTES = [
    ("GET", "/trainings"),
    ("POST", "/trainings"),
    ("GET", "/trainings/count"),
    ("GET", "/trainings/1"),
    ("PUT", "/trainings/1"),
    ("DELETE", "/trainings/1"),
]
READ_ROUTES = [route for route in ROUTES if route[0] == "GET"]
WRITE_ROUTES = [route for route in ROUTES if route[0] != "GET"]


def call(client, method: str, path: str, headers: dict[str, str]):
    body = {"data": CHANGE, "content_type": "application/json"} if method in ("POST", "PUT") else {}
    return client.open(path, method=method, headers=headers, **body)


def create_training(client, headers) -> dict:
    response = client.post(
        "/trainings", data=BODY, content_type="application/json", headers=headers
    )
    assert response.status_code == 200
    return response.json


def stored(client, headers) -> list[dict]:
    """Every training, as a write token sees them, with the count agreeing."""
    listed = client.get("/trainings", headers=headers)
    counted = client.get("/trainings/count", headers=headers)
    assert listed.status_code == 200
    assert counted.status_code == 200
    assert counted.json == len(listed.json)
    return listed.json


def cli_secret(runner, *args: str) -> str:
    result = runner.invoke(args=["trainings", "token", "create", *args])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


# Missing, unknown, malformed and revoked tokens --------------------------------------------

BAD_AUTHORIZATIONS = {
    "missing": lambda secret: {},
    "unknown": lambda secret: {"Authorization": "Bearer mt_not-a-token-we-made"},
    "empty-bearer": lambda secret: {"Authorization": "Bearer "},
    "bearer-only": lambda secret: {"Authorization": "Bearer"},
    "empty-header": lambda secret: {"Authorization": ""},
    "no-scheme": lambda secret: {"Authorization": secret},
    "basic-scheme": lambda secret: {"Authorization": "Basic d3JpdGVyOnNlY3JldA=="},
    "other-scheme": lambda secret: {"Authorization": f"Token {secret}"},
    "truncated": lambda secret: {"Authorization": f"Bearer {secret[:-1]}"},
    "extended": lambda secret: {"Authorization": f"Bearer {secret}x"},
    "its-hash": lambda secret: {
        "Authorization": f"Bearer {hashlib.sha256(secret.encode()).hexdigest()}"
    },
}


@pytest.mark.parametrize("kind", list(BAD_AUTHORIZATIONS))
@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_route_without_a_valid_token_is_403_and_changes_nothing(
    client, auth, write_token, method, path, kind
):
    before = [create_training(client, auth)]

    response = call(client, method, path, BAD_AUTHORIZATIONS[kind](write_token))

    assert response.status_code == 403
    assert response.mimetype == "application/json"
    assert response.json == AUTH_REQUIRED
    assert stored(client, auth) == before


def test_403_for_a_missing_token_comes_before_not_found(client):
    response = client.get("/trainings/999")

    assert response.status_code == 403
    assert response.json == AUTH_REQUIRED


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "DELETE"])
def test_403_for_a_missing_token_comes_before_reading_the_body(client, auth, method):
    response = client.open(
        "/trainings" if method in ("GET", "POST") else "/trainings/1",
        method=method,
        data="{not json",
        content_type="application/json",
    )

    assert response.status_code == 403
    assert response.json == AUTH_REQUIRED
    assert stored(client, auth) == []


def test_403_is_an_error_element_when_xml_is_preferred(client):
    response = client.get("/trainings", headers={"Accept": "application/xml"})

    assert response.status_code == 403
    assert response.mimetype == "application/xml"
    body = response.get_data(as_text=True)
    assert "<error>" in body
    assert "<code>403</code>" in body
    assert "<message>this operation requires authentication</message>" in body


@pytest.mark.parametrize("authorization", [None, "Bearer mt_unknown", "Basic eDp5"])
def test_healthz_needs_no_token(client, authorization):
    headers = {"Authorization": authorization} if authorization else {}

    response = client.get("/healthz", headers=headers)

    assert response.status_code == 200
    assert response.json["status"] == "ok"


@pytest.mark.parametrize(("method", "path"), ROUTES)
def test_revoked_token_is_403_on_every_route(client, runner, write_token, method, path):
    other = bearer(make_token(client.application, "other", "write"))
    before = [create_training(client, bearer(write_token))]

    result = runner.invoke(args=["trainings", "token", "revoke", "writer"])

    assert result.exit_code == 0, result.output
    response = call(client, method, path, bearer(write_token))
    assert response.status_code == 403
    assert response.json == AUTH_REQUIRED
    assert stored(client, other) == before


def test_revoking_one_token_leaves_the_others_working(client, runner, write_token, read_token):
    assert runner.invoke(args=["trainings", "token", "revoke", "writer"]).exit_code == 0

    assert client.get("/trainings", headers=bearer(write_token)).status_code == 403
    assert client.get("/trainings", headers=bearer(read_token)).status_code == 200


def test_revoking_an_unknown_token_fails(runner):
    result = runner.invoke(args=["trainings", "token", "revoke", "nobody"])

    assert result.exit_code != 0
    assert "nobody" in result.output


# Scopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("method", "path"), READ_ROUTES)
def test_read_token_can_read(client, auth, read_token, method, path):
    create_training(client, auth)

    response = call(client, method, path, bearer(read_token))

    assert response.status_code == 200


def test_read_token_sees_what_was_stored(client, auth, read_token):
    created = create_training(client, auth)
    reader = bearer(read_token)

    assert client.get("/trainings", headers=reader).json == [created]
    assert client.get("/trainings/count", headers=reader).json == 1
    assert client.get(f"/trainings/{created['id']}", headers=reader).json == created


@pytest.mark.parametrize(("method", "path"), WRITE_ROUTES)
def test_read_token_cannot_write_and_changes_nothing(client, auth, read_token, method, path):
    before = [create_training(client, auth)]

    response = call(client, method, path, bearer(read_token))

    assert response.status_code == 403
    assert response.mimetype == "application/json"
    assert response.json["code"] == 403
    assert "write scope" in response.json["message"]
    assert stored(client, auth) == before


def test_read_token_cannot_write_even_to_a_missing_training(client, auth, read_token):
    response = call(client, "PUT", "/trainings/999", bearer(read_token))

    assert response.status_code == 403
    assert "write scope" in response.json["message"]
    assert stored(client, auth) == []


def test_write_token_can_create_update_and_delete(client, auth):
    created = create_training(client, auth)
    path = f"/trainings/{created['id']}"

    updated = call(client, "PUT", path, auth)
    assert updated.status_code == 200
    assert updated.json["version"] == "2"
    deleted = client.delete(path, headers=auth)
    assert deleted.status_code == 200
    assert stored(client, auth) == []


# Who did it --------------------------------------------------------------------------------


def test_created_training_names_its_token_as_creator_and_updater(client, auth):
    created = create_training(client, auth)

    assert created["created_by"] == "writer"
    assert created["updated_by"] == "writer"
    assert stored(client, auth)[0]["created_by"] == "writer"


def test_update_names_the_updating_token_and_keeps_the_creator(app, client, auth):
    created = create_training(client, auth)
    editor = bearer(make_token(app, "editor", "write"))

    response = call(client, "PUT", f"/trainings/{created['id']}", editor)

    assert response.status_code == 200
    assert response.json["created_by"] == "writer"
    assert response.json["updated_by"] == "editor"
    assert stored(client, auth)[0]["updated_by"] == "editor"


# Tokens are stored as hashes ---------------------------------------------------------------


def database_bytes(app) -> bytes:
    path = Path(make_url(app.config["DATABASE_URL"]).database)
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-journal")]
    assert path.exists()
    return b"".join(file.read_bytes() for file in files if file.exists())


@pytest.mark.sqlite_only("reads the SQLite file's bytes, the WAL included")
def test_token_secrets_are_stored_only_as_sha256_hashes(app, client, runner, write_token):
    read_secret = make_token(app, "reader", "read")
    cli = cli_secret(runner, "deployer")
    for secret in (write_token, read_secret, cli):
        assert client.get("/trainings", headers=bearer(secret)).status_code == 200
    create_training(client, bearer(cli))

    data = database_bytes(app)

    for secret in (write_token, read_secret, cli):
        assert secret.encode() not in data
        assert secret.removeprefix("mt_").encode() not in data
        assert hashlib.sha256(secret.encode()).hexdigest().encode() in data


# The token CLI -----------------------------------------------------------------------------


def test_cli_token_create_prints_a_working_write_secret_last(client, runner):
    secret = cli_secret(runner, "deployer")

    response = client.post(
        "/trainings", data=BODY, content_type="application/json", headers=bearer(secret)
    )

    assert response.status_code == 200
    assert response.json["created_by"] == "deployer"
    assert stored(client, bearer(secret))[0]["uuid"] == "first"


def test_cli_token_create_with_read_scope_can_only_read(client, runner):
    secret = cli_secret(runner, "viewer", "--scope", "read")

    assert client.get("/trainings", headers=bearer(secret)).status_code == 200
    response = call(client, "POST", "/trainings", bearer(secret))
    assert response.status_code == 403
    assert "write scope" in response.json["message"]
    assert client.get("/trainings/count", headers=bearer(secret)).json == 0


def test_cli_token_create_rejects_an_unknown_scope(runner):
    result = runner.invoke(args=["trainings", "token", "create", "boss", "--scope", "admin"])

    assert result.exit_code != 0
    listed = runner.invoke(args=["trainings", "token", "list"]).output
    assert "boss" not in listed


def test_cli_token_list_shows_names_and_scopes_but_never_secrets(app, runner, write_token):
    cli = cli_secret(runner, "viewer", "--scope", "read")

    result = runner.invoke(args=["trainings", "token", "list"])

    assert result.exit_code == 0, result.output
    assert "writer" in result.output
    assert "viewer" in result.output
    assert "read" in result.output
    for secret in (write_token, cli):
        assert secret not in result.output
        assert secret.removeprefix("mt_") not in result.output
        assert hashlib.sha256(secret.encode()).hexdigest() not in result.output
    assert "mt_" not in result.output


def test_cli_token_list_shows_revoked_tokens_as_revoked(runner, write_token):
    assert runner.invoke(args=["trainings", "token", "revoke", "writer"]).exit_code == 0

    result = runner.invoke(args=["trainings", "token", "list"])

    assert result.exit_code == 0
    writer_line = next(line for line in result.output.splitlines() if "writer" in line)
    assert "revoked" in writer_line
    assert write_token not in result.output


def test_cli_token_create_of_an_existing_active_name_fails(client, runner, write_token):
    result = runner.invoke(args=["trainings", "token", "create", "writer"])

    assert result.exit_code != 0
    assert "mt_" not in result.output
    assert client.get("/trainings", headers=bearer(write_token)).status_code == 200
    listed = runner.invoke(args=["trainings", "token", "list"]).output
    assert len([line for line in listed.splitlines() if line.startswith("writer")]) == 1


def test_cli_token_create_may_reuse_the_name_of_a_revoked_token(client, runner, write_token):
    assert runner.invoke(args=["trainings", "token", "revoke", "writer"]).exit_code == 0

    secret = cli_secret(runner, "writer")

    assert secret != write_token
    assert client.get("/trainings", headers=bearer(secret)).status_code == 200
    assert client.get("/trainings", headers=bearer(write_token)).status_code == 403
