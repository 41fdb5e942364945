"""flask --app maia_trainings trainings init-db, run as a real process: where the database goes
(the instance folder, MAIA_DATABASE_URL, the instance's config.py)."""

from __future__ import annotations

import subprocess

from conftest import flask_command, server_env


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
