"""The server's log lines, in both formats: one per request, one per training transition, with
request ids, and never a secret (tokens, webhook secrets, the callback key, datasource
passwords, a callback_url), whatever the requests carried."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

import pytest
from conftest import free_port
from helpers import guessed_token

CALLBACK_SECRET = "callback-key-5d41402abc4b2a76"
DATASOURCE_PASSWORD = "warehouse-pw-7c6a180b36896a0a"


def call(server, method, path, body=None, token=None, **headers):
    """(status, headers, decoded body) of one request; errors are answers too."""
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    request = urllib.request.Request(server.url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.headers, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, json.loads(exc.read())


def log_lines(server):
    return (server.instance / "server.log").read_text(errors="replace").splitlines()


def wait_for(predicate, timeout=30):
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


@pytest.mark.parametrize("log_format", ["text", "json"])
def test_request_and_transition_lines_without_a_secret(server_factory, log_format):
    hook_port = free_port()  # nothing listens: every delivery fails, and is logged
    server = server_factory(
        LOG_FORMAT=log_format,
        WEBHOOK_ALLOWED_HOSTS='["127.0.0.1"]',
        WEBHOOK_CALLBACK_SECRET=CALLBACK_SECRET,
        WEBHOOK_RETRY_DELAY="0.1",
        DATASOURCES=json.dumps({"warehouse": f"postgresql://etl:{DATASOURCE_PASSWORD}@db/dw"}),
    )
    guess = guessed_token()
    callback_url = f"http://127.0.0.1:{hook_port}/callback/cb-path-9f86d081884c7d65"

    status, _, webhook = call(
        server, "POST", "/webhooks", {"url": f"http://127.0.0.1:{hook_port}/hook"}, server.token
    )
    assert status == 200
    assert webhook["secret"]
    assert call(server, "GET", "/trainings", token=guess)[0] == 403
    status, headers, training = call(
        server,
        "POST",
        "/trainings",
        {"callback_url": callback_url},
        server.token,
        **{"X-Request-Id": "client-req-42"},
    )
    assert status == 200
    assert headers["X-Request-Id"] == "client-req-42"
    # An id that would forge or flood log lines is replaced by a new one, not echoed.
    for invalid in ("x" * 129, "bad\tid", "two words", "é-accented"):
        _, headers, _ = call(server, "GET", "/healthz", **{"X-Request-Id": invalid})
        assert headers["X-Request-Id"] != invalid
        assert len(headers["X-Request-Id"]) == 32
    _, headers, _ = call(server, "GET", "/healthz")
    generated = headers["X-Request-Id"]
    wait_for(lambda: server.get(f"/trainings/{training['id']}")["status"] == "succeeded")
    wait_for(lambda: any("webhook delivery" in line for line in log_lines(server)))

    lines = log_lines(server)
    text = "\n".join(lines)
    for secret in (
        server.token,
        guess,
        webhook["secret"],
        CALLBACK_SECRET,
        DATASOURCE_PASSWORD,
        callback_url,
        "cb-path-9f86d081884c7d65",
    ):
        assert secret not in text, secret

    if log_format == "json":
        records = [json.loads(line) for line in lines if line.startswith("{")]
        assert len(records) >= 10
        assert all({"time", "level", "logger", "node", "message"} <= set(r) for r in records)
        requests = [r for r in records if r.get("event") == "request"]
        transitions = [r for r in records if r.get("event") == "transition"]
        created = next(r for r in requests if r["request_id"] == "client-req-42")
        assert created["method"] == "POST"
        assert created["route"] == "/trainings"
        assert created["status"] == 200
        assert created["token"] == "tester"
        assert created["duration_ms"] >= 0
        refused = [r for r in requests if r["status"] == 403]
        assert refused
        assert all(r["token"] is None for r in refused)
        assert any(r["request_id"] == generated for r in requests)
        moves = [
            (r["from"], r["to"], r["attempt"]) for r in transitions if r["id"] == training["id"]
        ]
        assert moves == [("queued", "running", 1), ("running", "succeeded", 1)]
        assert all(r["uuid"] == training["uuid"] for r in transitions)
        assert {r["node"] for r in records} == {records[0]["node"]}
    else:
        assert not any(line.startswith("{") for line in lines)
        assert any(
            "POST /trainings 200" in line and "token=tester request_id=client-req-42" in line
            for line in lines
        )
        assert any("GET /trainings 403" in line and "token=-" in line for line in lines)
        assert any(f"request_id={generated}" in line for line in lines)
        prefix = f"training {training['id']} ({training['uuid']}):"
        assert any(f"{prefix} queued -> running, attempt 1" in line for line in lines)
        assert any(f"{prefix} running -> succeeded, attempt 1" in line for line in lines)
