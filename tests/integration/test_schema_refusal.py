"""A server started on a database behind this release's schema refuses to start, saying how."""

from __future__ import annotations

import sqlite3
import subprocess

from conftest import flask_command, server_env


def test_serve_refuses_a_database_behind_the_head_and_names_the_upgrade(tmp_path):
    instance = tmp_path / "instance"
    env = server_env(instance)
    subprocess.run(flask_command("trainings", "init-db"), env=env, check=True, capture_output=True)
    with sqlite3.connect(instance / "trainings.sqlite3") as connection:
        connection.execute("DROP TABLE alembic_version")  # as the first release left it

    result = subprocess.run(
        flask_command("trainings", "serve", "--port", "0"),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "run `flask --app maia_trainings trainings db upgrade` first" in result.stderr
