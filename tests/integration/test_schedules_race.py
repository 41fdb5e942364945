"""Schedules across processes: two real processes firing the same schedules over one database
(an SQLite file, a PostgreSQL schema) make each fire's training once and account for every
fire once; and the run-pending command makes and runs a due schedule's training."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from conftest import TESTS, build_app_at, server_env

from maia_trainings import db, schedules
from maia_trainings.cron import Cron
from maia_trainings.models import Training, utcnow

PROCESSES = 2
STEPS = 150
START = datetime(2026, 10, 24, 23, 0, tzinfo=UTC)  # the clocks go back in Madrid that night

# Each process: wait for "go", then fire at each of the same injected times, in order.
SCRIPT = """
import json, sys, time
from datetime import datetime
from pathlib import Path
from maia_trainings import create_app, db, schedules

url, folder, me = sys.argv[1], Path(sys.argv[2]), sys.argv[3]
app = create_app({"TESTING": True, "DATABASE_URL": url})
times = [datetime.fromisoformat(t) for t in json.loads((folder / "times.json").read_text())]
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.001)
moved_on = 0
with db.database(app).session() as session:
    for now in times:
        moved_on += sum(f.moved_on for f in schedules.fire_due(session, now=now))
db.database(app).dispose()
print(json.dumps({"moved_on": moved_on}))
"""

# (name, cron, timezone): a fire a minute, a coarser one, and one on Madrid's wall clock.
SCHEDULES = (
    ("minutely", "* * * * *", "UTC"),
    ("every-3", "*/3 * * * *", "UTC"),
    ("madrid", "*/5 * * * *", "Europe/Madrid"),
)


def injected_times() -> list[datetime]:
    """Times a minute or a few apart (some fires coalesce), with seconds past the minute."""
    rng = random.Random(20261202)
    now, times = START, []
    for _ in range(STEPS):
        now += timedelta(minutes=rng.choice((1, 1, 1, 2, 4)), seconds=rng.randint(0, 20))
        times.append(now)
    return times


def fires_between(cron: Cron, first: datetime, last: datetime) -> list[datetime]:
    found, moment = [], cron.next_after(first)
    while moment is not None and moment <= last:
        found.append(moment)
        moment = cron.next_after(moment)
    return found


def test_two_processes_never_make_the_same_fire_twice(tmp_path, databases):
    instance = tmp_path / "instance"
    url = databases.url(tmp_path)
    app = build_app_at(url, instance)
    with db.database(app).session() as session:
        ids = {
            name: schedules.create_schedule(
                session,
                schedules.load_schedule({"name": name, "cron": cron, "timezone": zone}),
                actor="test",
                now=START,
            ).id
            for name, cron, zone in SCHEDULES
        }
    times = injected_times()
    (tmp_path / "times.json").write_text(json.dumps([t.isoformat() for t in times]))
    env = server_env(instance)
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, url, str(tmp_path), str(n)],
            env=env,
            cwd=TESTS,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for n in range(PROCESSES)
    ]
    deadline = time.monotonic() + 60
    while not all((tmp_path / f"ready-{n}").exists() for n in range(PROCESSES)):
        assert all(p.poll() is None for p in processes), [p.communicate() for p in processes]
        assert time.monotonic() < deadline
        time.sleep(0.01)
    (tmp_path / "go").touch()  # both start firing together
    outputs = [p.communicate(timeout=120) for p in processes]
    assert [p.returncode for p in processes] == [0] * PROCESSES, outputs
    moved_on = sum(json.loads(out)["moved_on"] for out, _err in outputs)

    made_windows = 0
    with db.database(app).session() as session:
        for name, cron_text, zone in SCHEDULES:
            cron = Cron(cron_text, zone)
            made = [t.uuid for t in session.query(Training).filter_by(schedule_id=ids[name]).all()]
            # Each look at a time makes the training of its latest fire, and only that one.
            latest = {
                schedules.fire_uuid(name, fires_between(cron, START, now)[-1])
                for now in times
                if fires_between(cron, START, now)
            }
            assert sorted(made) == sorted(latest), name
            # Every fire is accounted for once: a training, or missed.
            stored = schedules.get_schedule(session, ids[name])
            all_fires = fires_between(cron, START, times[-1])
            assert len(made) + stored.missed_fires == len(all_fires), name
            assert stored.next_fire_at == cron.next_after(times[-1])
            made_windows += len(made)
    # Each catch-up moved its schedule on once, whichever process did it.
    assert moved_on == made_windows
    db.database(app).dispose()


def test_run_pending_makes_and_runs_a_due_schedules_training(app, runner, instance_path: Path):
    with db.database(app).session() as session:
        made = schedules.create_schedule(
            session,
            schedules.load_schedule({"name": "hourly", "cron": "@hourly"}),
            actor="test",
            now=utcnow() - timedelta(hours=3),
        )
    result = runner.invoke(args=["trainings", "run-pending"])
    assert result.exit_code == 0, result.output
    assert "1 trainings run: 1 succeeded" in result.output
    with db.database(app).session() as session:
        [training] = session.query(Training).filter_by(schedule_id=made.id).all()
        stored = schedules.get_schedule(session, made.id)
    assert training.status == "succeeded"
    assert training.uuid.startswith("hourly@")
    assert stored.last_training_id == training.id
    assert stored.missed_fires == 2  # three hours down: the latest fire ran, two were coalesced
    assert stored.next_fire_at > utcnow()
