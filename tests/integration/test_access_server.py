"""Access against a real waitress server: secrets never leak (log, answers, CLI, database),
waitress's own answers carry the security headers, and the back-off shuts out the guessing
address only.

The in-process share (every route guarded, headers on every answer, the back-off's rules) is in
tests/unit/test_access.py."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import socket
import subprocess
import time
from typing import Any

import pytest
from conftest import Server, bearer, flask_command, server_env, stop_server
from helpers import CHANGE, CSP_DIRECTIVES, guessed_token, is_error_body
from sqlalchemy import MetaData, create_engine
from sqlalchemy.pool import NullPool


def secret_forms(secret: str) -> list[str]:
    """A secret as it could leak: whole, or without its prefix."""
    return [secret, secret.removeprefix("mt_")]


# 1. Secrets never leak -----------------------------------------------------------------------


class Recorder:
    """Sends requests to a real server with http.client and keeps every answer."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.answers: list[tuple[str, int, list[tuple[str, str]], bytes]] = []
        self.unexpected: list[tuple[str, int, int, bytes]] = []

    def send(
        self,
        label: str,
        method: str,
        path: str,
        expect: int,
        *,
        token: str | None = None,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> bytes:
        sent = dict(headers or {})
        if token is not None:
            sent["Authorization"] = f"Bearer {token}"
        data = None
        if body is not None:
            data = body if isinstance(body, bytes) else json.dumps(body).encode()
            sent.setdefault("Content-Type", "application/json")
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            answer = response.read()
        finally:
            conn.close()
        self.answers.append((label, response.status, response.getheaders(), answer))
        if response.status != expect:
            self.unexpected.append((label, expect, response.status, answer))
        return answer


def stored_bytes(server: Server) -> dict[str, bytes]:
    """What the server's database holds: SQLite's files (the WAL included), or on PostgreSQL
    every row of every table, as text."""
    url = server.settings.get("DATABASE_URL")
    if url is None:
        database = server.instance / "trainings.sqlite3"
        assert database.is_file()
        files = [database, database.with_name(database.name + "-wal")]
        return {file.name: file.read_bytes() for file in files if file.exists()}
    engine = create_engine(url, poolclass=NullPool)
    try:
        tables = MetaData()
        tables.reflect(engine)
        assert "trainings" in tables.tables
        with engine.connect() as connection:
            return {
                name: repr(connection.execute(table.select()).all()).encode()
                for name, table in tables.tables.items()
            }
    finally:
        engine.dispose()


def test_no_secret_reaches_the_log_a_response_the_cli_or_the_database(server_factory):
    # Guessing is allowed freely here: the back-off has its own tests.
    server = server_factory(AUTH_FAILURES_ALLOWED="100000")
    valid = server.token
    guesses = [guessed_token() for _ in range(6)]
    env = server_env(server.instance, **server.settings)
    http_ = Recorder(server.port)

    # The valid token, used as documented.
    created = json.loads(http_.send("create", "POST", "/trainings", 200, token=valid, body={}))
    path = f"/trainings/{created['id']}"
    http_.send("list", "GET", "/trainings", 200, token=valid)
    http_.send("count", "GET", "/trainings/count", 200, token=valid)
    http_.send("get", "GET", path, 200, token=valid)
    http_.send("log", "GET", path + "/log", 200, token=valid)
    http_.send("update", "PUT", path, 200, token=valid, body={"version": "2"})
    http_.send("health", "GET", "/healthz", 200)
    # Guessed tokens, in each place a client might put one.
    for guess in guesses:
        http_.send("guess read", "GET", "/trainings", 403, token=guess)
        http_.send("guess write", "POST", "/trainings", 403, token=guess, body=CHANGE)
        http_.send("guess put", "PUT", path, 403, token=guess, body=CHANGE)
    http_.send("guess no scheme", "GET", "/trainings", 403, headers={"Authorization": guesses[0]})
    basic = base64.b64encode(f"tester:{guesses[1]}".encode()).decode()
    http_.send("guess basic", "GET", "/trainings", 403, headers={"Authorization": f"Basic {basic}"})
    # Tokens where they do not belong: the query string and a JSON body field.
    for secret in (valid, guesses[2]):
        http_.send("query, no header", "GET", f"/trainings?access_token={secret}", 403)
        http_.send("query", "GET", f"/trainings?access_token={secret}", 400, token=valid)
        http_.send("count query", "GET", f"/trainings/count?token={secret}", 400, token=valid)
        http_.send("body, no header", "POST", "/trainings", 403, body={"access_token": secret})
        http_.send(
            "body field", "POST", "/trainings", 400, token=valid, body={"access_token": secret}
        )
    # Errors: 404 (also with a token in the path), 400 with a token as an unknown field's
    # name and value (JSON, XML answer, form and query string), 405.
    http_.send("404 id", "GET", "/trainings/999999", 404, token=valid)
    http_.send("404 path token", "GET", f"/trainings/{guesses[3]}", 404, token=valid)
    http_.send("404 unknown path", "GET", f"/nothing/{valid}", 404, token=valid)
    for secret in (valid, guesses[4]):
        http_.send("400 json", "POST", "/trainings", 400, token=valid, body={secret: secret})
        http_.send(
            "400 json, xml answer",
            "PUT",
            path,
            400,
            token=valid,
            body={secret: secret},
            headers={"Accept": "application/xml"},
        )
        http_.send(
            "400 form",
            "POST",
            "/trainings",
            400,
            token=valid,
            body=f"{secret}={secret}".encode(),
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        )
        http_.send("400 query", "GET", f"/trainings?{secret}={secret}", 400, token=valid)
    http_.send("405 patch", "PATCH", path, 405, token=valid, body=CHANGE)
    http_.send("405 delete list", "DELETE", "/trainings", 405, token=valid)
    http_.send("405 guessed", "PATCH", "/trainings/count", 405, token=guesses[5])

    cli_outputs = {}
    for args in (("trainings", "token", "list"), ("trainings", "list"), ("trainings", "show", "1")):
        result = subprocess.run(
            flask_command(*args), env=env, capture_output=True, text=True, timeout=60
        )
        assert result.returncode == 0, result.stderr
        cli_outputs[" ".join(args)] = result.stdout + result.stderr
    stored = stored_bytes(server)  # while serving: SQLite's WAL still holds the writes
    stop_server(server)
    stored.update({f"{name} (stopped)": data for name, data in stored_bytes(server).items()})
    log = (server.instance / "server.log").read_text(errors="replace")

    assert http_.unexpected == []
    assert "Serving maia-trainings" in log  # the right file, and it was written
    assert "tester" in cli_outputs["trainings token list"]
    secrets_ = [valid, *guesses]
    leaks = []
    for secret in secrets_:
        for form in secret_forms(secret):
            if form in log:
                leaks.append(("server.log", form))
            leaks += [(f"cli: {name}", form) for name, out in cli_outputs.items() if form in out]
            leaks += [
                (f"db: {name}", form) for name, data in stored.items() if form.encode() in data
            ]
    assert leaks == []
    assert hashlib.sha256(valid.encode()).hexdigest().encode() in b"".join(stored.values())
    # Last, the answers: one that repeats a token back names the request that did it.
    echoed = {
        (label, status, body.decode(errors="replace"))
        for label, status, headers, body in http_.answers
        for secret in secrets_
        for form in secret_forms(secret)
        if form.encode() in body or any(form in value for _name, value in headers)
    }
    assert sorted(echoed) == []


def test_waitress_error_answers_do_not_repeat_a_token(server_factory):
    # A hand-written client ending the Authorization line with a bare LF: waitress refuses the
    # request (400); its answer must not carry the line, secret and all, back.
    server = server_factory()
    secret = server.token
    request = (
        b"GET /trainings HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Authorization: Bearer " + secret.encode() + b"\nAccept: */*\r\n\r\n"
    )

    status, headers, body = raw_exchange(server.port, request)

    assert status == 400
    assert headers.get("content-type") == "application/json"
    assert json.loads(body)["code"] == 400
    for form in secret_forms(secret):
        assert form.encode() not in body, body


# 2. Security headers on every answer ---------------------------------------------------------


def raw_exchange(port: int, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send ``request`` byte for byte; the status, the headers (lower-case names) and body."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
    head, _, body = received.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(status_line.split()[1]), headers, body


def test_real_server_answers_carry_the_security_headers(server_factory):
    server = server_factory()

    answers = {
        "200": raw_exchange(
            server.port,
            b"GET /trainings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n"
            b"Authorization: Bearer " + server.token.encode() + b"\r\n\r\n",
        ),
        "403": raw_exchange(
            server.port, b"GET /trainings HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
        "healthz": raw_exchange(
            server.port, b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ),
    }

    assert [answer[0] for answer in answers.values()] == [200, 403, 200]
    for label, (_status, headers, _body) in answers.items():
        assert headers.get("x-content-type-options") == "nosniff", label
        policy = headers.get("content-security-policy", "")
        assert all(directive in policy for directive in CSP_DIRECTIVES), (label, policy)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="garbage request line"),
        pytest.param(b"GET / HTTP/1.1\r\nHost: x\r\nNo colon here\r\n\r\n", id="bad header"),
        pytest.param(
            b"POST /trainings HTTP/1.1\r\nHost: x\r\nContent-Length: two\r\n\r\n",
            id="bad content length",
        ),
    ],
)
def test_waitress_own_error_answers_carry_nosniff_and_json(server_factory, request_bytes):
    server = server_factory()

    status, headers, body = raw_exchange(server.port, request_bytes)

    assert 400 <= status < 500
    assert headers.get("x-content-type-options") == "nosniff"
    assert headers.get("content-type") == "application/json"
    answer = json.loads(body)
    assert answer["code"] == status
    assert isinstance(answer["message"], str)
    assert answer["message"]
    # And the server goes on answering.
    assert server.get("/trainings/count") == 0


# 3. The failed-authentication back-off -------------------------------------------------------


def test_real_server_shuts_out_the_guessing_address_only(server_factory):
    server = server_factory(AUTH_FAILURES_ALLOWED="3", AUTH_BACKOFF_MAX="2")
    guess = guessed_token()

    def send(source: str, token: str) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", server.port, timeout=30, source_address=(source, 0)
        )
        try:
            conn.request("GET", "/trainings", headers=bearer(token))
            response = conn.getresponse()
            return response.status, dict(response.getheaders()), response.read()
        finally:
            conn.close()

    statuses = [send("127.0.0.2", guess)[0] for _ in range(10)]

    assert statuses == [403] * 4 + [429] * 6
    status, headers, body = send("127.0.0.2", server.token)
    assert status == 429
    assert 1 <= int(headers["Retry-After"]) <= 2
    assert is_error_body(json.loads(body), 429)
    assert send("127.0.0.1", server.token)[0] == 200
    assert send("127.0.0.1", guess)[0] == 403
    assert send("127.0.0.1", server.token)[0] == 200

    time.sleep(int(headers["Retry-After"]) + 0.1)
    assert send("127.0.0.2", server.token)[0] == 200
