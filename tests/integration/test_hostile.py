"""Hostile requests, sent byte for byte to a real waitress server.

Each file in ``tests/hostile/`` is one case: a few ``# key: value`` lines, then a raw HTTP
request (request line, headers, blank line, body). The loader turns the file's ``\\n`` line
ends into CRLF, drops the file's final newline, and substitutes at run time:

- ``{TOKEN}`` (a write token), ``{READ_TOKEN}`` (a read token), ``{ID}`` (a stored training);
- ``{GENERATED}``: what the ``# generate:`` line makes, as bytes (large or binary bodies are
  generated, not stored): ``repeat(TEXT_OR_BYTES, N)``, ``nest(OPEN, CLOSE, N, middle="")``
  (``OPEN`` N times, ``middle``, ``CLOSE`` N times) or ``raw(BYTES)``;
- ``{LENGTH}``: the body's length in bytes, once everything else is in place.

Keys: ``case`` (what it is about), ``expect`` (the status), ``expect-body`` (the JSON a 2xx
answer must be), ``expect-errors`` (names that must be keys of the error body's ``errors``).

Every case must get its status with the documented ``{code, message[, errors]}`` JSON body,
never a trace or an HTML page; the server must still be healthy after it, and the stored
trainings must be exactly what they were before the first case.
"""

from __future__ import annotations

import ast
import contextlib
import json
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from email.parser import BytesHeaderParser
from pathlib import Path
from typing import Any

import pytest
from conftest import TESTS, Server, flask_command, server_env, start_server, stop_server

HOSTILE = TESTS / "hostile"
CASE_FILES = sorted(HOSTILE.glob("*.http"))
SCORING = "maia_trainings.trainers.scoring:train"
ERROR_KEYS = {"code", "message", "errors"}
NO_BODY = object()
REPLY_TIMEOUT = 30.0

# The trainings every case starts from (and must leave as they are).
SEEDS = [
    {
        "uuid": "seed-queued",
        "version": "1",
        "meta": "free text",
        "binaryPath": "seed/model.skops",
    },
    {
        "uuid": "seed-scheduled",
        "scheduled_at": "2999-01-01T00:00:00Z",
        "meta": {"model": "random_forest", "seed": 7},
    },
    # Wildcards of LIKE in a stored value: filters must match them literally.
    {"uuid": "50%_off", "version": 'it\'s "quoted"', "meta": "x"},
]


# Case files ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    name: str
    description: str
    expect: int
    expect_body: Any
    expect_errors: tuple[str, ...]
    generate: str | None
    request: str  # the file's request text, \n line ends


def load_case(path: Path) -> Case:
    lines = path.read_text(encoding="utf-8").split("\n")
    keys: dict[str, str] = {}
    while lines and lines[0].startswith("#"):
        key, colon, value = lines.pop(0)[1:].partition(":")
        assert colon, f"{path.name}: a '# key: value' line was expected"
        keys[key.strip()] = value.strip()
    unknown = set(keys) - {"case", "expect", "expect-body", "expect-errors", "generate"}
    assert not unknown, f"{path.name}: unknown keys {unknown}"
    assert "case" in keys, f"{path.name}: says not what it is about"
    return Case(
        name=path.stem,
        description=keys["case"],
        expect=int(keys["expect"]),
        expect_body=json.loads(keys["expect-body"]) if "expect-body" in keys else NO_BODY,
        expect_errors=tuple(keys.get("expect-errors", "").split()),
        generate=keys.get("generate"),
        request="\n".join(lines),
    )


def _literal(node: ast.expr) -> Any:
    return ast.literal_eval(node)


def _as_bytes(value: str | bytes) -> bytes:
    return value if isinstance(value, bytes) else value.encode("utf-8")


def generate(spec: str) -> bytes:
    """What a ``# generate:`` line describes: ``repeat(...)``, ``nest(...)`` or ``raw(...)``."""
    call = ast.parse(spec, mode="eval").body
    assert isinstance(call, ast.Call)
    assert isinstance(call.func, ast.Name)
    args = [_literal(arg) for arg in call.args]
    kwargs = {kw.arg: _literal(kw.value) for kw in call.keywords}
    match call.func.id:
        case "repeat":
            text, count = args
            return _as_bytes(text) * count
        case "nest":
            opening, closing, depth = args
            middle = _as_bytes(kwargs.get("middle", ""))
            return _as_bytes(opening) * depth + middle + _as_bytes(closing) * depth
        case "raw":
            (value,) = args
            return _as_bytes(value)
    raise ValueError(f"unknown generator {spec!r}")


def _assemble(text: str, generated: bytes) -> bytes:
    """``text`` with CRLF line ends, as UTF-8, with ``generated`` at each ``{GENERATED}``."""
    parts = [part.replace("\n", "\r\n").encode("utf-8") for part in text.split("{GENERATED}")]
    return generated.join(parts)


def build_request(case: Case, values: dict[str, str]) -> bytes:
    """The raw bytes of ``case``'s request, placeholders filled in."""
    text = case.request
    for key, value in values.items():
        text = text.replace("{" + key + "}", value)
    head, _, body = text.partition("\n\n")
    head = head.rstrip("\n")
    body = body.removesuffix("\n")
    generated = generate(case.generate) if case.generate else b""
    assert not case.generate or "{GENERATED}" in text, f"{case.name}: {{GENERATED}} is unused"
    body_bytes = _assemble(body, generated)
    head_bytes = _assemble(head, generated).replace(b"{LENGTH}", str(len(body_bytes)).encode())
    return head_bytes + b"\r\n\r\n" + body_bytes


# Talking to the server -------------------------------------------------------------------


@dataclass
class Reply:
    status: int
    headers: Message
    body: bytes
    raw: bytes


def _chunked(data: bytes) -> bytes | None:
    """A chunked body decoded, or None while it is incomplete."""
    body = b""
    while True:
        line_end = data.find(b"\r\n")
        if line_end < 0:
            return None
        size = int(data[:line_end].split(b";")[0], 16)
        if size == 0:
            return body if data.find(b"\r\n\r\n", line_end) >= 0 else None
        start = line_end + 2
        if len(data) < start + size + 2:
            return None
        body += data[start : start + size]
        data = data[start + size + 2 :]


def parse_reply(raw: bytes, closed: bool) -> Reply | None:
    """The first response in ``raw``, or None while it is incomplete."""
    end = raw.find(b"\r\n\r\n")
    if end < 0:
        return None
    status_line, _, header_block = raw[:end].partition(b"\r\n")
    headers = BytesHeaderParser().parsebytes(header_block + b"\r\n\r\n")
    rest = raw[end + 4 :]
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        body = _chunked(rest)
    elif headers.get("Content-Length") is not None:
        length = int(headers["Content-Length"])
        body = rest[:length] if len(rest) >= length else None
    else:
        body = rest if closed else None
    if body is None:
        return None
    return Reply(status=int(status_line.split()[1]), headers=headers, body=body, raw=raw)


def exchange(port: int, request: bytes) -> Reply:
    """Send ``request`` as it is; read until the first response is complete or the server
    closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=REPLY_TIMEOUT) as sock:
        # The server may answer and close before it has read everything.
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            sock.sendall(request)
        raw = b""
        deadline = time.monotonic() + REPLY_TIMEOUT
        while time.monotonic() < deadline:
            try:
                data = sock.recv(65536)
            except ConnectionResetError:
                data = b""
            except TimeoutError:
                break
            raw += data
            reply = parse_reply(raw, closed=not data)
            if reply is not None:
                return reply
            if not data:
                break
    raise AssertionError(f"no complete response; received {raw[:500]!r}")


def stored(server: Server) -> dict[str, Any]:
    """Every stored training, and their count, as a write token sees them."""
    return {
        "trainings": server.get("/trainings?_limit=-1"),
        "count": server.get("/trainings/count"),
    }


def health_status(server: Server) -> int:
    with urllib.request.urlopen(server.url + "/healthz", timeout=REPLY_TIMEOUT) as response:
        return response.status


# The server ------------------------------------------------------------------------------


@dataclass
class Hostile:
    server: Server
    values: dict[str, str]
    snapshot: dict[str, Any]


def _prepare_instance(instance: Path) -> None:
    """Folders with links that lead out of them, for the path traversal cases."""
    datasets = instance / "datasets"
    models = instance / "models"
    datasets.mkdir(parents=True)
    models.mkdir()
    (datasets / "escape.csv").symlink_to("/etc/passwd")
    (datasets / "outside").symlink_to("/etc")
    (datasets / "loop.csv").symlink_to("loop.csv")
    (models / "escape").symlink_to("/etc")
    (models / "loop.skops").symlink_to("loop.skops")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def hostile(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Hostile]:
    """One server for the whole corpus, on each database in turn (SQL fragments in every
    filter and in ``_sort`` meet both dialects)."""
    postgres = request.getfixturevalue("postgres_run") if request.param == "postgresql" else None
    instance = tmp_path_factory.mktemp("hostile") / "instance"
    _prepare_instance(instance)
    database = {} if postgres is None else {"DATABASE_URL": postgres.new_schema()}
    server = start_server(
        instance,
        **database,
        TRAINER=SCORING,
        SCHEDULER_ENABLED="false",
        # Many cases fail authentication on purpose; the back-off is not what they test.
        AUTH_FAILURES_ALLOWED="1000000",
        # Webhooks may reach this box only: the cases naming other hosts are refused for that.
        WEBHOOK_ALLOWED_HOSTS='["127.0.0.1"]',
        WEBHOOK_CALLBACK_SECRET="hostile-callback-secret",
    )
    try:
        out = subprocess.run(
            flask_command("trainings", "token", "create", "reader", "--scope", "read"),
            env=server_env(instance, **database),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        read_token = out.strip().splitlines()[-1]
        ids = [server.post("/trainings", seed)["id"] for seed in SEEDS]
        values = {"TOKEN": server.token, "READ_TOKEN": read_token, "ID": ids[0]}
        yield Hostile(server=server, values=values, snapshot=stored(server))
    finally:
        stop_server(server)


# The tests -------------------------------------------------------------------------------


def test_the_corpus_is_large_and_well_formed():
    cases = [load_case(path) for path in CASE_FILES]
    assert len(cases) >= 60
    for case in cases:
        assert 200 <= case.expect < 600, case.name
        if case.expect < 300:
            assert case.expect_body is not NO_BODY, f"{case.name}: a 2xx needs expect-body"
        # Each request names where it goes and ends its head; the body is measured for it.
        request = build_request(case, {"TOKEN": "t", "READ_TOKEN": "r", "ID": "1"})
        assert b"\r\n\r\n" in request, case.name


def assert_error_body(reply: Reply, case: Case) -> None:
    assert reply.headers.get_content_type() == "application/json", reply.raw[:300]
    body = json.loads(reply.body)
    assert isinstance(body, dict)
    assert {"code", "message"} <= set(body) <= ERROR_KEYS, body
    assert type(body["code"]) is int
    assert body["code"] == case.expect
    assert isinstance(body["message"], str)
    assert body["message"]
    if "errors" in body:
        assert isinstance(body["errors"], dict)
        assert body["errors"]
    for name in case.expect_errors:
        assert name in body.get("errors", {}), body
    if case.expect == 405:
        assert reply.headers.get("Allow"), "a 405 says which methods are allowed"


@pytest.mark.parametrize("path", CASE_FILES, ids=[path.stem for path in CASE_FILES])
def test_hostile_request(hostile: Hostile, path: Path):
    case = load_case(path)
    reply = exchange(hostile.server.port, build_request(case, hostile.values))

    text = reply.raw.decode("latin-1")
    assert "Traceback" not in text
    assert "<html" not in text.lower()
    assert "<!doctype" not in text.lower()
    assert reply.status == case.expect, f"{case.description}: {reply.raw[:600]!r}"
    if case.expect_body is not NO_BODY:
        assert json.loads(reply.body) == case.expect_body
    else:
        assert_error_body(reply, case)

    assert health_status(hostile.server) == 200
    assert stored(hostile.server) == hostile.snapshot
