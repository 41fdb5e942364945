"""The operator's commands, invoked in-process: flask --app maia_trainings trainings …

Where the commands put the database, run as real processes, is in
tests/integration/test_cli_init_db.py."""

from __future__ import annotations

import json

import pytest
from helpers import create


def test_token_create_if_missing_makes_local_once(runner, client):
    first = runner.invoke(args=["trainings", "token", "create", "local", "--if-missing"])
    assert first.exit_code == 0
    secret = first.output.strip().splitlines()[-1]
    assert (
        client.get("/trainings", headers={"Authorization": f"Bearer {secret}"}).status_code == 200
    )

    second = runner.invoke(args=["trainings", "token", "create", "local", "--if-missing"])
    assert second.exit_code == 0
    assert secret not in second.output
    assert "token create NAME" in second.output


def test_token_revoke_of_unknown_name_fails(runner):
    result = runner.invoke(args=["trainings", "token", "revoke", "nobody"])
    assert result.exit_code != 0
    assert "nobody" in result.output


def test_list_shows_a_table_newest_first(runner, client, auth):
    create(client, auth, uuid="first", version="1")
    create(client, auth, uuid="second", version="2")

    result = runner.invoke(args=["trainings", "list"])

    assert result.exit_code == 0
    lines = result.output.splitlines()
    assert lines[0].split() == [
        "id",
        "uuid",
        "status",
        "version",
        "accuracy",
        "attempts",
        "created_at",
    ]
    assert lines[1].split()[:4] == ["2", "second", "queued", "2"]
    assert lines[2].split()[:4] == ["1", "first", "queued", "1"]


def test_list_filters_by_status_and_prints_json(runner, client, auth):
    create(client, auth, uuid="now")
    create(client, auth, uuid="later", scheduled_at="2999-01-01T00:00:00Z")

    result = runner.invoke(args=["trainings", "list", "--status", "scheduled", "--json"])

    assert result.exit_code == 0
    assert [t["uuid"] for t in json.loads(result.output)] == ["later"]


def test_list_rejects_an_unknown_status(runner):
    result = runner.invoke(args=["trainings", "list", "--status", "done"])
    assert result.exit_code != 0


def test_show_prints_the_api_representation(runner, client, auth):
    created = create(client, auth, uuid="shown", meta="hello")

    result = runner.invoke(args=["trainings", "show", created["id"]])

    assert result.exit_code == 0
    assert json.loads(result.output) == client.get(f"/trainings/{created['id']}", headers=auth).json


def test_show_of_unknown_id_fails(runner):
    result = runner.invoke(args=["trainings", "show", "42"])
    assert result.exit_code != 0
    assert "no training with id 42" in result.output


@pytest.mark.postgresql_only("SQLite's backup has its own tests")
def test_backup_of_a_postgresql_database_says_to_use_pg_dump(runner, tmp_path):
    target = tmp_path / "copy.sqlite3"

    result = runner.invoke(args=["trainings", "backup", str(target)])

    assert result.exit_code == 1
    assert "pg_dump" in result.output
    assert "Traceback" not in result.output
    assert not target.exists()
