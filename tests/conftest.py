"""Fixtures: an app on a new database (SQLite, and PostgreSQL when MAIA_TEST_POSTGRES_URL is
set), tokens of each scope, the scoring trainer's datasets, and a real server; and the rule that
tests/unit starts no process.

Every test that uses ``app`` or a server runs once per database through the ``backend``
fixture. On PostgreSQL the test run makes its own database (dropped at the end) and each test
its own schema in it, so tests never see each other's rows. A test marked ``sqlite_only``
(SQLite's files, its locking) runs on SQLite alone."""

from __future__ import annotations

import functools
import json
import multiprocessing.process
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

# The browser tests' fixtures, defined here once: a fixture re-exported by each test module
# would be a session fixture per module, and a second Playwright cannot start beside the first.
from browser import chromium, chromium_page  # noqa: F401
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.pool import NullPool

from maia_trainings import create_app, db, migrations, tokens
from maia_trainings.models import Scope

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
UNIT = TESTS / "unit"
SAMPLE_TRAINER = "sample_trainers:train"
SCORING = "maia_trainings.trainers.scoring:train"
# Rows of the scoring tests' loan book: small, so that a training takes a few seconds at most.
ROWS = 2000
# How long a server gets to answer /healthz, and how much of its log a failed start shows.
START_TIMEOUT = 30
LOG_TAIL_LINES = 50


@pytest.fixture(autouse=True)
def _unit_tests_start_no_process(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """tests/unit runs in-process only (``make test-fast``): a test there that starts a
    subprocess or a child process (a training through the fork server) fails at once."""
    if UNIT not in request.path.parents:
        return

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(
            "tests/unit starts no subprocess or child process; "
            "a test that needs one belongs in tests/integration"
        )

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)
    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)


@pytest.fixture
def instance_path(tmp_path: Path) -> Path:
    path = tmp_path / "instance"
    path.mkdir()
    return path


# The databases ------------------------------------------------------------------------------

POSTGRES_URL_VARIABLE = "MAIA_TEST_POSTGRES_URL"
SKIP_POSTGRES = (
    f"PostgreSQL tests need {POSTGRES_URL_VARIABLE} "
    "(e.g. postgresql+psycopg://postgres@127.0.0.1:5432/test); .ci/run sets it"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "sqlite_only(reason): the test is about SQLite itself; no PostgreSQL run"
    )
    config.addinivalue_line(
        "markers", "postgresql_only(reason): the test is about PostgreSQL itself; no SQLite run"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A ``sqlite_only`` test has no PostgreSQL variant, a ``postgresql_only`` one no SQLite
    variant: they are not collected for the other database."""
    kept, dropped = [], []
    for item in items:
        backend = getattr(getattr(item, "callspec", None), "params", {}).get("backend")
        other = {"postgresql": "sqlite_only", "sqlite": "postgresql_only"}.get(backend)
        (dropped if other and item.get_closest_marker(other) else kept).append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


class PostgresRun:
    """This test run's own PostgreSQL database, and a new schema in it for each use."""

    def __init__(self, server_url: str) -> None:
        server = make_url(server_url)
        self.name = f"maia_test_{os.getpid()}_{uuid.uuid4().hex[:8]}"
        self._admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        with self._admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{self.name}"'))
        self.url: URL = server.set(database=self.name)
        self._engine = create_engine(self.url, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self._schemas = 0

    def new_schema(self) -> str:
        """The URL of a new, empty schema (its tables are made by the app's upgrade)."""
        self._schemas += 1
        schema = f"t{self._schemas}"
        with self._engine.connect() as connection:
            connection.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = self.url.update_query_dict({"options": f"-csearch_path={schema}"})
        return url.render_as_string(hide_password=False)

    def drop(self) -> None:
        self._engine.dispose()
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self._admin.dispose()


@pytest.fixture(scope="session")
def postgres_run() -> Iterator[PostgresRun]:
    url = os.environ.get(POSTGRES_URL_VARIABLE)
    if not url:
        pytest.skip(SKIP_POSTGRES)
    run = PostgresRun(url)
    yield run
    run.drop()


class Databases:
    """New databases of one backend: an SQLite file in a folder, or a PostgreSQL schema."""

    def __init__(self, backend: str, postgres: PostgresRun | None) -> None:
        self.backend = backend
        self._postgres = postgres

    def url(self, folder: Path) -> str:
        if self._postgres is None:
            return f"sqlite:///{folder / 'trainings.sqlite3'}"
        return self._postgres.new_schema()

    def settings(self) -> dict[str, str]:
        """A server's settings for a database of its own (SQLite: its instance's default)."""
        return {} if self._postgres is None else {"DATABASE_URL": self.url(Path())}


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database the test runs on; a test using ``app`` or a server runs on each."""
    return str(request.param)


@pytest.fixture
def databases(backend: str, request: pytest.FixtureRequest) -> Databases:
    postgres = request.getfixturevalue("postgres_run") if backend == "postgresql" else None
    return Databases(backend, postgres)


@pytest.fixture
def app(
    instance_path: Path, databases: Databases, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Flask]:
    monkeypatch.setenv("MAIA_INSTANCE_PATH", str(instance_path))
    if databases.backend == "sqlite":
        made = build_app(instance_path / "test.sqlite3", instance_path)
    else:
        made = build_app_at(databases.url(instance_path), instance_path)
    yield made
    # PostgreSQL counts connections: a test's pool must not outlive it.
    db.database(made).dispose()


def build_app_at(url: str, instance: Path, **settings: Any) -> Flask:
    """A testing app on the database at ``url``, brought to the head, with ``settings``."""
    app = _testing_app(url, instance, **settings)
    migrations.upgrade(db.database(app))
    return app


def build_app(database: Path, instance: Path, **settings: Any) -> Flask:
    """A testing app on the SQLite file ``database``, its tables made, with ``settings``."""
    app = _testing_app(f"sqlite:///{database}", instance, **settings)
    if database.exists():
        migrations.upgrade(db.database(app))
    else:
        _copy_new_database(database)
    return app


def _testing_app(url: str, instance: Path, **settings: Any) -> Flask:
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": url,
            "MODELS_DIR": str(instance / "models"),
            # The API's tests need a trainer that takes any meta; the built-in one has its own.
            "TRAINER": SAMPLE_TRAINER,
            **settings,
        }
    )


@functools.cache
def _new_database() -> sqlite3.Connection:
    """A database made by ``migrations.upgrade``, once per test process, kept open."""
    folder = Path(tempfile.mkdtemp(prefix="maia-template-"))
    template = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{folder / 't.sqlite3'}"})
    migrations.upgrade(db.database(template))
    db.database(template).dispose()
    return sqlite3.connect(folder / "t.sqlite3", check_same_thread=False)


def _copy_new_database(target: Path) -> None:
    """What ``migrations.upgrade`` makes of a new database, copied in: the same file, in a
    millisecond instead of a dozen (hundreds of tests each start with one)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    copy = sqlite3.connect(target)
    try:
        _new_database().backup(copy)  # SQLite's backup API: consistent whatever the WAL holds
    finally:
        copy.close()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def make_token(app: Flask, name: str, scope: str = "write") -> str:
    with app.app_context(), db.database(app).session() as session:
        return tokens.create_token(session, name, scope).secret


@pytest.fixture
def write_token(app: Flask) -> str:
    return make_token(app, "writer", "write")


@pytest.fixture
def read_token(app: Flask) -> str:
    return make_token(app, "reader", "read")


def bearer(token: str, **headers: str) -> dict[str, str]:
    """Request headers carrying ``token``, plus any others given."""
    return {"Authorization": f"Bearer {token}", **headers}


@pytest.fixture
def auth(write_token: str) -> dict[str, str]:
    """Headers of a client holding a write token."""
    return bearer(write_token)


# The scoring trainer's data ------------------------------------------------------------------


@pytest.fixture
def datasets(app: Flask, instance_path: Path) -> Path:
    """The scoring trainer configured, with an empty datasets folder; returns that folder."""
    folder = instance_path / "datasets"
    folder.mkdir(exist_ok=True)
    app.config["TRAINER"] = SCORING
    app.config["DATASETS_DIR"] = str(folder)
    app.config["DEMO_ROWS"] = ROWS
    return folder


@pytest.fixture(scope="module")
def loans_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small loan book written once for the module; copied into each test's datasets."""
    from maia_trainings.trainers import portfolio  # pandas: only for the tests that use it

    path = tmp_path_factory.mktemp("loans") / "loans.csv"
    portfolio.write_csv(path, ROWS, seed=7)
    return path


@pytest.fixture
def loans(datasets: Path, loans_csv: Path) -> Path:
    """The loan book as ``loans.csv`` in the datasets folder; returns its path."""
    path = datasets / "loans.csv"
    shutil.copyfile(loans_csv, path)
    return path


# A real server --------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Server:
    url: str
    port: int
    token: str
    process: subprocess.Popen[bytes]
    instance: Path
    settings: dict[str, str]

    def get(self, path: str) -> Any:
        """GET ``path`` with the server's token; the decoded JSON body."""
        request = urllib.request.Request(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST ``body`` as JSON to ``path`` with the server's token; the decoded JSON body."""
        request = urllib.request.Request(
            self.url + path,
            data=json.dumps(body or {}).encode(),
            method="POST",
            headers={"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())


def flask_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "flask", "--app", "maia_trainings", *args]


def server_env(instance: Path, **settings: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MAIA_")}
    env["MAIA_INSTANCE_PATH"] = str(instance)
    # The sample trainers live beside the tests.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env.update({f"MAIA_{key}": value for key, value in settings.items()})
    return env


def make_server_token(instance: Path, url: str | None) -> str:
    """A write token named "tester" on the database a server of ``instance`` uses (``url``, or
    the instance's SQLite file), made as `trainings token create` makes it (the schema first,
    on a new database) but in this process: another Python start per server cost a second or
    two of CPU on a slow machine, a hundred times a run. The CLI's own tests run the command."""
    app = _testing_app(url or f"sqlite:///{instance / 'trainings.sqlite3'}", instance)
    database = db.database(app)
    try:
        migrations.ensure_current(database)
        return make_token(app, "tester", Scope.WRITE)
    finally:
        database.dispose()


def start_server(instance: Path, token: str | None = None, **settings: str) -> Server:
    """Serve ``instance`` with waitress in a subprocess; makes a token unless one is given."""
    env = server_env(instance, **settings)
    instance.mkdir(parents=True, exist_ok=True)
    if token is None:
        token = make_server_token(instance, settings.get("DATABASE_URL"))
    port = free_port()
    log_path = instance / "server.log"
    with log_path.open("ab") as log:
        log_start = log.tell()  # the log is appended to across restarts: this start's part
        process = subprocess.Popen(
            flask_command("trainings", "serve", "--port", str(port)),
            env=env,
            cwd=instance,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                raise start_failure(process, log_path, log_start) from None
            time.sleep(0.05)
    return Server(
        url=url, port=port, token=token, process=process, instance=instance, settings=settings
    )


def start_failure(process: subprocess.Popen[bytes], log_path: Path, log_start: int) -> RuntimeError:
    """The error of a server that exited, or never answered (it is killed): how it ended and
    the last lines its start wrote to the log."""
    if process.poll() is None:
        process.kill()
        process.wait()
        ending = f"did not answer /healthz within {START_TIMEOUT} s and was killed"
    else:
        ending = f"exited with status {process.returncode}"
    with log_path.open("rb") as log:
        log.seek(log_start)
        lines = log.read().decode(errors="replace").splitlines()[-LOG_TAIL_LINES:]
    return RuntimeError(
        f"the server {ending}; the last {len(lines)} lines of {log_path}:\n" + "\n".join(lines)
    )


def restart_server(server: Server) -> Server:
    """A new server process on the same instance, settings and token (after a stop or a kill)."""
    return start_server(server.instance, token=server.token, **server.settings)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 30) -> int:
    """SIGTERM ``process`` (a graceful stop), SIGKILL it after ``timeout`` seconds; returns
    its exit status."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    return process.returncode


def stop_server(server: Server, timeout: float = 30) -> int:
    """SIGTERM the server (a graceful stop) and wait for it; returns its exit status."""
    return stop_process(server.process, timeout)


@dataclass
class Worker:
    """A worker node: `trainings worker` in a subprocess, on a server's database."""

    process: subprocess.Popen[bytes]
    log_path: Path
    log_start: int

    def log(self) -> str:
        with self.log_path.open("rb") as log:
            log.seek(self.log_start)
            return log.read().decode(errors="replace")


def start_worker(instance: Path, *args: str, **settings: str) -> Worker:
    """Run `trainings worker` on ``instance`` (and its settings) until it says it runs."""
    instance.mkdir(parents=True, exist_ok=True)
    log_path = instance / "worker.log"
    with log_path.open("ab") as log:
        log_start = log.tell()
        process = subprocess.Popen(
            flask_command("trainings", "worker", *args),
            env=server_env(instance, **settings),
            cwd=instance,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker = Worker(process, log_path, log_start)
    deadline = time.monotonic() + START_TIMEOUT
    while "Worker node" not in worker.log():
        if process.poll() is not None or time.monotonic() > deadline:
            raise start_failure(process, log_path, log_start)
        time.sleep(0.05)
    return worker


def stop_worker(worker: Worker, timeout: float = 30) -> int:
    """SIGTERM the worker (a graceful stop) and wait for it; returns its exit status."""
    return stop_process(worker.process, timeout)


@pytest.fixture
def worker_factory() -> Iterator[Callable[..., Worker]]:
    """Start worker nodes on a server's database (``server``, then options); each is stopped
    at the end."""
    started: list[Worker] = []

    def start(server: Server, *args: str, **settings: str) -> Worker:
        worker = start_worker(server.instance, *args, **{**server.settings, **settings})
        started.append(worker)
        return worker

    yield start
    for worker in started:
        stop_worker(worker)


@pytest.fixture
def server(tmp_path: Path, databases: Databases) -> Iterator[Server]:
    running = start_server(
        tmp_path / "server-instance", TRAINER=SAMPLE_TRAINER, **databases.settings()
    )
    yield running
    stop_server(running)


@pytest.fixture
def server_factory(tmp_path: Path, databases: Databases) -> Iterator[Callable[..., Server]]:
    """Start servers with settings (``MAIA_<KEY>`` values); each is stopped at the end.

    Each new instance folder gets a database of its own (on PostgreSQL, a new schema).
    """
    started: list[Server] = []

    def start(instance: Path | None = None, **settings: str) -> Server:
        settings.setdefault("TRAINER", SAMPLE_TRAINER)
        for key, value in databases.settings().items():
            settings.setdefault(key, value)
        running = start_server(instance or tmp_path / f"instance-{len(started)}", **settings)
        started.append(running)
        return running

    def restart(server: Server) -> Server:
        running = restart_server(server)
        started.append(running)
        return running

    start.restart = restart  # type: ignore[attr-defined]
    yield start
    for running in started:
        stop_server(running)
