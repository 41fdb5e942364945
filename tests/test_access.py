"""Access end to end: every route is guarded, secrets never leak, every answer carries the
security headers, and addresses that keep presenting bad tokens are slowed down (429)."""

from __future__ import annotations

import base64
import hashlib
import http.client
import itertools
import json
import re
import secrets
import socket
import string
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, build_app, flask_command, make_token, server_env, stop_server
from flask import Flask
from helpers import create, fetch, set_columns

from maia_trainings.auth import WRITE_REQUIRED_MESSAGE, FailedAuthentications
from maia_trainings.exceptions import TooManyRequests

AUTH_REQUIRED = {"code": 403, "message": "this operation requires authentication"}
WRITE_REQUIRED = {"code": 403, "message": WRITE_REQUIRED_MESSAGE}
# The routes the walk must find (so that it cannot silently walk nothing).
KNOWN_RULES = {
    "/trainings",
    "/trainings/count",
    "/trainings/<training_id>",
    "/trainings/<training_id>/cancel",
    "/trainings/cancel/<training_id>",
    "/trainings/<training_id>/log",
    "/trainings/<training_id>/binary",
    "/healthz",
}
PUBLIC_ROUTES = {("/healthz", "GET")}
RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")
# What a write would send if it got through: each would change the training or add one.
CHANGE = {"uuid": "intruder", "version": "9", "meta": "changed by an intruder"}
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
CSP_DIRECTIVES = ("default-src 'none'", "frame-ancestors 'none'")

_addresses = itertools.count(1)


def fresh_address() -> str:
    """A REMOTE_ADDR no other request used, so the back-off never turns a 403 into a 429."""
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255 or 1}"


def guessed_token() -> str:
    """What a guesser would send: the shape of a real secret ("mt_" + 43 URL-safe chars)."""
    return "mt_" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(43))


def secret_forms(secret: str) -> list[str]:
    """A secret as it could leak: whole, or without its prefix."""
    return [secret, secret.removeprefix("mt_")]


def is_error_body(body: Any, code: int) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"code", "message"}
        and body["code"] == code
        and isinstance(body["message"], str)
        and bool(body["message"])
    )


# 1. Every route of the URL map is guarded ----------------------------------------------------


def walked_routes(app: Flask) -> list[tuple[str, str]]:
    """(rule, method) for every rule of the URL map but static, and each method it allows."""
    return sorted(
        (rule.rule, method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint != "static"
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    )


def build_url(rule: str, training_id: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name == "training_id", f"the walk does not know how to fill <{name}> in {rule}"
        return training_id

    return RULE_ARGUMENT.sub(value, rule)


def test_every_route_but_healthz_refuses_missing_revoked_and_read_tokens(
    app, client, runner, auth, read_token
):
    training = create(client, auth, uuid="guarded", version="1", meta="kept")
    training_id = training["id"]
    doomed = make_token(app, "doomed", "write")
    assert client.get("/trainings", headers=bearer(doomed)).status_code == 200
    result = runner.invoke(args=["trainings", "token", "revoke", "doomed"])
    assert result.exit_code == 0, result.output
    before = (fetch(client, auth, training_id), client.get("/trainings", headers=auth).json)

    routes = walked_routes(app)
    assert {rule for rule, _method in routes} >= KNOWN_RULES
    assert {"GET", "POST", "PUT", "DELETE"} <= {method for _rule, method in routes}

    cases: dict[str, dict[str, str]] = {"no token": {}, "revoked token": bearer(doomed)}
    failures = []
    checked = 0
    for rule, method in routes:
        url = build_url(rule, training_id)
        if (rule, method) in PUBLIC_ROUTES:
            response = client.open(url, method=method)
            assert response.status_code == 200, (method, url, response.data)
            continue
        kinds = dict(cases)
        if method != "GET":
            kinds["read-scope token"] = bearer(read_token)
        for kind, headers in kinds.items():
            response = client.open(
                url,
                method=method,
                headers=headers,
                json=CHANGE if method != "GET" else None,
                environ_base={"REMOTE_ADDR": fresh_address()},
            )
            expected = WRITE_REQUIRED if kind == "read-scope token" else AUTH_REQUIRED
            checked += 1
            if (
                response.status_code != 403
                or response.mimetype != "application/json"
                or response.get_json(silent=True) != expected
            ):
                failures.append((method, url, kind, response.status_code, response.data))

    assert failures == []
    assert checked >= 2 * 10 + 5  # ten guarded (rule, method) pairs, five of them writes
    after = (fetch(client, auth, training_id), client.get("/trainings", headers=auth).json)
    assert after == before
    assert after[0]["status"] == "queued"


# 2. Secrets never leak -----------------------------------------------------------------------


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


def sqlite_bytes(instance: Path) -> dict[str, bytes]:
    database = instance / "trainings.sqlite3"
    assert database.is_file()
    files = [database, database.with_name(database.name + "-wal")]
    return {file.name: file.read_bytes() for file in files if file.exists()}


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
    stored = sqlite_bytes(server.instance)  # while serving: the WAL still holds the writes
    stop_server(server)
    stored.update(
        {f"{name} (stopped)": data for name, data in sqlite_bytes(server.instance).items()}
    )
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


# 3. Security headers on every answer ---------------------------------------------------------


def assert_secure(response_headers: Any, label: str = "") -> None:
    assert response_headers.get("X-Content-Type-Options") == "nosniff", label
    policy = response_headers.get("Content-Security-Policy") or ""
    for directive in CSP_DIRECTIVES:
        assert directive in [part.strip() for part in policy.split(";")], (label, policy)


def _publish_binary(app: Flask, training_id: str) -> str:
    models = Path(app.config["MODELS_DIR"]) / "published"
    models.mkdir(parents=True, exist_ok=True)
    data = b"\x00model bytes\xff"
    (models / "model.bin").write_bytes(data)
    digest = hashlib.sha256(data).hexdigest()
    set_columns(
        app,
        training_id,
        binary_path="published/model.bin",
        binary_sha256=digest,
        binary_size=len(data),
    )
    return digest


def _too_many(app: Flask, client, _auth, _read, _tid) -> Any:
    address = {"REMOTE_ADDR": "10.200.0.1"}
    for _ in range(int(app.config["AUTH_FAILURES_ALLOWED"]) + 1):
        client.get("/trainings", headers=bearer(guessed_token()), environ_base=address)
    return client.get("/trainings", headers=bearer(guessed_token()), environ_base=address)


Call = Callable[[Flask, Any, dict[str, str], dict[str, str], str], Any]
HEADER_CASES: dict[str, tuple[int, Call]] = {
    "list": (200, lambda app, c, auth, read, tid: c.get("/trainings", headers=auth)),
    "list as xml": (
        200,
        lambda app, c, auth, read, tid: c.get(
            "/trainings", headers={**auth, "Accept": "application/xml"}
        ),
    ),
    "count": (200, lambda app, c, auth, read, tid: c.get("/trainings/count", headers=read)),
    "get": (200, lambda app, c, auth, read, tid: c.get(f"/trainings/{tid}", headers=read)),
    "create": (200, lambda app, c, auth, read, tid: c.post("/trainings", json={}, headers=auth)),
    "update": (
        200,
        lambda app, c, auth, read, tid: c.put(
            f"/trainings/{tid}", json={"version": "3"}, headers=auth
        ),
    ),
    "cancel": (
        200,
        lambda app, c, auth, read, tid: c.post(f"/trainings/{tid}/cancel", headers=auth),
    ),
    "delete": (200, lambda app, c, auth, read, tid: c.delete(f"/trainings/{tid}", headers=auth)),
    "log (text/plain)": (
        200,
        lambda app, c, auth, read, tid: c.get(f"/trainings/{tid}/log", headers=read),
    ),
    "binary not published": (
        404,
        lambda app, c, auth, read, tid: c.get(f"/trainings/{tid}/binary", headers=read),
    ),
    "binary": (
        200,
        lambda app, c, auth, read, tid: (
            _publish_binary(app, tid) and c.get(f"/trainings/{tid}/binary", headers=read)
        ),
    ),
    "binary not modified": (
        304,
        lambda app, c, auth, read, tid: c.get(
            f"/trainings/{tid}/binary",
            headers={**read, "If-None-Match": f'"{_publish_binary(app, tid)}"'},
        ),
    ),
    "healthz": (200, lambda app, c, auth, read, tid: c.get("/healthz")),
    "403 no token": (403, lambda app, c, auth, read, tid: c.get("/trainings")),
    "403 read scope": (
        403,
        lambda app, c, auth, read, tid: c.delete(f"/trainings/{tid}", headers=read),
    ),
    "404 id": (404, lambda app, c, auth, read, tid: c.get("/trainings/999999", headers=read)),
    "404 path": (404, lambda app, c, auth, read, tid: c.get("/nothing/here", headers=read)),
    "400 field": (
        400,
        lambda app, c, auth, read, tid: c.post("/trainings", json={"nope": 1}, headers=auth),
    ),
    "400 malformed json": (
        400,
        lambda app, c, auth, read, tid: c.post(
            "/trainings", data="{", content_type="application/json", headers=auth
        ),
    ),
    "405": (405, lambda app, c, auth, read, tid: c.patch(f"/trainings/{tid}", headers=auth)),
    "406": (
        406,
        lambda app, c, auth, read, tid: c.get(
            "/trainings", headers={**read, "Accept": "image/png"}
        ),
    ),
    "413": (
        413,
        lambda app, c, auth, read, tid: c.post(
            "/trainings",
            data=b"{" + b" " * int(app.config["MAX_CONTENT_LENGTH"]) + b"}",
            content_type="application/json",
            headers=auth,
        ),
    ),
    "415": (
        415,
        lambda app, c, auth, read, tid: c.post(
            "/trainings", data="uuid", content_type="text/plain", headers=auth
        ),
    ),
    "429": (429, _too_many),
}


@pytest.mark.parametrize("case", list(HEADER_CASES))
def test_every_answer_carries_the_security_headers(app, client, auth, read_token, case):
    status, call = HEADER_CASES[case]
    training_id = create(client, auth, uuid="headers", meta="m")["id"]

    response = call(app, client, auth, bearer(read_token), training_id)

    assert response.status_code == status, response.data
    assert_secure(response.headers, case)


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


# 4. The failed-authentication back-off -------------------------------------------------------

ALLOWED = 3


@pytest.fixture
def backoff_app(app: Flask, instance_path: Path) -> Flask:
    """An app on the same database whose shut-outs last at most 1 s, after 3 free failures."""
    return build_app(
        instance_path / "test.sqlite3",
        instance_path,
        AUTH_FAILURES_ALLOWED=ALLOWED,
        AUTH_BACKOFF_MAX=1,
    )


def from_address(client, address: str) -> Callable[..., Any]:
    def call(method: str, path: str, token: str | None, **kwargs: Any) -> Any:
        headers = bearer(token) if token is not None else {}
        return client.open(
            path, method=method, headers=headers, environ_base={"REMOTE_ADDR": address}, **kwargs
        )

    return call


def assert_too_many(response, longest: float) -> int:
    assert response.status_code == 429, response.data
    assert response.mimetype == "application/json"
    assert is_error_body(response.json, 429), response.json
    retry_after = int(response.headers["Retry-After"])
    assert 1 <= retry_after <= longest
    assert_secure(response.headers)
    return retry_after


def test_an_address_that_keeps_failing_is_shut_out_alone_then_let_back_in(backoff_app, write_token):
    client = backoff_app.test_client()
    guesser = from_address(client, "10.1.2.3")
    neighbour = from_address(client, "10.1.2.4")

    for _ in range(ALLOWED):
        response = guesser("GET", "/trainings", guessed_token())
        assert response.status_code == 403
        assert response.json == AUTH_REQUIRED
        assert "Retry-After" not in response.headers
    failing = guesser("GET", "/trainings", guessed_token())
    assert failing.status_code == 403
    assert failing.json == AUTH_REQUIRED

    retry_after = assert_too_many(guesser("GET", "/trainings", guessed_token()), 1)
    assert_too_many(guesser("GET", "/trainings", write_token), 1)
    assert_too_many(guesser("POST", "/trainings", write_token, json={"uuid": "blocked"}), 1)
    assert neighbour("GET", "/trainings", write_token).status_code == 200
    assert neighbour("GET", "/trainings", guessed_token()).status_code == 403
    assert neighbour("GET", "/trainings/count", write_token).json == 0  # nothing was created

    time.sleep(retry_after + 0.1)
    assert guesser("GET", "/trainings", write_token).status_code == 200
    # The success cleared the address: its free failures are all there again.
    for _ in range(ALLOWED + 1):
        assert guesser("GET", "/trainings", guessed_token()).status_code == 403
    assert_too_many(guesser("GET", "/trainings", write_token), 1)


def test_retry_after_never_exceeds_the_longest_back_off(backoff_app, write_token):
    guesser = from_address(backoff_app.test_client(), "10.1.2.5")
    for _ in range(ALLOWED + 1):
        assert guesser("GET", "/trainings", guessed_token()).status_code == 403

    # Unbounded, the shut-outs would last 1, 2, 4, 8 s; AUTH_BACKOFF_MAX is 1 s.
    for _ in range(4):
        retry_after = assert_too_many(guesser("GET", "/trainings", guessed_token()), 1)
        time.sleep(retry_after + 0.05)
        assert guesser("GET", "/trainings", guessed_token()).status_code == 403

    assert_too_many(guesser("GET", "/trainings", write_token), 1)


def test_back_off_doubles_up_to_its_longest_and_spares_other_addresses():
    # The same class the app uses, on a clock the test moves: many failures, no waiting.
    failures = FailedAuthentications(allowed=2, longest=60)
    now = 1000.0
    waits = []
    for _ in range(2 + 10):
        failures.check("10.9.9.9", now=now)  # never shut out when the last wait is over
        failures.failed("10.9.9.9", now=now)
        try:
            failures.check("10.9.9.9", now=now)
        except TooManyRequests as exc:
            waits.append((exc.code, exc.retry_after))
            now += exc.retry_after
        failures.check("10.9.9.10", now=now)  # another address is never affected

    assert waits == [(429, wait) for wait in (1, 2, 4, 8, 16, 32, 60, 60, 60, 60)]
    failures.succeeded("10.9.9.9")
    failures.failed("10.9.9.9", now=now)
    failures.check("10.9.9.9", now=now)  # a success gave the address its free failures back


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
