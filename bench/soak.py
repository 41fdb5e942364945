"""Chaos soak: trainings under load while the server is SIGKILLed and restarted, then invariants.

    python bench/soak.py [--seconds N] [--instance DIR]        (N defaults to $SOAK_SECONDS or 120)

A fresh instance folder (a temporary one unless --instance names a new or empty folder), a
write token made with the CLI, and ``flask --app maia_trainings trainings serve`` in a
subprocess running the tests' sample trainer with short leases, polls and retries. Several
client threads, each with its own HTTP connection to 127.0.0.1, create trainings (some scheduled
a second ahead), list, count, cancel and delete them, and note every request and its answer.
Meanwhile the server is SIGKILLed every 2-5 s and restarted on the same instance and token.

A request that got no answer (the server died under it) is "unknown", not acknowledged; a
create is retried with the same uuid, which is idempotent, until it is acknowledged. At the end
the load stops, the server runs until no training is scheduled, queued or running, is stopped
with SIGTERM, and these invariants are checked (every broken one is a violation, detailed on
stderr):

1. every acknowledged created training exists, unless an acknowledged (or unanswered) DELETE
   removed it;
2. every training is in a final state (succeeded, failed, cancelled);
3. an acknowledged cancel is not undone (the training stays cancelled, even one that was
   running) and an acknowledged delete is not undone (GET answers 404);
4. no training was run by two processes at once: from the trainer's records, a run lasts from
   its "start" line to its "end" line; without one, as long as its process was seen alive (the
   training processes, children of each server's fork server, are watched through /proc), else
   to the first kill after its start (the child dies with its server) plus EPSILON. No two runs
   of a training overlap, no run's process outlives its server by more than EPSILON or the soak,
   a succeeded training has exactly one "end" line (besides ends whose outcome a kill lost
   before it was recorded, so that it ran again) and one cancelled before it was ever claimed
   has no "start" line;
5. ``PRAGMA integrity_check`` of the SQLite file says ok.

Trainings are told apart by uuid, not id: each records into its own file ``records/<uuid>.jsonl``
of the instance folder, so a run is never attributed to another training that got the same id.

It prints one line, ``soak: <seconds>s, requests sent <n>, acknowledged <n>, kills survived <n>,
trainings run <n>, violations <n>``, and exits with 0 when there was no violation, at least one
kill and at least one training run. The temporary instance is removed after a clean run and kept
(its path on stderr) otherwise; it holds the server's log, the records and ``soak-journal.jsonl``
(every request and kill).
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from common import (
    ROOT,
    Connection,
    child_env,
    create_token,
    flask_command,
    free_port,
    http_get,
    iso,
    json_request,
    pid_alive,
    spawn,
    wait_until_up,
)

TESTS = ROOT / "tests"  # the sample trainers live beside the tests
TRAINER = "sample_trainers:train"
SETTINGS = {
    "TRAINER": TRAINER,
    "LEASE_SECONDS": "2",
    "POLL_INTERVAL": "0.5",
    "RETRY_DELAY": "0.2",
    "MAX_ATTEMPTS": "5",
    "SHUTDOWN_GRACE": "1",
}
CLIENTS = 6
KILL_EVERY = (2.0, 5.0)  # seconds of service between two kills
REQUEST_TIMEOUT = 10.0
THINK = (0.02, 0.2)  # a client's pause between two operations
MAX_BACKLOG = 12  # creates wait while this many trainings are scheduled, queued or running
MAX_CREATES = 5000  # in all, whatever the duration
RUN_SECONDS = (0.05, 0.3)
SCHEDULED_SHARE = 0.25
START_TIMEOUT = 30.0
IDLE_TIMEOUT = 60.0
EPSILON = 0.5  # seconds a child may take to notice that its server died
WATCH_EVERY = 0.01  # seconds between two looks at the training processes
FINAL = ("succeeded", "failed", "cancelled")
PENDING = ("scheduled", "queued", "running")
# Operations of a client, with their weights.
OPERATIONS = {"create": 40, "list": 30, "cancel": 12, "delete": 18}


# The server ---------------------------------------------------------------------------------


def server_env(instance: Path) -> dict[str, str]:
    return child_env(instance, python_path=[TESTS, ROOT], settings=SETTINGS)


class Server:
    """``trainings serve`` on one instance: started, SIGKILLed, restarted, stopped."""

    def __init__(self, instance: Path) -> None:
        self.instance = instance
        self.env = server_env(instance)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> float:
        """Start it and wait until /healthz answers; returns how long that took."""
        began = time.monotonic()
        for _try in range(3):
            # In the soak's session, unlike the suite's servers: a Ctrl-C reaches it too.
            self.process = spawn(
                flask_command("trainings", "serve", "--port", str(self.port)),
                env=self.env,
                log_path=self.instance / "server.log",
                cwd=self.instance,
                new_session=False,
            )
            if wait_until_up(self.port, self.process, timeout=START_TIMEOUT, interval=0.05):
                return time.monotonic() - began
            if self.process.poll() is None:
                self.kill()
                raise RuntimeError(f"the server did not answer within {START_TIMEOUT:g} s")
            self.port = free_port()  # most likely the port was taken meanwhile
        raise RuntimeError(f"the server would not start; see {self.instance / 'server.log'}")

    def kill(self) -> float:
        """SIGKILL it and reap it; the time it was dead by."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait()
        return time.time()

    def stop(self, timeout: float = 30) -> int | None:
        """SIGTERM, a graceful stop; its exit status (None when it had to be killed)."""
        if self.process is None or self.process.poll() is not None:
            return None if self.process is None else self.process.returncode
        self.process.terminate()
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return None


class Watcher(threading.Thread):
    """Watches the training processes (the children of each server's fork server) live and die.

    For each pid: when it was first and last seen alive and when it was first seen dead, to
    within ``WATCH_EVERY``; what the trainer's records cannot say for a run without an "end".
    """

    def __init__(self, server: Server) -> None:
        super().__init__(name="watcher", daemon=True)
        self.server = server
        self.done = threading.Event()
        self.fork_servers: dict[int, int | None] = {}  # server pid -> its fork server's
        self.lifetimes: dict[int, list[float | None]] = {}  # pid -> [first, last alive, dead]

    @staticmethod
    def children(pid: int, every_thread: bool = False) -> list[int]:
        """The children of ``pid`` (of its main thread, or of every thread)."""
        tasks = (
            Path(f"/proc/{pid}/task").glob("*")
            if every_thread
            else [Path(f"/proc/{pid}/task/{pid}")]
        )
        found = []
        for task in tasks:
            with contextlib.suppress(OSError, ValueError):
                found += [int(child) for child in (task / "children").read_text().split()]
        return found

    def run(self) -> None:
        while not self.done.wait(WATCH_EVERY):
            self.look()

    def look(self) -> None:
        now = time.time()
        process = self.server.process
        if process is not None and self.fork_servers.get(process.pid) is None:
            # Started by whichever of the server's threads first runs a training.
            for pid in self.children(process.pid, every_thread=True):
                with contextlib.suppress(OSError):
                    if b"forkserver" in Path(f"/proc/{pid}/cmdline").read_bytes():
                        self.fork_servers[process.pid] = pid
        for fork_server in self.fork_servers.values():
            if fork_server is not None:
                for pid in self.children(fork_server):
                    self.lifetimes.setdefault(pid, [now, now, None])
        for pid, times in self.lifetimes.items():
            if times[2] is None:
                if pid_alive(pid):
                    times[1] = now
                else:
                    times[2] = now


# The load -----------------------------------------------------------------------------------


@dataclass
class Mine:
    """A training a client created (acknowledged) and may still cancel or delete."""

    id: str
    uuid: str


@dataclass
class Ledger:
    """What the clients did and what the service acknowledged; shared, under ``lock``."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    sent: int = 0
    acknowledged: int = 0
    unknown: int = 0
    connection_errors: int = 0
    answers: Counter[str] = field(default_factory=Counter)
    unexpected: list[str] = field(default_factory=list)
    journal: list[dict[str, Any]] = field(default_factory=list)
    created: dict[str, str] = field(default_factory=dict)  # uuid -> id, acknowledged creates
    creates_unknown: set[str] = field(default_factory=set)  # uuids never acknowledged
    cancelled: list[dict[str, Any]] = field(default_factory=list)  # acknowledged cancels
    deleted: list[dict[str, Any]] = field(default_factory=list)  # acknowledged deletes
    maybe_deleted: set[str] = field(default_factory=set)  # uuids of unanswered deletes
    creates: int = 0
    backlog: int = 0
    backlog_at: float = 0.0


class Client(threading.Thread):
    def __init__(self, number: int, soak: Soak) -> None:
        super().__init__(name=f"client-{number}", daemon=True)
        self.number = number
        self.soak = soak
        self.ledger = soak.ledger
        self.random = random.Random(soak.seed * 1000 + number)
        self.connection = Connection(soak.server.port, timeout=REQUEST_TIMEOUT)
        self.mine: list[Mine] = []
        self.sequence = 0

    # One request ---------------------------------------------------------------------------

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, Any] | None:
        """One request; (status, JSON body), or None when it got no answer (or was not sent)."""
        ledger = self.ledger
        self.connection.port = self.soak.server.port  # a restart may have moved it
        try:
            self.connection.open()
        except OSError:
            self._connection_error()
            return None
        headers, payload = json_request(self.soak.token, body)
        entry = {"t": time.time(), "client": self.number, "request": f"{method} {path}"}
        with ledger.lock:
            ledger.sent += 1
            ledger.journal.append(entry)
        try:
            status, data = self.connection.send(method, path, payload, headers)
        except (OSError, http.client.HTTPException) as exc:
            entry["answer"] = f"none ({type(exc).__name__})"
            with ledger.lock:
                ledger.unknown += 1
            self._connection_error()
            return None
        entry["answer"] = status
        try:
            decoded = json.loads(data) if data else None
        except ValueError:
            decoded = None
        with ledger.lock:
            ledger.answers[f"{method} {status}"] += 1
            if status == 200:
                ledger.acknowledged += 1
        return status, decoded

    def _connection_error(self) -> None:
        with self.ledger.lock:
            self.ledger.connection_errors += 1
        self.soak.stopping.wait(self.random.uniform(0.1, 0.4))

    def _unexpected(self, what: str, status: int, body: Any) -> None:
        with self.ledger.lock:
            self.ledger.unexpected.append(f"{self.name}: {what} -> {status} {body}")

    # The operations ------------------------------------------------------------------------

    def run(self) -> None:
        names = list(OPERATIONS)
        weights = list(OPERATIONS.values())
        while not self.soak.stopping.is_set():
            operation = self.random.choices(names, weights)[0]
            if operation in ("cancel", "delete") and not self.mine:
                operation = "create"
            getattr(self, operation)()
            self.soak.stopping.wait(self.random.uniform(*THINK))
        self.connection.close()

    def backlog(self) -> int | None:
        answer = self.request(
            "GET", "/trainings/count?status=scheduled&status=queued&status=running"
        )
        if answer is None:
            return None
        status, body = answer
        if status != 200 or not isinstance(body, int):
            self._unexpected("count of pending trainings", status, body)
            return None
        with self.ledger.lock:
            self.ledger.backlog, self.ledger.backlog_at = body, time.monotonic()
        return body

    def create(self) -> None:
        ledger = self.ledger
        with ledger.lock:
            fresh = time.monotonic() - ledger.backlog_at < 1.0
            backlog, full = ledger.backlog, ledger.creates >= MAX_CREATES
        if full:
            self.list()
            return
        if not fresh:
            backlog = self.backlog()
            if backlog is None:
                return
        if backlog >= MAX_BACKLOG:
            return
        self.sequence += 1
        uuid = f"soak-{self.number}-{self.sequence}-{self.random.getrandbits(32):08x}"
        meta = {
            "record": str(self.soak.records / f"{uuid}.jsonl"),
            "seconds": round(self.random.uniform(*RUN_SECONDS), 3),
        }
        body: dict[str, Any] = {"uuid": uuid, "meta": meta}
        if self.random.random() < SCHEDULED_SHARE:
            body["scheduled_at"] = iso(datetime.now(UTC) + timedelta(seconds=1))
        with ledger.lock:
            ledger.creates += 1
            ledger.creates_unknown.add(uuid)
        # Retried with the same body (the same uuid) until it is acknowledged: idempotent.
        while not self.soak.stopping.is_set():
            answer = self.request("POST", "/trainings", body)
            if answer is None:
                continue
            status, training = answer
            if status == 200 and isinstance(training, dict) and training.get("uuid") == uuid:
                with ledger.lock:
                    ledger.creates_unknown.discard(uuid)
                    ledger.created[uuid] = training["id"]
                self.mine.append(Mine(training["id"], uuid))
                return
            if status < 500:
                self._unexpected(f"create {uuid}", status, training)
                return
            self.soak.stopping.wait(0.1)  # a 5xx may or may not have stored it: retry

    def list(self) -> None:
        own = self.random.choice(self.mine).id if self.mine else None
        path = self.random.choice(
            [
                "/trainings?status=queued&status=running&_limit=50",
                f"/trainings?uuid_contains=soak-{self.number}-&_sort=id:DESC&_limit=20",
                "/trainings?status_ne=succeeded&_sort=created_at:DESC&_limit=10",
                "/trainings?attempts_gte=2&_sort=attempts:DESC,id:ASC&_limit=20",
                "/trainings/count?status_in=succeeded&status_in=failed",
                f"/trainings/{own}" if own else "/trainings?_limit=5",
                None,  # the count of pending trainings that creates look at
            ]
        )
        if path is None:
            self.backlog()
            return
        answer = self.request("GET", path)
        if answer is not None and answer[0] != 200:
            self._unexpected(f"GET {path}", *answer)

    def cancel(self) -> None:
        target = self.random.choice(self.mine)
        # Both paths the API documents.
        path = self.random.choice(["/trainings/{}/cancel", "/trainings/cancel/{}"])
        answer = self.request("POST", path.format(target.id))
        if answer is None:
            return
        status, training = answer
        if status == 200:
            with self.ledger.lock:
                self.ledger.cancelled.append(
                    {
                        "id": target.id,
                        "uuid": target.uuid,
                        "answered_uuid": training.get("uuid"),
                        "answered_status": training.get("status"),
                        "attempts": training.get("attempts"),
                        "t": time.time(),
                    }
                )
        elif status != 409:  # 409: it had finished already
            self._unexpected(f"cancel {target.id} ({target.uuid})", status, training)

    def delete(self) -> None:
        target = self.random.choice(self.mine)
        answer = self.request("DELETE", f"/trainings/{target.id}")
        if answer is None:
            # Deleted or not, nobody knows: it is no longer expected to exist.
            self.mine.remove(target)
            with self.ledger.lock:
                self.ledger.maybe_deleted.add(target.uuid)
            return
        status, training = answer
        if status == 200:
            self.mine.remove(target)
            with self.ledger.lock:
                self.ledger.deleted.append(
                    {
                        "id": target.id,
                        "uuid": target.uuid,
                        "answered_uuid": training.get("uuid"),
                        "t": time.time(),
                    }
                )
        elif status != 409:  # 409: it is running
            self.mine.remove(target)
            self._unexpected(f"delete {target.id} ({target.uuid})", status, training)


# The soak -----------------------------------------------------------------------------------


class Soak:
    def __init__(self, seconds: float, instance: Path, seed: int) -> None:
        self.seconds = seconds
        self.instance = instance
        self.seed = seed
        self.records = instance / "records"
        self.records.mkdir(parents=True, exist_ok=True)
        self.server = Server(instance)
        self.watcher = Watcher(self.server)
        self.token = ""
        self.ledger = Ledger()
        self.stopping = threading.Event()
        self.kills: list[float] = []
        self.restart_seconds: list[float] = []
        self.violations: list[str] = []
        self.notes: list[str] = []
        self.trainings_run = 0
        self.final: dict[str, dict[str, Any]] = {}  # uuid -> the training at the end

    def violation(self, text: str) -> None:
        self.violations.append(text)

    # Load and chaos ------------------------------------------------------------------------

    def run(self) -> None:
        self.token = create_token(self.server.env, "soak", cwd=self.instance, timeout=60)
        self.server.start()
        self.watcher.start()
        clients = [Client(number, self) for number in range(CLIENTS)]
        for client in clients:
            client.start()
        chaos = random.Random(self.seed)
        end = time.monotonic() + self.seconds
        while True:
            pause = chaos.uniform(*KILL_EVERY)
            if time.monotonic() + pause >= end:
                time.sleep(max(end - time.monotonic(), 0))
                break
            time.sleep(pause)
            self.kills.append(self.server.kill())
            self.restart_seconds.append(self.server.start())
        self.stopping.set()
        for client in clients:
            client.join(REQUEST_TIMEOUT + 5)
        if not self.server.alive():
            self.server.start()
        self.wait_idle()
        self.check_api()
        status = self.server.stop()
        if status not in (0, 128 + signal.SIGTERM):
            self.notes.append(f"the graceful stop ended with status {status}")
        self.watcher.done.set()
        self.watcher.join()
        self.check_records()
        self.check_database()

    def wait_idle(self) -> None:
        deadline = time.monotonic() + IDLE_TIMEOUT
        counts: dict[str, int] = {}
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError, http.client.HTTPException):
                status, body = http_get(self.server.port, "/healthz")
                if status == 200:
                    counts = body["trainings"]
                    if not any(counts.get(name) for name in PENDING):
                        return
            time.sleep(0.25)
        self.notes.append(f"not idle after {IDLE_TIMEOUT:g} s: {counts}")

    def get(self, path: str) -> tuple[int, Any]:
        return http_get(self.server.port, path, self.token, timeout=30)

    # Invariants 1-3: through the API -------------------------------------------------------

    def check_api(self) -> None:
        ledger = self.ledger
        status, everything = self.get("/trainings?_limit=-1")
        if status != 200:
            self.violation(f"(2) listing every training answered {status}: {everything}")
            everything = []
        self.final = {training["uuid"]: training for training in everything}
        # (2) every training is finished.
        for training in everything:
            if training["status"] not in FINAL:
                self.violation(
                    f"(2) training {training['id']} ({training['uuid']}) is still "
                    f"{training['status']} (attempts {training['attempts']})"
                )
        gone = {entry["uuid"] for entry in ledger.deleted} | ledger.maybe_deleted
        # (1) every acknowledged created training exists unless a DELETE removed it.
        for uuid, training_id in ledger.created.items():
            if uuid in gone:
                continue
            status, training = self.get(f"/trainings/{training_id}")
            if status != 200:
                self.violation(f"(1) acknowledged training {training_id} ({uuid}): GET {status}")
            elif training["uuid"] != uuid:
                self.violation(
                    f"(1) acknowledged training {training_id} ({uuid}) is gone: id "
                    f"{training_id} is training {training['uuid']}"
                )
        # (3) acknowledged cancels and deletes are not undone.
        for cancel in ledger.cancelled:
            training_id, uuid = cancel["id"], cancel["uuid"]
            if cancel["answered_uuid"] != uuid or cancel["answered_status"] != "cancelled":
                self.violation(
                    f"(3) cancel of {training_id} ({uuid}) answered 200 with training "
                    f"{cancel['answered_uuid']} {cancel['answered_status']}"
                )
            if uuid in gone:
                continue
            status, training = self.get(f"/trainings/{training_id}")
            if status != 200 or training["uuid"] != uuid:
                continue  # reported under (1)
            if training["status"] != "cancelled":
                self.violation(
                    f"(3) training {training_id} ({uuid}), cancelled with 200 at "
                    f"{cancel['t']:.3f}, is now {training['status']}"
                )
        for deleted in ledger.deleted:
            training_id, uuid = deleted["id"], deleted["uuid"]
            if deleted["answered_uuid"] != uuid:
                self.violation(
                    f"(3) DELETE of {training_id} ({uuid}) answered 200 with training "
                    f"{deleted['answered_uuid']}"
                )
            status, training = self.get(f"/trainings/{training_id}")
            if status == 404:
                continue
            if status == 200 and training["uuid"] == uuid:
                self.violation(f"(3) training {training_id} ({uuid}) exists again after its DELETE")
            elif status == 200:
                self.violation(
                    f"(3) GET /trainings/{training_id} answers 200 after its acknowledged DELETE "
                    f"(at {deleted['t']:.3f}, of {uuid}): the id now names another training, "
                    f"{training['uuid']}, created at {training['created_at']}"
                )
            else:
                self.violation(f"(3) GET of deleted training {training_id} answered {status}")

    # Invariant 4: from the trainer's records -----------------------------------------------

    def check_records(self) -> None:
        kills = sorted(self.kills)
        cancelled_unclaimed = {
            cancel["uuid"] for cancel in self.ledger.cancelled if cancel["attempts"] == 0
        }
        pids: set[int] = set()
        lost_outcomes = 0
        for path in sorted(self.records.glob("*.jsonl")):
            uuid = path.stem
            starts: dict[int, float] = {}
            ends: dict[int, float] = {}
            for number, line in enumerate(path.read_text().splitlines(), 1):
                try:
                    event = json.loads(line)
                    (starts if event["event"] == "start" else ends)[event["pid"]] = event["t"]
                except (ValueError, KeyError, TypeError):
                    self.violation(f"(4) {path.name} line {number} is not a record: {line!r}")
            pids.update(starts)
            if starts:
                self.trainings_run += 1
            for pid in ends.keys() - starts.keys():
                self.violation(f"(4) {uuid}: pid {pid} ended a run it never started")
            runs = []
            for pid, start in starts.items():
                # The server it ran in died at the first kill after its start, and the run with it.
                kill = next((k for k in kills if k + EPSILON >= start), None)
                seen = self.watcher.lifetimes.get(pid)
                if seen is not None and kill is not None and seen[1] > kill + EPSILON:
                    self.violation(
                        f"(4) {uuid}: pid {pid}, started at {start:.3f}, was still alive "
                        f"{seen[1] - kill:.2f} s after its server was killed"
                    )
                if pid in ends:
                    runs.append((start, ends[pid], pid, "ended"))
                elif seen is not None:
                    runs.append((start, seen[1], pid, "seen alive"))
                elif kill is not None:
                    runs.append((start, kill + EPSILON, pid, "killed with its server"))
                else:
                    runs.append((start, float("inf"), pid, "no end"))
            runs.sort()
            for index, (start, stop, pid, how) in enumerate(runs):
                for later in runs[index + 1 :]:
                    if later[0] < stop:
                        self.violation(
                            f"(4) {uuid}: two runs at once: pid {pid} from {start:.3f} to "
                            f"{stop:.3f} ({how}) and pid {later[2]} from {later[0]:.3f} "
                            f"({later[0] - start:.3f} s later)"
                        )
            training = self.final.get(uuid)
            if training is not None and training["status"] == "succeeded":
                # An end whose outcome a kill lost (a kill before the next start) ran again.
                counted = 0
                for end in sorted(ends.values()):
                    next_start = min((s for s in starts.values() if s > end), default=None)
                    lost = next_start is not None and any(end <= k <= next_start for k in kills)
                    lost_outcomes += lost
                    counted += not lost
                if counted != 1:
                    self.violation(
                        f"(4) training {training['id']} ({uuid}) succeeded with {counted} "
                        f"'end' lines ({len(ends)} in all, {len(starts)} starts)"
                    )
            if uuid in cancelled_unclaimed and starts:
                self.violation(
                    f"(4) {uuid} was cancelled before it was claimed (attempts 0) but ran "
                    f"{len(starts)} time(s)"
                )
        # The runs died with their servers and ended by now.
        deadline = time.monotonic() + 2
        while (alive := sorted(p for p in pids if pid_alive(p))) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in alive:
            self.violation(f"(4) the training process {pid} still runs after the soak")
        watched = len(pids & self.watcher.lifetimes.keys())
        self.notes.append(f"{watched} of {len(pids)} runs' processes were seen alive")
        if lost_outcomes:
            self.notes.append(f"{lost_outcomes} finished run(s) lost their outcome to a kill")

    # Invariant 5: the database file --------------------------------------------------------

    def check_database(self) -> None:
        path = self.instance / "trainings.sqlite3"
        connection = sqlite3.connect(path)
        try:
            rows = connection.execute("PRAGMA integrity_check").fetchall()
            pending = connection.execute(
                "SELECT id, uuid, status FROM trainings WHERE status NOT IN (?, ?, ?)", FINAL
            ).fetchall()
        finally:
            connection.close()
        if rows != [("ok",)]:
            self.violation(f"(5) integrity_check: {rows}")
        for training_id, uuid, status in pending:
            self.violation(f"(2) after the stop, training {training_id} ({uuid}) is {status}")

    # Report --------------------------------------------------------------------------------

    def report(self) -> str:
        ledger = self.ledger
        return (
            f"soak: {self.seconds:g}s, requests sent {ledger.sent}, acknowledged "
            f"{ledger.acknowledged}, kills survived {len(self.restart_seconds)}, trainings run "
            f"{self.trainings_run}, violations {len(self.violations)}"
        )

    def details(self) -> list[str]:
        ledger = self.ledger
        statuses = Counter(training["status"] for training in self.final.values())
        restarts = self.restart_seconds
        lines = [
            f"soak: {ledger.unknown} requests unanswered, {ledger.connection_errors} connection "
            f"errors; {len(ledger.created)} creates acknowledged ({len(ledger.creates_unknown)} "
            f"never), {len(ledger.cancelled)} cancels, {len(ledger.deleted)} deletes "
            f"({len(ledger.maybe_deleted)} unanswered); final {dict(statuses)}; restarts "
            f"{min(restarts, default=0):.1f}-{max(restarts, default=0):.1f} s",
            f"soak: answers {dict(sorted(ledger.answers.items()))}",
            *(f"soak: note: {note}" for note in self.notes),
            *(f"soak: unexpected answer: {text}" for text in ledger.unexpected[:20]),
            *(f"soak: violation {text}" for text in self.violations),
        ]
        return lines

    def save_journal(self) -> None:
        with (self.instance / "soak-journal.jsonl").open("w") as out:
            for kill in self.kills:
                out.write(json.dumps({"t": kill, "kill": True}) + "\n")
            for entry in self.ledger.journal:
                out.write(json.dumps(entry) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seconds",
        type=float,
        default=float(os.environ.get("SOAK_SECONDS", "120")),
        help="how long the load and the kills last (default: $SOAK_SECONDS or 120)",
    )
    parser.add_argument("--instance", type=Path, help="a new or empty instance folder to use")
    parser.add_argument("--seed", type=int, default=None, help="seed the load and the kills")
    args = parser.parse_args(argv)
    if args.instance is not None:
        instance = args.instance.resolve()
        if instance.exists() and any(instance.iterdir()):
            parser.error(f"{instance} is not empty: the soak needs a fresh instance folder")
        instance.mkdir(parents=True, exist_ok=True)
    else:
        instance = Path(tempfile.mkdtemp(prefix="maia-soak-"))
    seed = args.seed if args.seed is not None else random.randrange(2**32)
    soak = Soak(args.seconds, instance, seed)
    failed = True
    try:
        soak.run()
        failed = bool(soak.violations) or not soak.kills or not soak.trainings_run
    except Exception as exc:
        soak.violation(f"the soak could not finish: {type(exc).__name__}: {exc}")
    finally:
        soak.stopping.set()
        soak.watcher.done.set()
        if soak.server.alive():
            soak.server.kill()
        soak.save_journal()
    print(soak.report(), flush=True)
    for line in soak.details():
        print(line, file=sys.stderr)
    if failed:
        print(f"soak: seed {seed}; instance kept at {instance}", file=sys.stderr)
    elif args.instance is None:
        shutil.rmtree(instance, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
