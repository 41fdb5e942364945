"""Fixtures: an app on a temporary SQLite file, tokens of each scope, and a real server."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner

from maia_trainings import create_app, db, store

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
SAMPLE_TRAINER = "sample_trainers:train"


@pytest.fixture
def instance_path(tmp_path: Path) -> Path:
    path = tmp_path / "instance"
    path.mkdir()
    return path


@pytest.fixture
def app(instance_path: Path, monkeypatch: pytest.MonkeyPatch) -> Flask:
    monkeypatch.setenv("MAIA_INSTANCE_PATH", str(instance_path))
    return build_app(instance_path / "test.sqlite3", instance_path)


def build_app(database: Path, instance: Path, **settings: Any) -> Flask:
    """A testing app on the SQLite file ``database``, its tables made, with ``settings``."""
    app = create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{database}",
            "MODELS_DIR": str(instance / "models"),
            # The API's tests need a trainer that takes any meta; the built-in one has its own.
            "TRAINER": SAMPLE_TRAINER,
            **settings,
        }
    )
    db.init_db(app)
    return app


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    return app.test_cli_runner()


def make_token(app: Flask, name: str, scope: str = "write") -> str:
    with app.app_context(), db.database(app).session() as session:
        return store.create_token(session, name, scope).secret


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


def start_server(instance: Path, token: str | None = None, **settings: str) -> Server:
    """Serve ``instance`` with waitress in a subprocess; makes a token unless one is given."""
    env = server_env(instance, **settings)
    instance.mkdir(parents=True, exist_ok=True)
    if token is None:
        out = subprocess.run(
            flask_command("trainings", "token", "create", "tester"),
            env=env,
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        token = out.strip().splitlines()[-1]
    port = free_port()
    log = (instance / "server.log").open("ab")
    process = subprocess.Popen(
        flask_command("trainings", "serve", "--port", str(port)),
        env=env,
        cwd=instance,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1):
                break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(
                    process.stderr.read().decode() if process.stderr else ""
                ) from None
            time.sleep(0.05)
    return Server(
        url=url, port=port, token=token, process=process, instance=instance, settings=settings
    )


def restart_server(server: Server) -> Server:
    """A new server process on the same instance, settings and token (after a stop or a kill)."""
    return start_server(server.instance, token=server.token, **server.settings)


def stop_server(server: Server, timeout: float = 30) -> int:
    """SIGTERM the server (a graceful stop) and wait for it; returns its exit status."""
    if server.process.poll() is None:
        server.process.terminate()
        try:
            server.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()
    return server.process.returncode


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    running = start_server(tmp_path / "server-instance", TRAINER=SAMPLE_TRAINER)
    yield running
    stop_server(running)


@pytest.fixture
def server_factory(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    """Start servers with settings (``MAIA_<KEY>`` values); each is stopped at the end."""
    started: list[Server] = []

    def start(instance: Path | None = None, **settings: str) -> Server:
        settings.setdefault("TRAINER", SAMPLE_TRAINER)
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
