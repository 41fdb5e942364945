"""The operator's commands: flask --app maia_trainings trainings …"""

from __future__ import annotations

import json
import subprocess

from conftest import flask_command, server_env
from helpers import create


def test_init_db_creates_the_database_in_the_instance_folder(tmp_path):
    instance = tmp_path / "fresh"
    result = subprocess.run(
        flask_command("trainings", "init-db"),
        env=server_env(instance),
        capture_output=True,
        text=True,
        check=True,
    )
    assert (instance / "trainings.sqlite3").exists()
    assert "trainings.sqlite3" in result.stdout


def test_database_url_setting_overrides_the_default(tmp_path):
    elsewhere = tmp_path / "elsewhere.db"
    env = server_env(tmp_path / "instance", DATABASE_URL=f"sqlite:///{elsewhere}")
    subprocess.run(flask_command("trainings", "init-db"), env=env, check=True, capture_output=True)
    assert elsewhere.exists()
    assert not (tmp_path / "instance" / "trainings.sqlite3").exists()


def test_instance_config_file_is_read(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "config.py").write_text(f"DATABASE_URL = 'sqlite:///{tmp_path / 'cfg.db'}'\n")
    subprocess.run(
        flask_command("trainings", "init-db"),
        env=server_env(instance),
        check=True,
        capture_output=True,
    )
    assert (tmp_path / "cfg.db").exists()


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
