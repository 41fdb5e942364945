"""The tests' own server starter: a server that cannot start is reported with its log."""

from __future__ import annotations

import time

import pytest
from conftest import START_TIMEOUT, start_server


def test_a_server_that_exits_at_start_is_reported_with_its_status_and_log(tmp_path):
    instance = tmp_path / "instance"
    instance.mkdir()
    (instance / "server.log").write_text("an earlier start's line\n")
    started = time.monotonic()

    # No SQLAlchemy dialect by that name: the app cannot be made, the server exits at once.
    with pytest.raises(RuntimeError) as failure:
        start_server(instance, token="not-needed", DATABASE_URL="nosuchdialect://host/db")

    message = str(failure.value)
    assert "exited with status 1" in message, message
    assert "Can't load plugin: sqlalchemy.dialects:nosuchdialect" in message, message
    assert str(instance / "server.log") in message
    # Only what this start wrote, and without waiting for /healthz to time out.
    assert "an earlier start's line" not in message
    assert time.monotonic() - started < START_TIMEOUT
