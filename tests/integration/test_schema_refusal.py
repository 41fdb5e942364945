"""A server or worker node started on a database behind this release's schema refuses to
start, saying how."""

from __future__ import annotations

import subprocess

import pytest
from conftest import flask_command, server_env

from maia_trainings import migrations


@pytest.mark.parametrize("command", [["serve", "--port", "0"], ["worker"]])
def test_a_node_refuses_a_database_behind_the_head_and_names_the_upgrade(
    tmp_path, databases, command
):
    env = server_env(tmp_path / "instance", **databases.settings())
    subprocess.run(
        flask_command("trainings", "db", "upgrade", migrations.FIRST_REVISION),
        env=env,
        check=True,
        capture_output=True,
    )

    result = subprocess.run(
        flask_command("trainings", *command),
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert result.returncode == 1
    assert "run `flask --app maia_trainings trainings db upgrade` first" in result.stderr
    assert "Traceback" not in result.stderr
