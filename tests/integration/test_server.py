"""The original documentation's code snippets, run as written against a real waitress server."""

from __future__ import annotations

import http.client
import json
import shutil
import subprocess

import pytest

DOCUMENTED_BODY = (
    '{"uuid":"string","accuracy":0,"precission":0,"mae":0,"rmse":0,'
    '"binaryPath":"string","version":"string","meta":"string"}'
)


def test_python_http_client_snippet_creates_a_training(server):
    # The documented snippet, with host and token replaced.
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    payload = DOCUMENTED_BODY
    headers = {
        "content-type": "application/x-www-form-urlencoded",
        "Authorization": f"Bearer {server.token}",
    }
    conn.request("POST", "/trainings", payload, headers)
    res = conn.getresponse()
    data = res.read()

    assert res.status == 200
    training = json.loads(data.decode("utf-8"))
    assert training["uuid"] == "string"
    assert training["status"] == "queued"
    conn.request("GET", f"/trainings/{training['id']}", headers=headers)
    assert json.loads(conn.getresponse().read())["binaryPath"] == "string"


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
def test_curl_snippet_creates_a_training(server):
    command = [
        "curl",
        "--silent",
        "--show-error",
        "--write-out",
        "\n%{http_code}",
        "--request",
        "POST",
        "--url",
        f"{server.url}/trainings",
        "--header",
        f"Authorization: Bearer {server.token}",
        "--header",
        "content-type: application/x-www-form-urlencoded",
        "--data",
        DOCUMENTED_BODY,
    ]
    first = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    body, status = first.rsplit("\n", 1)
    assert status == "200"
    assert json.loads(body)["version"] == "string"

    # Sent again, the same request is recognised by its uuid and creates nothing.
    again = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    body_again, status_again = again.rsplit("\n", 1)
    assert status_again == "200"
    assert json.loads(body_again)["id"] == json.loads(body)["id"]


def test_concurrent_writers_never_see_database_locked(server):
    # Many connections writing at once must all be answered, none with "database is locked".
    from concurrent.futures import ThreadPoolExecutor

    def create(n: int) -> int:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        conn.request(
            "POST",
            "/trainings",
            json.dumps({"uuid": f"concurrent-{n}"}),
            {"Content-Type": "application/json", "Authorization": f"Bearer {server.token}"},
        )
        status = conn.getresponse().status
        conn.close()
        return status

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(create, range(200)))

    assert statuses == [200] * 200
    conn = http.client.HTTPConnection("127.0.0.1", server.port)
    conn.request("GET", "/trainings/count", headers={"Authorization": f"Bearer {server.token}"})
    assert json.loads(conn.getresponse().read()) == 200
