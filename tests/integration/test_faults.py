"""Faults of the box: a full disk, read-only storage, a models folder that cannot take a file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from conftest import build_app, make_token
from helpers import count, create

from maia_trainings import db


def _mount(point: Path, *options: str) -> None:
    subprocess.run(["mount", *options, point], check=True, capture_output=True)


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """Mount small tmpfs file systems (root only): ``small_disk("2m")`` gives a fresh one."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs to fill needs root; these faults are tested as root")
    mounted: list[Path] = []

    def mount(size: str) -> Path:
        point = tmp_path / f"disk-{len(mounted)}"
        point.mkdir()
        try:
            _mount(point, "-t", "tmpfs", "-o", f"size={size}", "tmpfs")
        except subprocess.CalledProcessError as exc:
            pytest.skip(f"cannot mount a tmpfs here: {exc.stderr.decode().strip()}")
        mounted.append(point)
        return point

    yield mount
    for point in mounted:
        subprocess.run(["umount", "-l", point], check=False)


def _fill(folder: Path) -> Path:
    """Write a file until the file system is full; returns it (delete it to free the space)."""
    filler = folder / "filler"
    with filler.open("wb") as file:
        try:
            while True:
                file.write(b"\0" * 65536)
                file.flush()
        except OSError:
            pass
    return filler


def _integrity(database: Path) -> str:
    with sqlite3.connect(database) as connection:
        return connection.execute("PRAGMA integrity_check").fetchone()[0]


def _assert_unavailable(response) -> None:
    assert response.status_code == 503, response.data
    assert response.json["code"] == 503
    assert "nothing was changed" in response.json["message"]
    assert response.headers["Retry-After"]


def test_a_full_disk_refuses_writes_keeps_reads_and_recovers(small_disk, instance_path):
    disk = small_disk("2m")
    database = disk / "trainings.sqlite3"
    app = build_app(database, instance_path)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(app, 'writer')}"}
    first = create(client, auth, uuid="before-the-disk-filled", meta="x" * 1000)

    filler = _fill(disk)
    acknowledged = []
    refused = None
    for n in range(400):  # the WAL may still have room for a few rows
        response = client.post(
            "/trainings", json={"uuid": f"u{n}", "meta": "y" * 60000}, headers=auth
        )
        if response.status_code != 200:
            refused = response
            break
        acknowledged.append(response.json["id"])
    assert refused is not None, "the disk never filled"
    _assert_unavailable(refused)

    # Reads go on, and every acknowledged training is there whole.
    listed = client.get("/trainings?_limit=-1", headers=auth)
    assert listed.status_code == 200
    assert [t["id"] for t in listed.json] == [first["id"], *acknowledged]
    assert client.get(f"/trainings/{first['id']}", headers=auth).json == first
    _assert_unavailable(
        client.put(f"/trainings/{first['id']}", json={"version": "2"}, headers=auth)
    )
    _assert_unavailable(client.delete(f"/trainings/{first['id']}", headers=auth))
    assert client.get(f"/trainings/{first['id']}", headers=auth).json == first

    filler.unlink()  # space returns: the service recovers by itself
    again = create(client, auth, uuid="after-the-space-returned")
    assert count(client, auth) == len(acknowledged) + 2
    assert again["status"] == "queued"
    db.database(app).dispose()
    assert _integrity(database) == "ok"


def test_a_read_only_database_serves_reads_refuses_writes_and_recovers(small_disk, instance_path):
    disk = small_disk("4m")
    database = disk / "trainings.sqlite3"
    app = build_app(database, instance_path)
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(app, 'writer')}"}
    kept = [create(client, auth, uuid=f"kept-{n}", version=str(n)) for n in range(3)]
    # The service is (re)started on storage that has become read-only.
    db.database(app).dispose()
    _mount(disk, "-o", "remount,ro")

    assert client.get("/trainings", headers=auth).json == kept
    assert client.get("/trainings/count?version_gte=1", headers=auth).json == 2
    assert client.get("/healthz").status_code == 200
    _assert_unavailable(client.post("/trainings", json={"uuid": "refused"}, headers=auth))
    _assert_unavailable(client.post(f"/trainings/{kept[0]['id']}/cancel", headers=auth))

    _mount(disk, "-o", "remount,rw")
    create(client, auth, uuid="after-remount")
    assert count(client, auth) == 4
    db.database(app).dispose()
    assert _integrity(database) == "ok"


def _run_pending(app) -> tuple[int, str]:
    result = app.test_cli_runner().invoke(args=["trainings", "run-pending"])
    return result.exit_code, result.output


def test_a_full_models_folder_fails_the_training_and_leaves_no_file(small_disk, instance_path):
    models = small_disk("256k")
    app = build_app(instance_path / "t.sqlite3", instance_path, MODELS_DIR=str(models))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(app, 'writer')}"}
    training = create(client, auth, meta={"model_bytes": 1_000_000})

    exit_code, _output = _run_pending(app)

    assert exit_code == 1
    done = client.get(f"/trainings/{training['id']}", headers=auth).json
    assert done["status"] == "failed"
    assert "No space left on device" in done["error"]
    assert done["binaryPath"] is None
    assert [p for p in models.rglob("*") if p.is_file()] == []


def test_an_unwritable_models_folder_fails_the_training_clearly(small_disk, instance_path):
    models = small_disk("1m")
    _mount(models, "-o", "remount,ro")
    app = build_app(instance_path / "t.sqlite3", instance_path, MODELS_DIR=str(models))
    client = app.test_client()
    auth = {"Authorization": f"Bearer {make_token(app, 'writer')}"}
    training = create(client, auth)

    exit_code, _output = _run_pending(app)

    assert exit_code == 1
    done = client.get(f"/trainings/{training['id']}", headers=auth).json
    assert done["status"] == "failed"
    assert "Read-only file system" in done["error"]
    assert list(models.iterdir()) == []
