"""Access, in-process: every route is guarded, every answer carries the security headers, and
addresses that keep presenting bad tokens are slowed down (429).

What only a real server shows (no secret in its log, waitress's own answers, the back-off by
source address) is in tests/integration/test_access_server.py."""

from __future__ import annotations

import hashlib
import itertools
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import bearer, build_app_at, make_token
from flask import Flask
from helpers import CHANGE, CSP_DIRECTIVES, create, fetch, guessed_token, is_error_body, set_columns

from maia_trainings.auth import EXTENSION, WRITE_REQUIRED_MESSAGE, FailedAuthentications
from maia_trainings.errors import TooManyRequests

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
# Public: health, the dashboard's page and files (its data comes from the guarded API), the
# API's description and reference page, and /metrics (METRICS_PUBLIC is True by default).
PUBLIC_ROUTES = {
    ("/healthz", "GET"),
    ("/", "GET"),
    ("/dashboard/static/<path:filename>", "GET"),
    ("/openapi.json", "GET"),
    ("/docs", "GET"),
    ("/docs/init.js", "GET"),
    ("/docs/<path:filename>", "GET"),
    ("/metrics", "GET"),
}
# A file each route with a file name serves, for the walk.
FILES = {
    "/dashboard/static/<path:filename>": "dashboard.js",
    "/docs/<path:filename>": "swagger-ui.css",
}
# Writes nothing though it is a POST: scoring rows is reading the champion (read tokens may).
READ_POSTS = {("/models/<model_name>/score", "POST")}
RULE_ARGUMENT = re.compile(r"<(?:[^<>:]+:)?([^<>:]+)>")

_addresses = itertools.count(1)


def fresh_address() -> str:
    """A REMOTE_ADDR no other request used, so the back-off never turns a 403 into a 429."""
    n = next(_addresses)
    return f"10.{(n >> 16) & 255}.{(n >> 8) & 255}.{n & 255 or 1}"


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
        if name == "model_name":
            return "default"
        if name == "filename":
            return FILES[rule]
        # Any id will do (a schedule's, a webhook's): the token is refused before it is looked up.
        assert name.endswith("_id"), f"the walk does not know how to fill <{name}> in {rule}"
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
        if method != "GET" and (rule, method) not in READ_POSTS:
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


# 2. Security headers on every answer ---------------------------------------------------------


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


# 3. The failed-authentication back-off -------------------------------------------------------

ALLOWED = 3


class ClockedBackOff(FailedAuthentications):
    """The app's back-off on a clock the test moves, so that a shut-out ends without sleeping."""

    def __init__(self, like: FailedAuthentications) -> None:
        super().__init__(like.allowed, like.longest, like.capacity)
        self.now = 1000.0

    def check(self, address: str, now: float | None = None) -> None:
        super().check(address, self.now if now is None else now)

    def failed(self, address: str, now: float | None = None) -> None:
        super().failed(address, self.now if now is None else now)


@pytest.fixture
def backoff_app(app: Flask, instance_path: Path) -> Flask:
    """An app on the same database whose shut-outs last at most 1 s, after 3 free failures;
    its back-off reads a clock that :func:`wait_out` moves."""
    backoff = build_app_at(
        app.config["DATABASE_URL"],
        instance_path,
        AUTH_FAILURES_ALLOWED=ALLOWED,
        AUTH_BACKOFF_MAX=1,
    )
    backoff.extensions[EXTENSION] = ClockedBackOff(backoff.extensions[EXTENSION])
    return backoff


def wait_out(app: Flask, seconds: float) -> None:
    """Let ``seconds`` pass on the back-off's clock."""
    app.extensions[EXTENSION].now += seconds


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

    wait_out(backoff_app, retry_after)
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
        wait_out(backoff_app, retry_after)
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
