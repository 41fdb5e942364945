"""The waitress Channel against a real server: no busy loop, and every answer arrives whole.

``maia_trainings.server.Channel.writable`` reads waitress internals (the version is pinned in
setup.cfg); these tests fail if a waitress release changes what the override relies on.
"""

from __future__ import annotations

import http.client
import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from waitress import trigger, wasyncore
from waitress.channel import HTTPChannel
from waitress.server import BaseWSGIServer, MultiSocketServer

from maia_trainings import create_app
from maia_trainings.server import Channel, make_server

TIMEOUT = 20  # seconds any socket read may wait before the test fails rather than hangs


@pytest.fixture
def app(tmp_path: Path) -> Flask:
    instance = tmp_path / "instance"
    instance.mkdir()
    return create_app(
        {
            "TESTING": True,
            "DATABASE_URL": f"sqlite:///{instance / 'test.sqlite3'}",
            "SCHEDULER_ENABLED": False,
            "MODELS_DIR": str(instance / "models"),
        }
    )


@pytest.fixture
def token(app: Flask) -> str:
    # The CLI makes the tables too; the token is its output's last line.
    result = app.test_cli_runner().invoke(args=["trainings", "token", "create", "tester"])
    assert result.exit_code == 0, result.output
    return result.output.strip().splitlines()[-1]


def _create(app: Flask, token: str, count: int, meta: str = "") -> list[dict[str, Any]]:
    client = app.test_client()
    created = []
    for n in range(count):
        body = {"uuid": f"t-{n}-{time.monotonic_ns()}", "meta": meta or f"training {n}"}
        response = client.post("/trainings", json=body, headers=_bearer(token))
        assert response.status_code == 200, response.data
        created.append(response.json)
    return created


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def _sockets(server: BaseWSGIServer | MultiSocketServer) -> dict[int, Any]:
    return server.map if isinstance(server, MultiSocketServer) else server._map


@contextmanager
def serving(
    app: Flask,
    *,
    threads: int = 4,
    host: str = "127.0.0.1",
    send_buffer: int | None = None,
    **adjustments: Any,
) -> Iterator[BaseWSGIServer | MultiSocketServer]:
    """The server ``serve()`` runs, on free ports, its main loop in a thread of the test;
    ``send_buffer`` bytes fixes the kernel's send buffer of each connection it accepts."""
    server = make_server(app, host=host, port=0, threads=threads, **adjustments)
    if send_buffer:
        # Not a settable adjustment; waitress applies these to each accepted connection.
        server.adj.socket_options = [
            *server.adj.socket_options,
            (socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer),
        ]
    loop = threading.Thread(target=server.run, name="waitress-loop", daemon=True)
    loop.start()
    try:
        yield server
    finally:
        # Close every socket from within the main loop, which then ends for want of sockets.
        sockets = _sockets(server)
        wake = next(d for d in sockets.values() if isinstance(d, trigger.trigger))
        wake.pull_trigger(lambda: wasyncore.close_all(sockets))
        loop.join(TIMEOUT)
        server.task_dispatcher.shutdown(timeout=5)
        assert not loop.is_alive()


def _connect(
    port: int, host: str = "127.0.0.1", receive_buffer: int | None = None
) -> socket.socket:
    sock = socket.socket()
    if receive_buffer:
        # A small window: the server cannot hand a large answer to the kernel in one go.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(TIMEOUT)
    sock.connect((host, port))
    return sock


def _request(method: str, path: str, token: str, body: bytes = b"", last: bool = False) -> bytes:
    head = f"{method} {path} HTTP/1.1\r\nHost: localhost\r\nAuthorization: Bearer {token}\r\n"
    if body:
        head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    if last:
        head += "Connection: close\r\n"
    return head.encode() + b"\r\n" + body


def _read_to_end(sock: socket.socket, pause: float = 0.0) -> bytes:
    """Everything the server sends until it closes; ``pause`` seconds between reads."""
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
        time.sleep(pause)
    sock.close()
    return b"".join(chunks)


def _answers(data: bytes) -> list[tuple[int, bytes]]:
    """Split a stream of HTTP/1.1 answers (each with a Content-Length) into (status, body)."""
    answers = []
    while data:
        head, blank, rest = data.partition(b"\r\n\r\n")
        assert blank, f"an answer cut short in its head: {data[:200]!r}"
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.lower().split(": ", 1) for line in lines)
        length = int(headers["content-length"])
        assert len(rest) >= length, f"an answer cut short: {len(rest)} of {length} bytes"
        answers.append((int(status_line.split()[1]), rest[:length]))
        data = rest[length:]
    return answers


# The main loop does not spin ---------------------------------------------------------------

CLIENTS, REQUESTS_EACH = 8, 15
# Turns of waitress's main loop per request. Measured 2026-12-01 on 2 cores (waitress 3.0.2),
# 8 keep-alive clients each sending 15 GET /trainings/count from threads of the test process,
# 25 runs each with no, one and two cores kept busy: with Channel 1.3 to 2.0 (median 1.7);
# with stock HTTPChannel 32 to 109 (medians 41, 53, 76). The bound leaves a margin of about 3
# above the first and 5 below the second.
MAX_TURNS_PER_REQUEST = 6


def _loop_turns_per_request(app: Flask, token: str, channel: type[HTTPChannel]) -> float:
    with serving(app, threads=4) as server:
        assert isinstance(server, BaseWSGIServer)
        server.channel_class = channel
        # Each turn of the loop asks every dispatcher in its map whether it is readable once,
        # the listening socket included: counting those questions counts the turns.
        turns = 0
        readable = server.readable

        def counting_readable() -> bool:
            nonlocal turns
            turns += 1
            return readable()

        server.readable = counting_readable  # type: ignore[method-assign]
        connections = [
            http.client.HTTPConnection("127.0.0.1", int(server.effective_port), timeout=TIMEOUT)
            for _ in range(CLIENTS)
        ]
        for connection in connections:
            connection.connect()
        start = threading.Barrier(CLIENTS)

        def client(connection: http.client.HTTPConnection) -> list[int]:
            start.wait()
            statuses = []
            for _ in range(REQUESTS_EACH):
                connection.request("GET", "/trainings/count", headers=_bearer(token))
                response = connection.getresponse()
                response.read()
                statuses.append(response.status)
            connection.close()
            return statuses

        before = turns
        with ThreadPoolExecutor(CLIENTS) as pool:
            statuses = [s for batch in pool.map(client, connections) for s in batch]
        served = turns - before
    assert statuses == [200] * CLIENTS * REQUESTS_EACH
    return served / len(statuses)


def test_the_main_loop_does_not_spin_while_requests_are_served(app, token):
    ours = _loop_turns_per_request(app, token, Channel)
    stock = _loop_turns_per_request(app, token, HTTPChannel)

    assert ours <= MAX_TURNS_PER_REQUEST, (
        f"waitress's main loop went round {ours:.1f} times per request (stock waitress: "
        f"{stock:.1f}): Channel.writable no longer keeps it from spinning"
    )
    # The same measurement sees stock waitress spin more; if it does not, waitress has changed
    # and Channel.writable must be checked against the new version. Relative, not the bound:
    # on 2026-12-02 this machine gave stock waitress only 3.0-3.5 turns (ours 1.1-1.3), with
    # the code of before and after that day's changes alike.
    assert stock >= 2 * ours, (
        f"stock waitress went round only {stock:.1f} times per request (ours: {ours:.1f})"
    )


# Every answer arrives whole, in order ------------------------------------------------------


def test_pipelined_requests_are_answered_whole_and_in_order(app, token):
    first, second = _create(app, token, 2)
    with serving(app) as server:
        sock = _connect(int(server.effective_port))
        sock.sendall(
            _request("GET", f"/trainings/{first['id']}", token)
            + _request("POST", "/trainings", token, json.dumps({"uuid": "piped"}).encode())
            + _request("GET", "/trainings/count", token)
            + _request("GET", "/trainings/999999", token)
            + _request("GET", f"/trainings/{second['id']}", token, last=True)
        )
        answers = _answers(_read_to_end(sock))

    assert [status for status, _ in answers] == [200, 200, 200, 404, 200]
    bodies = [json.loads(body) for _, body in answers]
    assert bodies[0]["uuid"] == first["uuid"]
    assert bodies[1]["uuid"] == "piped"
    assert bodies[2] == 3  # counted after the create sent before it
    assert bodies[3]["code"] == 404
    assert bodies[4]["uuid"] == second["uuid"]


# A list of this many trainings with this meta is about 1.2 MB. The kernel would take all of
# it at once (loopback send buffers grow to megabytes), so the server's send buffer is kept
# small, and the answer waits in waitress's buffers until its reader reads.
BIG_LIST, BIG_META = 24, "m" * 50_000
SMALL_SEND_BUFFER = 16 * 1024


def _big_list_request(token: str, order: str, last: bool = False) -> bytes:
    return _request("GET", f"/trainings?_limit=100&_sort=id:{order}", token, last=last)


def _assert_big_list(answer: tuple[int, bytes], ids: list[int]) -> None:
    status, body = answer
    assert status == 200
    trainings = json.loads(body)
    assert [t["id"] for t in trainings] == ids
    assert all(t["meta"] == BIG_META for t in trainings)


def test_a_slow_reader_gets_a_large_answer_whole_and_holds_no_thread(app, token):
    ids = [t["id"] for t in _create(app, token, BIG_LIST, BIG_META)]
    # One thread: if the large answer held it until read, nobody else would be answered.
    with serving(app, threads=1, send_buffer=SMALL_SEND_BUFFER) as server:
        slow = _connect(int(server.effective_port), receive_buffer=4096)
        slow.sendall(_big_list_request(token, "ASC", last=True))
        slow.recv(1, socket.MSG_PEEK)  # the answer has begun, and waits for its reader
        other = http.client.HTTPConnection("127.0.0.1", int(server.effective_port), timeout=TIMEOUT)
        for _ in range(3):
            other.request("GET", "/trainings/count", headers=_bearer(token))
            assert json.loads(other.getresponse().read()) == BIG_LIST
        other.close()
        data = _read_to_end(slow, pause=0.001)

    (answer,) = _answers(data)
    assert len(answer[1]) > 1_000_000
    _assert_big_list(answer, ids)


def test_pipelined_answers_over_the_high_water_mark_reach_a_slow_reader(app, token):
    # Past the high-water mark the worker waits for the main loop to drain the connection,
    # with the next pipelined request still pending: the one case in which Channel lets the
    # main loop write while a request is in service. Without it, this answer would never end.
    ids = [t["id"] for t in _create(app, token, BIG_LIST, BIG_META)]
    with serving(
        app, threads=2, outbuf_high_watermark=256 * 1024, send_buffer=SMALL_SEND_BUFFER
    ) as server:
        slow = _connect(int(server.effective_port), receive_buffer=4096)
        slow.sendall(
            _big_list_request(token, "ASC")
            + _big_list_request(token, "DESC")
            + _big_list_request(token, "ASC", last=True)
        )
        slow.recv(1, socket.MSG_PEEK)
        other = http.client.HTTPConnection("127.0.0.1", int(server.effective_port), timeout=TIMEOUT)
        other.request("GET", "/trainings/count", headers=_bearer(token))
        assert json.loads(other.getresponse().read()) == BIG_LIST
        other.close()
        answers = _answers(_read_to_end(slow))

    assert len(answers) == 3
    _assert_big_list(answers[0], ids)
    _assert_big_list(answers[1], ids[::-1])
    _assert_big_list(answers[2], ids)


def test_every_listener_of_a_host_with_several_addresses_uses_the_channel(app, monkeypatch):
    # "localhost" is often both 127.0.0.1 and ::1; waitress then listens on each address
    # behind a MultiSocketServer. Two loopback addresses stand in for them here.
    addresses = ["127.0.0.1", "127.0.0.2"]
    try:
        with socket.socket() as probe:
            probe.bind((addresses[1], 0))
    except OSError:
        pytest.skip("127.0.0.2 is not a loopback address here")
    resolve = socket.getaddrinfo

    def two_addresses(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        if host != "maia.test":
            return resolve(host, port, *args, **kwargs)
        return [
            (socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "", (address, int(port)))
            for address in addresses
        ]

    monkeypatch.setattr(socket, "getaddrinfo", two_addresses)
    with serving(app, host="maia.test") as server:
        assert isinstance(server, MultiSocketServer)
        listening = server.effective_listen
        assert sorted(host for host, _ in listening) == addresses
        for host, port in listening:
            sock = _connect(int(port), host=host)
            sock.sendall(b"GARBAGE\r\nHost: localhost\r\n\r\n")
            # Channel's error answers are JSON; stock waitress answers in plain text.
            (answer,) = _answers(_read_to_end(sock))
            assert answer[0] == 400
            assert json.loads(answer[1])["code"] == 400
