"""Many clients at once against a real waitress server: every answer is its own stored row."""

from __future__ import annotations

import http.client
import json
import socket
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conftest import Server


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


LATER = "2031-01-02T03:04:05.678Z"
# Bodies of different shapes, as different clients send them: concurrent creates are stored
# together, and no field of one may be lost to the shape of another.
SHAPES = (
    {},
    {"scheduled_at": LATER},
    {"meta": "free text", "binaryPath": "models/m.bin"},
    {"scheduled_at": LATER, "meta": '{"seconds": 0}'},
)


def test_concurrent_creates_each_answer_with_their_own_stored_training(server):
    # Creates arriving together are committed together; each client must still get back
    # exactly its own training, with the id under which it was stored.
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


def test_a_large_answer_reaches_a_slow_reader_whole_while_others_are_served(server):
    # A list answer bigger than the socket buffers: the worker cannot send it in one go.
    meta = "m" * 60_000
    for n in range(40):
        server.post("/trainings", {"uuid": f"big-{n}", "meta": meta})

    slow = socket.socket()
    slow.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    slow.settimeout(60)
    slow.connect(("127.0.0.1", server.port))
    slow.sendall(
        b"GET /trainings?_limit=100 HTTP/1.1\r\nHost: localhost\r\n"
        + f"Authorization: Bearer {server.token}\r\nConnection: close\r\n\r\n".encode()
    )
    # While that answer waits for its reader, the server goes on answering others.
    assert server.get("/trainings/count") == 40

    chunks = []
    while chunk := slow.recv(65536):
        chunks.append(chunk)
    slow.close()
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200")
    trainings = json.loads(body)
    assert len(trainings) == 40
    assert all(t["meta"] == meta for t in trainings)


def test_concurrent_creates_without_a_writer_lock_each_get_their_own_row(app, auth):
    # On PostgreSQL there is no process-wide writer lock: callers commit concurrent batches,
    # and each answers with its own row. SQLite without the lock (its busy timeout then orders
    # the writers) runs the same path here, though it cannot reproduce PostgreSQL's timing.
    import contextlib

    from maia_trainings import db

    db.database(app).write_lock = contextlib.nullcontext()
    start = threading.Barrier(16)

    def one_client(number: int) -> list[tuple[str, int, Any]]:
        client = app.test_client()
        start.wait()
        answers = []
        for i in range(10):
            uuid = f"n{number}-{i}"
            response = client.post("/trainings", json={"uuid": uuid, **SHAPES[i % 4]}, headers=auth)
            answers.append((uuid, response.status_code, response.json))
        return answers

    with ThreadPoolExecutor(16) as pool:
        answers = [answer for batch in pool.map(one_client, range(16)) for answer in batch]

    assert [status for _, status, _ in answers] == [200] * 160
    assert all(body["uuid"] == uuid for uuid, _, body in answers)
    ids = [body["id"] for _, _, body in answers]
    assert len(set(ids)) == 160
    assert None not in ids
    client = app.test_client()
    for uuid, _, body in answers:
        assert client.get(f"/trainings/{body['id']}", headers=auth).json["uuid"] == uuid
