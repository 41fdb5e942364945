"""`trainings backup` copies a live database consistently while the server serves and trains."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import threading
import time
import urllib.request

import pytest
from conftest import flask_command, server_env, start_server, stop_server


@pytest.mark.sqlite_only("copies the SQLite file; PostgreSQL has pg_dump")
def test_a_backup_taken_under_load_restores_every_acknowledged_training(server_factory, tmp_path):
    server = server_factory(POLL_INTERVAL="0.5")
    acknowledged: list[tuple[float, str]] = []  # (when the 200 arrived, id)
    stop = threading.Event()

    def create_continuously() -> None:
        n = 0
        while not stop.is_set() and n < 2000:
            n += 1
            request = urllib.request.Request(
                server.url + "/trainings",
                data=json.dumps({"uuid": f"load-{n}", "meta": {"seconds": 0.02}}).encode(),
                method="POST",
                headers={
                    "Authorization": f"Bearer {server.token}",
                    "Content-Type": "application/json",
                },
            )
            with urllib.request.urlopen(request, timeout=30) as response:
                acknowledged.append((time.time(), json.loads(response.read())["id"]))

    writers = [threading.Thread(target=create_continuously) for _ in range(3)]
    for writer in writers:
        writer.start()
    try:
        time.sleep(1.0)
        backups = []
        for n in range(3):
            started = time.time()
            target = tmp_path / f"backup-{n}.sqlite3"
            result = subprocess.run(
                flask_command("trainings", "backup", str(target)),
                env=server_env(server.instance, **server.settings),
                capture_output=True,
                text=True,
                timeout=60,
                check=True,
            )
            assert str(target) in result.stdout
            backups.append((started, target))
            time.sleep(0.3)
    finally:
        stop.set()
        for writer in writers:
            writer.join()

    for started, target in backups:
        with sqlite3.connect(target) as connection:
            assert connection.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            stored = {str(row[0]) for row in connection.execute("SELECT id FROM trainings")}
        expected = {tid for when, tid in acknowledged if when < started}
        assert expected, "the load had not started"
        assert expected <= stored

    # A restored copy serves: a server on it finds the trainings by id.
    started, target = backups[-1]
    restored = start_server(
        tmp_path / "restored",
        token=server.token,  # the copy holds the same token
        DATABASE_URL=f"sqlite:///{target}",
        SCHEDULER_ENABLED="false",
    )
    try:
        for _when, tid in [a for a in acknowledged if a[0] < started][-20:]:
            assert restored.get(f"/trainings/{tid}")["id"] == tid
    finally:
        stop_server(restored)
