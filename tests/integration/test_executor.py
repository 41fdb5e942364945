"""The executor against a real waitress server: trainings run, once, and end as a user expects.

Every test starts ``flask trainings serve`` in a subprocess with the sample trainer
(``tests/sample_trainers.py``) and talks HTTP to it. The sample trainer appends one JSON line
per start and per end of a run (id, attempt, pid, t) to the file named by the meta's ``record``
key: that file is how the tests see which runs happened, in which process and when.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, flask_command, server_env, stop_server

FINISHED = ("succeeded", "failed", "cancelled")
# How late a scheduled training may start and still be on time, on a server past its first
# run (see warmed_up). The dispatcher wakes at the due time (bench: dispatch p50 about 10 ms);
# the margin is for a slow machine whose other test worker drives a browser meanwhile.
ON_TIME = timedelta(seconds=2.5)
# Seconds within which a training that is due runs to its end "at once": far below the 60 s
# POLL_INTERVAL these servers have, so a run that waited for the poll still fails; the rest is
# room for a loaded machine (a server's first run also starts its fork server).
AT_ONCE = 10
# Settings every test starts from: no help from the periodic poll, short leases, quick stops.
BASE_SETTINGS = {"POLL_INTERVAL": "60", "LEASE_SECONDS": "2", "SHUTDOWN_GRACE": "1"}


# Helpers -----------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float, what: str = "the condition") -> Any:
    """Check ``predicate`` every 0.05 s until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s (last: {value!r})")
        time.sleep(0.05)


@pytest.fixture
def serve(server_factory):
    """Start a server with :data:`BASE_SETTINGS`, overridden by the keyword arguments."""

    def start(**settings: str) -> Server:
        return server_factory(**{**BASE_SETTINGS, **settings})

    return start


def request(
    server: Server, method: str, path: str, body: dict[str, Any] | None = None
) -> tuple[int, str, bytes]:
    """Any request with the server's token; (status, content type, body), errors included."""
    req = urllib.request.Request(
        server.url + path,
        data=None if body is None else json.dumps(body).encode(),
        method=method,
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, response.headers.get("Content-Type", ""), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers.get("Content-Type", ""), exc.read()


def create(server: Server, **fields: Any) -> dict[str, Any]:
    return server.post("/trainings", fields)


def fetch(server: Server, training_id: str) -> dict[str, Any]:
    return server.get(f"/trainings/{training_id}")


def status_is(server: Server, training_id: str, *statuses: str) -> dict[str, Any] | None:
    """The training if its status is one of ``statuses``, else None (for :func:`wait_for`)."""
    training = fetch(server, training_id)
    return training if training["status"] in statuses else None


def wait_finished(server: Server, training_id: str, timeout: float) -> dict[str, Any]:
    return wait_for(
        lambda: status_is(server, training_id, *FINISHED),
        timeout,
        f"training {training_id} finishing",
    )


def records(path: Path) -> list[dict[str, Any]]:
    """The sample trainer's record: one dict per start or end of a run."""
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def events(path: Path, event: str) -> list[dict[str, Any]]:
    return [line for line in records(path) if line["event"] == event]


def parse_time(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie, dead but not yet reaped, does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] not in ("Z", "X")


def healthz(server: Server) -> int:
    with urllib.request.urlopen(server.url + "/healthz", timeout=10) as response:
        return response.status


def run_pending(server: Server, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        flask_command("trainings", "run-pending", *args),
        env=server_env(server.instance, **server.settings),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


# Running promptly --------------------------------------------------------------------------


def test_a_created_training_runs_at_once_without_waiting_for_the_poll(serve):
    server = serve()
    created = create(server, meta={"action": "ok"})
    assert created["status"] == "queued"

    training = wait_finished(server, created["id"], timeout=AT_ONCE)

    assert training["status"] == "succeeded", training
    assert training["attempts"] == 1
    assert training["error"] is None
    assert training["accuracy"] == 0.9
    assert training["precission"] == 0.8
    assert training["mae"] == 0.1
    assert training["rmse"] == 0.2
    assert training["metrics"] == {"auc": 0.7}
    assert training["progress"] == 1
    assert training["started_at"] is not None
    assert training["finished_at"] is not None
    created_at = parse_time(training["created_at"])
    started_at = parse_time(training["started_at"])
    finished_at = parse_time(training["finished_at"])
    assert created_at <= started_at <= finished_at
    assert started_at - created_at < timedelta(seconds=AT_ONCE)
    # The model file was published where binaryPath says, and when published_at says.
    assert training["binaryPath"]
    assert training["published_at"] is not None
    assert started_at <= parse_time(training["published_at"]) <= finished_at
    model = server.instance / "models" / training["binaryPath"]
    assert json.loads(model.read_text()) == {"trained": training["id"]}


def warmed_up(server: Server) -> Server:
    """``server`` after one run: a server's first run starts its fork server (seconds on a slow
    machine), later ones take a child started ahead. "On time" is about the dispatcher."""
    first = create(server, meta={"action": "ok"})
    assert wait_finished(server, first["id"], timeout=30)["status"] == "succeeded"
    return server


def test_a_scheduled_training_waits_for_its_time_then_runs_on_time(serve):
    server = warmed_up(serve())
    scheduled_at = datetime.now(UTC) + timedelta(seconds=2)
    created = create(server, scheduled_at=iso(scheduled_at), meta={"action": "ok"})
    assert created["status"] == "scheduled"
    due = parse_time(created["scheduled_at"])

    # Still waiting shortly before its time.
    wait_for(lambda: datetime.now(UTC) >= due - timedelta(seconds=0.4), 3, "nearly due")
    before = fetch(server, created["id"])
    assert before["status"] == "scheduled"
    assert before["started_at"] is None
    assert before["attempts"] == 0

    training = wait_finished(server, created["id"], timeout=AT_ONCE)
    assert training["status"] == "succeeded", training
    started_at = parse_time(training["started_at"])
    assert started_at >= due
    assert started_at - due <= ON_TIME


def test_schedules_made_in_any_order_each_run_on_time(serve):
    server = warmed_up(serve())
    now = datetime.now(UTC)
    # A later one first, then an earlier one, then (after both ran) another.
    later = create(server, scheduled_at=iso(now + timedelta(seconds=2.5)))
    earlier = create(server, scheduled_at=iso(now + timedelta(seconds=1)))
    for created in (earlier, later):
        training = wait_finished(server, created["id"], timeout=AT_ONCE)
        started = parse_time(training["started_at"])
        assert timedelta(0) <= started - parse_time(created["scheduled_at"]) <= ON_TIME
    last = create(server, scheduled_at=iso(datetime.now(UTC) + timedelta(seconds=1)))
    training = wait_finished(server, last["id"], timeout=AT_ONCE)
    started = parse_time(training["started_at"])
    assert timedelta(0) <= started - parse_time(last["scheduled_at"]) <= ON_TIME


def test_trainings_created_concurrently_each_run_exactly_once(serve, tmp_path):
    server = serve(WORKERS="2")
    record = tmp_path / "record.jsonl"

    def create_one(_n: int) -> str:
        return create(server, meta={"record": str(record)})["id"]

    with ThreadPoolExecutor(16) as pool:
        ids = list(pool.map(create_one, range(200)))
    assert len(set(ids)) == 200

    wait_for(
        lambda: server.get("/trainings/count?status_in=succeeded&status_in=failed") == 200,
        90,
        "all 200 trainings finishing",
    )
    trainings = server.get("/trainings?_limit=-1")
    assert {t["id"] for t in trainings} == set(ids)
    assert {t["status"] for t in trainings} == {"succeeded"}
    assert {t["attempts"] for t in trainings} == {1}

    starts = Counter(str(line["id"]) for line in events(record, "start"))
    ends = Counter(str(line["id"]) for line in events(record, "end"))
    assert set(starts) == set(ids)
    assert set(ends) == set(ids)
    assert set(starts.values()) == {1}
    assert set(ends.values()) == {1}


# Crashes of the service --------------------------------------------------------------------


def test_a_killed_server_recovers_its_runs_without_running_any_twice_at_once(
    serve, server_factory, tmp_path
):
    server = serve(POLL_INTERVAL="0.5", RETRY_DELAY="0.2", WORKERS="2")
    record = tmp_path / "record.jsonl"
    ids = [create(server, meta={"seconds": 1.5, "record": str(record)})["id"] for _ in range(4)]

    started = wait_for(lambda: len(events(record, "start")) == 2, AT_ONCE, "two runs starting")
    assert started
    server.process.send_signal(signal.SIGKILL)
    server.process.wait()
    killed_at = time.time()
    running_at_kill = {str(line["id"]): line for line in events(record, "start")}
    assert len(running_at_kill) == 2

    # The runs die with the server (a run in the old process and one in the new must never
    # overlap); watch for their end while the new server starts.
    died_at: dict[str, float] = {}

    def watch() -> None:
        deadline = time.monotonic() + 10
        while len(died_at) < len(running_at_kill) and time.monotonic() < deadline:
            for tid, line in running_at_kill.items():
                if tid not in died_at and not pid_alive(line["pid"]):
                    died_at[tid] = time.time()
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    restarted = server_factory.restart(server)
    watcher.join()
    for tid, line in running_at_kill.items():
        outlived = died_at.get(tid, float("inf")) - killed_at
        assert outlived < 1, (
            f"the run of training {tid} (pid {line['pid']}) outlived the killed server "
            f"by {outlived:.1f} s"
        )

    for tid in ids:
        training = wait_finished(restarted, tid, timeout=15)
        assert training["status"] == "succeeded", training
        # A run killed with the server counts its attempt; so may one claimed but not yet
        # started (its child was still starting on a loaded machine).
        if tid in running_at_kill:
            assert training["attempts"] == 2, training
        else:
            assert training["attempts"] in (1, 2), training

    lines = records(record)
    ends = Counter(str(line["id"]) for line in lines if line["event"] == "end")
    assert ends == dict.fromkeys(ids, 1)
    for tid in ids:
        runs = [line for line in lines if str(line["id"]) == tid]
        if tid in running_at_kill:
            # Killed mid-run, then run again from the start in the new server, never at once.
            first, second, end = runs
            assert (first["event"], second["event"], end["event"]) == ("start", "start", "end")
            assert (first["attempt"], second["attempt"], end["attempt"]) == (1, 2, 2)
            assert second["pid"] != first["pid"]
            assert second["t"] > killed_at
            assert second["t"] > died_at.get(tid, float("inf"))
        else:
            # Waiting in the queue at the kill, then run once by the new server.
            start, end = runs
            assert (start["event"], end["event"]) == ("start", "end")
            assert start["t"] > killed_at


def test_server_and_run_pending_on_one_database_run_nothing_twice(serve, tmp_path):
    server = serve()
    record = tmp_path / "record.jsonl"
    ids = [create(server, meta={"seconds": 0.1, "record": str(record)})["id"] for _ in range(40)]

    result = run_pending(server)

    assert result.returncode == 0, result.stdout + result.stderr
    wait_for(lambda: server.get("/trainings/count?status=succeeded") == 40, 30, "all 40 succeeding")
    trainings = server.get("/trainings?_limit=-1")
    assert {t["status"] for t in trainings} == {"succeeded"}
    assert {t["attempts"] for t in trainings} == {1}
    starts = Counter(str(line["id"]) for line in events(record, "start"))
    assert starts == dict.fromkeys(ids, 1)
    ends = Counter(str(line["id"]) for line in events(record, "end"))
    assert ends == dict.fromkeys(ids, 1)
    # Both took part: run-pending reports each training it finished.
    by_run_pending = [line for line in result.stdout.splitlines() if line.startswith("training ")]
    assert by_run_pending, result.stdout
    assert len(by_run_pending) < 40


# How runs end ------------------------------------------------------------------------------


def test_a_run_longer_than_its_max_runtime_fails_as_timed_out(serve, tmp_path):
    server = serve()
    record = tmp_path / "record.jsonl"
    created = create(server, meta={"seconds": 30, "max_runtime": 1, "record": str(record)})

    training = wait_finished(server, created["id"], timeout=AT_ONCE)

    assert training["status"] == "failed", training
    assert "timed out" in training["error"]
    assert training["attempts"] == 1
    assert training["finished_at"] is not None
    assert training["published_at"] is None
    (start,) = events(record, "start")
    assert events(record, "end") == []
    wait_for(lambda: not pid_alive(start["pid"]), 3, "the timed-out run's process ending")
    # No retry follows.
    assert fetch(server, created["id"])["attempts"] == 1


def test_cancel_stops_a_running_training_and_cancels_waiting_ones(serve, tmp_path):
    server = serve(WORKERS="1")
    record = tmp_path / "record.jsonl"
    running = create(server, meta={"seconds": 30, "record": str(record)})
    wait_for(lambda: status_is(server, running["id"], "running"), AT_ONCE, "the run starting")
    (start,) = wait_for(lambda: events(record, "start"), AT_ONCE, "the trainer starting")
    assert pid_alive(start["pid"])

    # Waiting trainings (the one worker is busy) are cancelled at once, by the alias path.
    queued = create(server, meta={"record": str(record)})
    later = iso(datetime.now(UTC) + timedelta(minutes=5))
    scheduled = create(server, scheduled_at=later, meta={"record": str(record)})
    assert queued["status"] == "queued"
    assert scheduled["status"] == "scheduled"
    for waiting in (queued, scheduled):
        status, _, body = request(server, "POST", f"/trainings/cancel/{waiting['id']}")
        assert status == 200, body
        assert json.loads(body)["status"] == "cancelled"
        assert fetch(server, waiting["id"])["status"] == "cancelled"

    status, _, body = request(server, "POST", f"/trainings/{running['id']}/cancel")
    assert status == 200, body
    cancelled = json.loads(body)
    assert cancelled["status"] == "cancelled"
    assert cancelled["finished_at"] is not None

    wait_for(lambda: not pid_alive(start["pid"]), 3, "the cancelled run's process ending")
    training = fetch(server, running["id"])
    assert training["status"] == "cancelled"
    assert training["attempts"] == 1

    # The freed worker runs new work, never the cancelled trainings.
    quick = create(server, meta={"action": "ok"})
    assert wait_finished(server, quick["id"], timeout=AT_ONCE)["status"] == "succeeded"
    for tid in (running["id"], queued["id"], scheduled["id"]):
        assert fetch(server, tid)["status"] == "cancelled"
    assert [str(line["id"]) for line in records(record)] == [running["id"]]

    # A finished training cannot be cancelled.
    for finished, was in ((quick, "succeeded"), (running, "cancelled")):
        status, content_type, body = request(server, "POST", f"/trainings/{finished['id']}/cancel")
        assert status == 409
        assert content_type.startswith("application/json")
        error = json.loads(body)
        assert error["code"] == 409
        assert was in error["message"]
        assert fetch(server, finished["id"])["status"] == was


@pytest.mark.parametrize(
    ("meta", "status", "attempts", "error"),
    [
        ({"action": "exit"}, "failed", 2, "exited with status 3"),
        ({"action": "abort"}, "failed", 2, "SIGABRT"),
        ({"action": "raise"}, "failed", 1, "the data has no target column"),
        ({"action": "retry"}, "failed", 2, "the data source is unavailable"),
        ({"action": "retry_until", "until": 2}, "succeeded", 2, None),
    ],
    ids=["exit", "abort", "raise", "retry", "retry_until"],
)
def test_crashing_trainers_are_retried_or_failed_and_the_server_stays_up(
    serve, tmp_path, meta, status, attempts, error
):
    server = serve(MAX_ATTEMPTS="2", RETRY_DELAY="0.2")
    record = tmp_path / "record.jsonl"
    created = create(server, meta={**meta, "record": str(record)})

    training = wait_finished(server, created["id"], timeout=8)

    assert training["status"] == status, training
    assert training["attempts"] == attempts
    if error is None:
        assert training["error"] is None
        assert training["binaryPath"]
    else:
        assert error in training["error"]
        assert training["published_at"] is None
    assert [line["attempt"] for line in events(record, "start")] == list(range(1, attempts + 1))
    assert healthz(server) == 200
    # It stays as it ended: no further attempt comes.
    assert fetch(server, created["id"])["attempts"] == attempts


def test_health_answers_promptly_while_trainers_spin_on_every_worker(serve, tmp_path):
    server = serve(WORKERS="2")
    record = tmp_path / "record.jsonl"
    for _ in range(2):
        create(server, meta={"action": "spin", "seconds": 4, "record": str(record)})
    wait_for(lambda: len(events(record, "start")) == 2, AT_ONCE, "both spinners starting")

    durations = []
    for _ in range(30):
        began = time.perf_counter()
        assert healthz(server) == 200
        durations.append(time.perf_counter() - began)

    assert events(record, "end") == [], "the measurement should happen while both spin"
    assert statistics.median(durations) < 0.1, durations
    assert max(durations) < 1, durations


# Stopping and running without the server ---------------------------------------------------


def test_a_graceful_stop_puts_a_running_training_back_in_the_queue(serve, server_factory, tmp_path):
    server = serve(SHUTDOWN_GRACE="1")
    record = tmp_path / "record.jsonl"
    created = create(server, meta={"seconds": 30, "record": str(record)})
    wait_for(lambda: status_is(server, created["id"], "running"), AT_ONCE, "the run starting")
    (start,) = wait_for(lambda: events(record, "start"), AT_ONCE, "the trainer starting")

    began = time.monotonic()
    returncode = stop_server(server, timeout=10)
    assert time.monotonic() - began < 10
    assert returncode != -signal.SIGKILL, "the server did not stop by itself"
    assert not pid_alive(start["pid"])

    shown = subprocess.run(
        flask_command("trainings", "show", created["id"]),
        env=server_env(server.instance, **server.settings),
        capture_output=True,
        text=True,
        check=True,
    )
    training = json.loads(shown.stdout)
    assert training["status"] == "queued"
    assert training["attempts"] == 0
    assert training["started_at"] is None
    assert events(record, "end") == []

    # A restarted server, here with a short trainer, runs it.
    short = replace(
        server, settings={**server.settings, "TRAINER": "maia_trainings.trainers.demo:train"}
    )
    restarted = server_factory.restart(short)
    training = wait_finished(restarted, created["id"], timeout=10)
    assert training["status"] == "succeeded", training
    assert training["attempts"] == 1


def test_without_the_scheduler_trainings_wait_for_run_pending(serve, tmp_path):
    server = serve(SCHEDULER_ENABLED="false")
    record = tmp_path / "record.jsonl"
    created = create(server, meta={"record": str(record)})
    assert created["status"] == "queued"
    time.sleep(1)  # nothing in the server may pick it up
    assert fetch(server, created["id"])["status"] == "queued"
    assert records(record) == []

    result = run_pending(server)
    assert result.returncode == 0, result.stdout + result.stderr
    training = fetch(server, created["id"])
    assert training["status"] == "succeeded", (training, result.stdout + result.stderr)
    assert training["attempts"] == 1
    assert len(events(record, "end")) == 1

    failing = create(server, meta={"action": "raise"})
    result = run_pending(server)
    assert result.returncode == 1, result.stdout + result.stderr
    training = fetch(server, failing["id"])
    assert training["status"] == "failed"
    assert "the data has no target column" in training["error"]


# What a run shows while and after it runs --------------------------------------------------


def test_the_log_holds_the_trainers_output(serve):
    server = serve()
    created = create(server, meta={"action": "ok"})
    assert wait_finished(server, created["id"], timeout=AT_ONCE)["status"] == "succeeded"

    status, content_type, body = request(server, "GET", f"/trainings/{created['id']}/log")

    assert status == 200
    assert content_type.startswith("text/plain")
    log = body.decode()
    assert f"stdout line from training {created['id']}" in log
    assert f"stderr line from training {created['id']}" in log
    assert "action ok" in log


def test_progress_is_reported_while_a_training_runs(serve):
    server = serve()
    created = create(server, meta={"action": "steps", "seconds": 2})

    def partway() -> dict[str, Any] | None:
        training = fetch(server, created["id"])
        running = training["status"] == "running"
        return training if running and 0 < (training["progress"] or 0) < 1 else None

    during = wait_for(partway, AT_ONCE, "progress between 0 and 1")
    assert during["started_at"] is not None

    training = wait_finished(server, created["id"], timeout=AT_ONCE)
    assert training["status"] == "succeeded", training
    assert training["progress"] == 1
    status, _, body = request(server, "GET", f"/trainings/{created['id']}/log")
    assert status == 200
    assert "step 4 of 4" in body.decode()


# Children started ahead of their trainings --------------------------------------------------


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat.rsplit(")", 1)[1].split()[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_each_training_runs_in_a_fresh_process_with_its_start_recorded(serve, tmp_path):
    # Children are started ahead of their trainings, but each still runs exactly one.
    server = serve(WORKERS="1")
    record = tmp_path / "record.jsonl"
    created = [create(server, meta={"record": str(record)}) for _ in range(4)]
    finished = [wait_finished(server, training["id"], 30) for training in created]

    assert [training["status"] for training in finished] == ["succeeded"] * 4
    pids = [line["pid"] for line in events(record, "start")]
    assert len(pids) == 4
    assert len(set(pids)) == 4
    assert not any(pid_alive(pid) for pid in pids)
    for training in finished:
        # A short run's start is written with its outcome, and still shown.
        assert training["started_at"] is not None
        assert parse_time(training["started_at"]) <= parse_time(training["finished_at"])


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_a_stopped_server_leaves_no_process_behind(serve, tmp_path, how):
    server = serve()
    training = create(server, meta={"record": str(tmp_path / "record.jsonl")})
    wait_finished(server, training["id"], 30)
    # The fork server and the child waiting for the next training.
    below = descendants(server.process.pid)
    assert below, "a run should have left its fork server and a ready child"

    if how == "SIGKILL":
        server.process.kill()
        server.process.wait()
    else:
        # It exits by itself: no child waiting for work holds up the interpreter's exit.
        assert stop_server(server, timeout=15) != -signal.SIGKILL

    wait_for(lambda: not any(pid_alive(pid) for pid in below), 10, "every child exiting")
