"""Many clients at once against a real waitress server: every answer is its own stored row."""

from __future__ import annotations

import http.client
import json
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import Server
from helpers import SHAPES


def _post(conn: http.client.HTTPConnection, token: str, body: dict[str, Any]) -> tuple[int, Any]:
    conn.request(
        "POST",
        "/trainings",
        json.dumps(body),
        {"Content-Type": "application/json", "Authorization": f"Bearer {token}"},
    )
    response = conn.getresponse()
    return response.status, json.loads(response.read())


def _all_trainings(server: Server) -> list[dict[str, Any]]:
    return server.get("/trainings?_limit=10000&_sort=id:ASC")


def test_concurrent_creates_each_answer_with_their_own_stored_training(server_factory):
    # Creates arriving together are committed together; each client must still get back
    # exactly its own training, with the id under which it was stored.
    # An API-only node: a training run here would give its row a binaryPath and a new status
    # before the rows are read back (seen on a loaded CI machine), and runs are not the subject.
    server = server_factory(SCHEDULER_ENABLED="false")
    clients, per_client = 24, 12

    def body(number: int, i: int) -> dict[str, Any]:
        shape = SHAPES[(number + i) % len(SHAPES)]
        return {"uuid": f"c{number}-{i}", "version": f"{number}.{i}", **shape}

    def one_client(number: int) -> list[tuple[dict[str, Any], int, Any]]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        answers = []
        for i in range(per_client):
            sent = body(number, i)
            answers.append((sent, *_post(conn, server.token, sent)))
        conn.close()
        return answers

    with ThreadPoolExecutor(clients) as pool:
        answers = [answer for batch in pool.map(one_client, range(clients)) for answer in batch]

    assert [status for _, status, _ in answers] == [200] * clients * per_client
    ids = [answer["id"] for _, _, answer in answers]
    assert len(set(ids)) == len(ids)
    stored = {training["id"]: training for training in _all_trainings(server)}
    assert len(stored) == clients * per_client
    for sent, _, answer in answers:
        for shown in (answer, stored[answer["id"]]):
            assert shown["uuid"] == sent["uuid"]
            assert shown["version"] == sent["version"]
            assert shown["scheduled_at"] == sent.get("scheduled_at")
            assert shown["meta"] == sent.get("meta")
            assert shown["binaryPath"] == sent.get("binaryPath")
            if "scheduled_at" in sent:
                assert shown["status"] == "scheduled"
            else:
                assert shown["status"] != "scheduled"


def _race(server: Server, bodies: list[dict[str, Any]]) -> list[tuple[int, Any]]:
    """POST every body at the same moment, each on its own connection."""
    start = threading.Barrier(len(bodies))

    def send(body: dict[str, Any]) -> tuple[int, Any]:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=60)
        conn.connect()
        start.wait()
        try:
            return _post(conn, server.token, body)
        finally:
            conn.close()

    with ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(send, bodies))


def test_racing_retries_of_one_request_share_one_training(server):
    answers = _race(server, [{"uuid": "retried", "version": "7"}] * 16)

    assert [status for status, _ in answers] == [200] * 16
    assert len({body["id"] for _, body in answers}) == 1
    assert [t["uuid"] for t in _all_trainings(server)] == ["retried"]


def test_racing_different_requests_for_one_uuid_store_exactly_one(server):
    answers = _race(server, [{"uuid": "contested", "version": str(n)} for n in range(16)])

    statuses = Counter(status for status, _ in answers)
    assert statuses == {200: 1, 409: 15}
    (winner,) = [body for status, body in answers if status == 200]
    for status, body in answers:
        if status == 409:
            assert body["code"] == 409
            assert "contested" in body["message"]
    (stored,) = _all_trainings(server)
    assert stored["id"] == winner["id"]
    assert stored["version"] == winner["version"]
