"""`trainings top --once`: one frame of the queue, on a database with trainings in every state."""

from __future__ import annotations

from datetime import timedelta

from helpers import LATER, create, set_columns

from maia_trainings.models import utcnow


def test_top_once_shows_counts_running_progress_and_the_oldest_queued(app, runner, client, auth):
    now = utcnow()
    running = create(client, auth, uuid="running-one", model_name="retail")
    set_columns(
        app,
        running["id"],
        status="running",
        progress=0.5,
        attempts=1,
        started_at=now - timedelta(seconds=75),
        due_at=None,
        lease_owner="node-a:4242:abcdef123456",
    )
    oldest = create(client, auth, uuid="waiting-longest")
    set_columns(app, oldest["id"], due_at=now - timedelta(minutes=10))
    newer = create(client, auth, uuid="waiting-less")
    for status in ("succeeded", "failed", "failed"):
        set_columns(app, create(client, auth)["id"], status=status)
    create(client, auth, scheduled_at=LATER)
    client.post(f"/trainings/{create(client, auth)['id']}/cancel", headers=auth)

    result = runner.invoke(args=["trainings", "top", "--once"], env={"COLUMNS": "160"})

    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    header = next(i for i, line in enumerate(lines) if line.split()[:2] == ["scheduled", "queued"])
    assert lines[header].split() == [
        "scheduled",
        "queued",
        "running",
        "succeeded",
        "failed",
        "cancelled",
    ]
    assert lines[header + 1].split() == ["1", "2", "1", "1", "2", "1"]
    row = next(line for line in lines if "running-one" in line)
    assert "50%" in row
    assert "retail" in row
    assert "node-a" in row
    assert "1m15s" in row
    assert "running (1)" in result.output
    assert "oldest queued (2)" in result.output
    # The oldest due first, with how long it has waited.
    first, second = (
        next(i for i, line in enumerate(lines) if uuid in line)
        for uuid in ("waiting-longest", "waiting-less")
    )
    assert first < second
    assert "10m0" in lines[first]
    assert newer["id"] != oldest["id"]


def test_top_refuses_a_silly_interval(runner):
    result = runner.invoke(args=["trainings", "top", "--interval", "0"])
    assert result.exit_code == 2
    assert "--interval" in result.output
