"""Running trainings for real: the run-pending command, child processes, outcomes and logs.

What run-pending decides before anything runs is in tests/unit/test_run_pending.py."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import signal
import sqlite3
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import SAMPLE_TRAINER, flask_command, server_env
from helpers import create, fetch, run_pending, summary
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError
from sqlalchemy.pool import NullPool

from maia_trainings.fields import format_timestamp
from maia_trainings.models import utcnow

SAMPLE_METRICS = {"accuracy": 0.9, "precission": 0.8, "mae": 0.1, "rmse": 0.2}
DEMO_TRAINER = "maia_trainings.trainers.demo:train"


@pytest.fixture(autouse=True)
def sample_trainer(app):
    app.config["TRAINER"] = SAMPLE_TRAINER
    app.config["RETRY_DELAY"] = 0.1
    return app


def fetch_log(client, auth, training_id):
    response = client.get(f"/trainings/{training_id}/log", headers=auth)
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    return response.get_data(as_text=True)


def models_dir(app):
    return Path(app.config["MODELS_DIR"])


def files_under(folder):
    return sorted(p for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


# Success -----------------------------------------------------------------------------------


def test_run_pending_runs_every_queued_training_and_records_the_outcome(app, runner, client, auth):
    default = create(client, auth)
    chosen = create(client, auth, binaryPath="chosen/dir/scoring.bin")
    third = create(client, auth, meta={"action": "steps", "steps": 2, "seconds": 0.1})

    result, _ = run_pending(runner)

    assert result.exit_code == 0, result.output
    assert summary(result) == (3, 3, 0, 0, 0)
    for created in (default, chosen, third):
        body = fetch(client, auth, created["id"])
        assert body["status"] == "succeeded"
        assert {name: body[name] for name in SAMPLE_METRICS} == SAMPLE_METRICS
        assert body["metrics"] == {"auc": 0.7}
        assert body["attempts"] == 1
        assert body["progress"] == 1.0
        assert body["error"] is None
        for moment in ("started_at", "finished_at", "published_at"):
            assert body[moment] is not None, moment
        assert created["created_at"] <= body["started_at"] <= body["finished_at"]
        assert body["published_at"] <= body["finished_at"]
        model = models_dir(app) / body["binaryPath"]
        assert json.loads(model.read_text()) == {"trained": created["id"]}

    assert fetch(client, auth, default["id"])["binaryPath"] == f"{default['uuid']}/model.bin"
    assert fetch(client, auth, chosen["id"])["binaryPath"] == "chosen/dir/scoring.bin"
    # Nothing but the published models is left behind (no partial files).
    assert len(files_under(models_dir(app))) == 3


def test_a_version_is_the_clients_else_the_trainers_else_the_next_number(runner, client, auth):
    automatic = create(client, auth)
    from_trainer = create(client, auth, meta={"trainer_version": "2026.11-b"})
    from_client = create(client, auth, version="c1", meta={"trainer_version": "ignored"})
    emptied = create(client, auth, version="", meta={"trainer_version": "t-9"})
    second_automatic = create(client, auth)

    result, _ = run_pending(runner, "--workers", "1")  # in the order made
    assert result.exit_code == 0, result.output

    versions = [
        fetch(client, auth, training["id"])["version"]
        for training in (automatic, from_trainer, from_client, emptied, second_automatic)
    ]
    # Automatic numbers count only the trainings that got one.
    assert versions == ["1", "2026.11-b", "c1", "t-9", "2"]


def test_run_pending_prints_a_line_per_finished_training_and_a_summary(app, runner, client, auth):
    app.config["MAX_ATTEMPTS"] = 2
    ok = create(client, auth)
    bad = create(client, auth, meta={"action": "raise"})
    died = create(client, auth, meta={"action": "exit"})

    result, _ = run_pending(runner, "--workers", "1")

    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    # One line per training, not per attempt (the retried one is reported when it ended).
    assert sorted(lines[:-1]) == sorted(
        [
            f"training {ok['id']} ({ok['uuid']}): succeeded",
            f"training {bad['id']} ({bad['uuid']}): failed",
            f"training {died['id']} ({died['uuid']}): failed",
        ]
    )
    assert summary(result) == (3, 1, 2, 0, 0)


def test_limit_runs_only_that_many(runner, client, auth):
    ids = [create(client, auth)["id"] for _ in range(5)]

    result, _ = run_pending(runner, "--limit", "2")

    assert result.exit_code == 0
    assert summary(result) == (2, 2, 0, 0, 0)
    statuses = [fetch(client, auth, training_id)["status"] for training_id in ids]
    assert statuses == ["succeeded"] * 2 + ["queued"] * 3


def test_limit_counts_trainings_not_attempts(runner, client, auth):
    """A training the limit let in is waited for through its retries, as without a limit."""
    retried = create(client, auth, meta={"action": "retry_until", "until": 2})
    other = create(client, auth)

    result, _ = run_pending(runner, "--limit", "1")

    body = fetch(client, auth, retried["id"])
    assert (result.exit_code, body["status"], body["attempts"]) == (0, "succeeded", 2)
    assert fetch(client, auth, other["id"])["status"] == "queued"


def test_one_worker_still_runs_them_all(runner, client, auth):
    ids = [create(client, auth)["id"] for _ in range(3)]

    result, _ = run_pending(runner, "--workers", "1")

    assert result.exit_code == 0
    assert summary(result) == (3, 3, 0, 0, 0)
    runs = [fetch(client, auth, training_id) for training_id in ids]
    assert all(run["status"] == "succeeded" for run in runs)
    # One at a time: each started after the one before it finished.
    for before, after in itertools.pairwise(runs):
        assert before["finished_at"] <= after["started_at"]


# Failure -----------------------------------------------------------------------------------


def test_an_exception_fails_at_once_with_its_message_and_traceback(runner, client, auth):
    created = create(client, auth, meta={"action": "raise"})

    result, _ = run_pending(runner)

    assert result.exit_code == 1
    body = fetch(client, auth, created["id"])
    assert body["status"] == "failed"
    assert body["attempts"] == 1
    assert body["error"] == "ValueError: the data has no target column"
    assert body["finished_at"] is not None
    assert body["binaryPath"] is None
    log = fetch_log(client, auth, created["id"])
    assert "Traceback (most recent call last)" in log
    assert 'raise ValueError("the data has no target column")' in log
    assert "ValueError: the data has no target column" in log


@pytest.mark.parametrize(
    ("action", "reason"),
    [
        ("exit", "the training process exited with status 3 without a result"),
        ("abort", "the training process was killed by SIGABRT"),
    ],
)
def test_a_dying_process_is_retried_then_failed(app, runner, client, auth, action, reason):
    app.config["MAX_ATTEMPTS"] = 2
    created = create(client, auth, meta={"action": action})

    result, _ = run_pending(runner)

    assert result.exit_code == 1
    assert summary(result) == (1, 0, 1, 0, 0)
    body = fetch(client, auth, created["id"])
    assert body["status"] == "failed"
    assert body["attempts"] == 2
    assert reason in body["error"]
    assert "after 2 attempts" in body["error"]


def test_retry_then_success(runner, client, auth):
    created = create(client, auth, meta={"action": "retry_until", "until": 2})

    result, _ = run_pending(runner)

    assert result.exit_code == 0, result.output
    assert summary(result) == (1, 1, 0, 0, 0)
    body = fetch(client, auth, created["id"])
    assert body["status"] == "succeeded"
    assert body["attempts"] == 2
    assert body["error"] is None
    assert body["accuracy"] == 0.9


def test_retry_asked_every_time_fails_after_max_attempts(app, runner, client, auth):
    app.config["MAX_ATTEMPTS"] = 3
    created = create(client, auth, meta={"action": "retry"})

    result, elapsed = run_pending(runner)

    assert result.exit_code == 1
    body = fetch(client, auth, created["id"])
    assert body["status"] == "failed"
    assert body["attempts"] == 3
    assert body["error"] == "the data source is unavailable (after 3 attempts)"
    # It waited out the back-offs: 0.1 s, then 0.2 s.
    assert elapsed >= 0.3


def test_timeout_fails_the_training(runner, client, auth):
    created = create(client, auth, meta={"max_runtime": 1, "seconds": 30})

    result, elapsed = run_pending(runner)

    assert result.exit_code == 1
    assert elapsed < 10
    body = fetch(client, auth, created["id"])
    assert body["status"] == "failed"
    assert body["attempts"] == 1
    assert "timed out" in body["error"]


def test_a_failed_run_leaves_no_model_file(app, runner, client, auth):
    created = create(client, auth, meta={"action": "write_then_raise"})

    result, _ = run_pending(runner)

    assert result.exit_code == 1
    body = fetch(client, auth, created["id"])
    assert body["status"] == "failed"
    assert body["error"] == "RuntimeError: failed while saving"
    assert body["binaryPath"] is None
    assert body["published_at"] is None
    folder = models_dir(app) / created["uuid"]
    assert not folder.exists() or list(folder.iterdir()) == []  # no partial, no final file
    assert files_under(models_dir(app)) == []


def test_a_training_cancelled_while_it_runs_is_stopped(app, runner, client, auth, tmp_path):
    app.config["HEARTBEAT_INTERVAL"] = 0.1
    record = tmp_path / "record.jsonl"
    created = create(client, auth, meta={"seconds": 30, "record": str(record)})
    cancelled = []

    def cancel_once_started():
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if record.exists() and record.read_text():
                response = client.post(f"/trainings/{created['id']}/cancel", headers=auth)
                cancelled.append(response.status_code)
                return
            time.sleep(0.02)

    canceller = threading.Thread(target=cancel_once_started)
    canceller.start()
    result, elapsed = run_pending(runner)
    canceller.join()

    assert cancelled == [200]
    assert elapsed < 10  # stopped, not waited for
    assert result.exit_code == 0
    assert f"training {created['id']} ({created['uuid']}): cancelled" in result.stdout
    assert summary(result) == (1, 0, 0, 0, 1)
    body = fetch(client, auth, created["id"])
    assert body["status"] == "cancelled"
    assert body["binaryPath"] is None
    events = [json.loads(line)["event"] for line in record.read_text().splitlines()]
    assert events == ["start"]  # it never got to its end
    assert files_under(models_dir(app)) == []


# Logs --------------------------------------------------------------------------------------


def test_the_log_keeps_stdout_stderr_and_the_trainers_lines(runner, client, auth):
    created = create(client, auth, meta={"action": "steps", "steps": 2, "seconds": 0.1})

    run_pending(runner)

    log = fetch_log(client, auth, created["id"])
    training_id = created["id"]
    assert f"stdout line from training {training_id}\n" in log
    assert f"stderr line from training {training_id}\n" in log
    assert "action steps" in log
    assert "step 1 of 2" in log
    assert "step 2 of 2" in log


def test_the_log_is_bounded_keeping_its_beginning_and_its_end(app, runner, client, auth):
    app.config["LOG_LIMIT"] = 8192
    created = create(client, auth, meta={"action": "noisy", "lines": 20000})

    result, _ = run_pending(runner)

    assert result.exit_code == 0
    log = fetch_log(client, auth, created["id"])
    assert len(log.encode()) <= 8192 + 100
    assert log.startswith(f"stdout line from training {created['id']}\n")
    assert "noise line 000000" in log
    last_lines = log.rstrip("\n").splitlines()[-2:]
    assert last_lines[0] == "noise line 019999 " + "x" * 60
    assert "peak memory" in last_lines[1]  # the run's own last word: what it used
    marker = log.index("omitted")
    assert log.index("noise line 000000") < marker < log.index("noise line 019999")


# Scheduled trainings -----------------------------------------------------------------------


def test_include_scheduled_waits_for_a_training_due_soon(runner, client, auth):
    at = format_timestamp(utcnow() + timedelta(seconds=1))
    created = create(client, auth, scheduled_at=at)
    assert created["status"] == "scheduled"

    result, elapsed = run_pending(runner, "--include-scheduled", "3")

    assert result.exit_code == 0, result.output
    assert summary(result) == (1, 1, 0, 0, 0)
    body = fetch(client, auth, created["id"])
    assert body["status"] == "succeeded"
    assert body["started_at"] >= at
    assert elapsed < 5


# The built-in demo trainer -----------------------------------------------------------------


def test_demo_trainer_produces_a_json_model_and_sane_metrics(app, runner, client, auth):
    app.config["TRAINER"] = DEMO_TRAINER
    meta = {"rows": 500, "seed": 7}
    first = create(client, auth, meta=meta)
    second = create(client, auth, meta=meta)
    other = create(client, auth, meta={"rows": 500, "seed": 8})

    result, _ = run_pending(runner)

    assert result.exit_code == 0, result.output
    runs = [fetch(client, auth, created["id"]) for created in (first, second, other)]
    for created, body in zip((first, second, other), runs, strict=True):
        assert body["status"] == "succeeded"
        assert 0 <= body["accuracy"] <= 1
        assert 0 <= body["precission"] <= 1
        assert body["mae"] >= 0
        assert body["rmse"] >= 0
        assert body["metrics"]["n_train"] == 400
        assert body["metrics"]["n_test"] == 100
        assert body["binaryPath"] == f"{created['uuid']}/model.json"
        model = json.loads((models_dir(app) / body["binaryPath"]).read_text())
        assert set(model) == {"features", "weights", "bias", "threshold"}
        assert "generated 500 loans" in fetch_log(client, auth, created["id"])

    figures = ("accuracy", "precission", "mae", "rmse", "metrics")
    assert [runs[0][f] for f in figures] == [runs[1][f] for f in figures]
    assert (models_dir(app) / runs[0]["binaryPath"]).read_text() == (
        models_dir(app) / runs[1]["binaryPath"]
    ).read_text()
    assert [runs[0][f] for f in figures] != [runs[2][f] for f in figures]


# Trainers returning what the service refuses ----------------------------------------------


@pytest.mark.parametrize(
    ("trainer", "error"),
    [
        ("unknown_key", "unknown keys: loss"),
        ("accuracy_above_one", "accuracy is out of range: 1.5"),
        ("negative_precission", "precission is out of range: -0.1"),
        ("negative_mae", "mae is out of range: -1.0"),
        ("infinite_rmse", "rmse is out of range: inf"),
        ("nan_accuracy", "accuracy is out of range: nan"),
        ("not_a_mapping", "must return a mapping, not list"),
    ],
)
def test_a_bad_result_fails_the_training_with_a_clear_error(
    app, runner, client, auth, trainer, error
):
    app.config["TRAINER"] = f"bad_trainers:{trainer}"
    created = create(client, auth)

    result, _ = run_pending(runner)

    assert result.exit_code == 1
    body = fetch(client, auth, created["id"])
    assert body["status"] == "failed"
    assert body["attempts"] == 1
    assert error in body["error"]
    for name in ("accuracy", "precission", "mae", "rmse", "binaryPath", "metrics"):
        assert body[name] is None, name
    assert files_under(models_dir(app)) == []


@pytest.mark.parametrize(
    ("trainer", "field"), [("metrics_not_an_object", "metrics"), ("non_numeric_mae", "mae")]
)
def test_a_badly_typed_result_names_the_offending_field(app, runner, client, auth, trainer, field):
    app.config["TRAINER"] = f"bad_trainers:{trainer}"
    created = create(client, auth)

    result, _ = run_pending(runner)

    assert result.exit_code == 1
    body = fetch(client, auth, created["id"])
    assert body["status"] == "failed"
    assert field in body["error"]


# Stopping run-pending from outside ---------------------------------------------------------


def start_run_pending(app, instance_path, **settings):
    """run-pending in its own process, on the app's database."""
    env = server_env(
        instance_path,
        DATABASE_URL=app.config["DATABASE_URL"],
        MODELS_DIR=app.config["MODELS_DIR"],
        TRAINER=SAMPLE_TRAINER,
        **settings,
    )
    return subprocess.Popen(
        flask_command("trainings", "run-pending"),
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


def trainer_pid(record, process, timeout=20):
    """The pid of the trainer process once it has started (from its record file)."""
    deadline = time.monotonic() + timeout
    while not (record.exists() and record.read_text()):
        assert process.poll() is None, process.stdout.read().decode()
        assert time.monotonic() < deadline, "the training never started"
        time.sleep(0.02)
    return json.loads(record.read_text().splitlines()[0])["pid"]


def is_alive(pid):
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        # The process went between the open and the read: reaped, so not alive.
        return False
    return state not in ("Z", "X")


def stop_leftovers(process, pid):
    """End what a test started: the command, and a trainer that outlived it."""
    if process.poll() is None:
        process.kill()
        process.wait()
    process.stdout.close()
    if pid is not None and is_alive(pid):
        os.kill(pid, signal.SIGKILL)


def test_sigterm_puts_the_running_training_back_in_the_queue(
    app, client, auth, instance_path, tmp_path
):
    """The documented shutdown: on SIGTERM runs get SHUTDOWN_GRACE seconds, then go back to
    the queue without spending an attempt, and run-pending exits 1."""
    record = tmp_path / "record.jsonl"
    created = create(client, auth, meta={"seconds": 30, "record": str(record)})
    process = start_run_pending(app, instance_path, SHUTDOWN_GRACE="0.5")
    pid = None
    try:
        pid = trainer_pid(record, process)
        time.sleep(0.2)  # past the child's "started" message
        process.send_signal(signal.SIGTERM)
        returncode = process.wait(timeout=20)
    finally:
        stop_leftovers(process, pid)

    body = fetch(client, auth, created["id"])
    assert (returncode, body["status"], body["attempts"]) == (1, "queued", 0)


def test_killing_run_pending_stops_its_training(app, client, auth, instance_path, tmp_path):
    """children._die_with_supervisor: a run must not outlive the process that supervises it, or a
    restarted service would run the training again beside it (and nothing enforces
    MAX_RUNTIME on it any more)."""
    record = tmp_path / "record.jsonl"
    create(client, auth, meta={"seconds": 30, "record": str(record)})
    process = start_run_pending(app, instance_path)
    pid = None
    try:
        pid = trainer_pid(record, process)
        process.kill()
        process.wait(timeout=20)
        deadline = time.monotonic() + 3
        while is_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        outlived = is_alive(pid)
    finally:
        stop_leftovers(process, pid)

    assert not outlived, "the trainer kept running after run-pending was killed"


def stop_between_writes(process, url, training_id):
    """SIGSTOP ``process`` at a moment it holds no write lock (between two heartbeats): stopped
    in the middle of a write it would block every other process (SQLite's one writer,
    PostgreSQL's row lock), a stall of another kind than the lease's."""
    for _ in range(100):
        process.send_signal(signal.SIGSTOP)
        if row_is_free(url, training_id):
            return
        process.send_signal(signal.SIGCONT)
        time.sleep(0.03)
    raise AssertionError("the process could not be stopped between two writes")


def row_is_free(url, training_id):
    """Whether another process could write the training's row now (within 0.2 s)."""
    if url.startswith("sqlite:///"):
        connection = sqlite3.connect(url.removeprefix("sqlite:///"), timeout=0.2)
        try:
            connection.execute("BEGIN IMMEDIATE")
            connection.rollback()
            return True
        except sqlite3.OperationalError:
            return False
        finally:
            connection.close()
    engine = create_engine(url, poolclass=NullPool)
    try:
        with engine.begin() as connection:
            connection.exec_driver_sql("SET LOCAL lock_timeout = '200ms'")
            connection.execute(
                text("SELECT id FROM trainings WHERE id = :id FOR UPDATE"), {"id": int(training_id)}
            )
        return True
    except OperationalError:
        return False
    finally:
        engine.dispose()


def test_a_run_pending_stalled_past_its_lease_loses_its_training_and_says_so(
    app, client, auth, instance_path, tmp_path
):
    """A process that stalls past LEASE_SECONDS (a paused VM; SIGSTOP here) loses its training
    to the next claimer. When it wakes it must neither publish its file over the new run's
    (both write the same binaryPath) nor report a success or a cancel, and it exits 1."""
    record = tmp_path / "record.jsonl"
    created = create(client, auth, meta={"seconds": 1, "record": str(record)})
    lease = {"LEASE_SECONDS": "1", "HEARTBEAT_INTERVAL": "0.2", "RETRY_DELAY": "0"}
    stalled = start_run_pending(app, instance_path, **lease)
    pid = None
    try:
        pid = trainer_pid(record, stalled)
        stop_between_writes(stalled, app.config["DATABASE_URL"], created["id"])
        time.sleep(1.5)  # its lease runs out; its trainer goes on and ends meanwhile
        taker = start_run_pending(app, instance_path, **lease)
        taken_output = taker.communicate(timeout=60)[0].decode()
        stalled.send_signal(signal.SIGCONT)
        stalled_output = stalled.communicate(timeout=60)[0].decode()
    finally:
        stalled.send_signal(signal.SIGCONT)
        stop_leftovers(stalled, pid)

    assert taker.returncode == 0, taken_output
    assert stalled.returncode == 1, stalled_output
    lines = stalled_output.strip().splitlines()
    assert f"training {created['id']} ({created['uuid']}): taken over" in stalled_output
    assert lines[-1] == "1 trainings run: 0 succeeded, 0 failed, 1 back in the queue, 0 cancelled."
    body = fetch(client, auth, created["id"])
    assert (body["status"], body["attempts"]) == ("succeeded", 2)
    # The taker's model file is where the training says, whole: the stalled run's did not
    # replace it, nor remove it.
    published = models_dir(app) / body["binaryPath"]
    assert hashlib.sha256(published.read_bytes()).hexdigest() == body["binarySha256"]
    response = client.get(f"/trainings/{created['id']}/binary", headers=auth)
    assert response.status_code == 200
