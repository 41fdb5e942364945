"""A webhook receiver for the tests: an HTTP server on 127.0.0.1 in a thread that verifies each
request's signature, records it, and answers with the statuses it is given."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Received:
    """One request as the receiver saw it."""

    path: str
    headers: dict[str, str]
    body: bytes
    signed: bool  # the signature matched the secret and the body
    answered: int

    @property
    def event(self) -> str:
        return self.headers.get("X-Maia-Event", "")

    @property
    def delivery(self) -> str:
        return self.headers.get("X-Maia-Delivery", "")

    def json(self) -> Any:
        return json.loads(self.body)


def verify(secret: str, header: str, body: bytes, tolerance: float = 300) -> bool:
    """The README's check: ``t=<unix time>,v1=<hex HMAC-SHA256 of "<t>.<body>">``, recent."""
    try:
        parts = dict(item.split("=", 1) for item in header.split(","))
        timestamp = int(parts["t"])
    except (KeyError, ValueError):
        return False
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    fresh = abs(time.time() - timestamp) <= tolerance
    return fresh and hmac.compare_digest(expected.hexdigest(), parts.get("v1", ""))


class Receiver:
    """Answers each POST with the next of ``answers`` (then ``default``), after checking its
    signature with ``secret``; ``received`` lists what came, in order."""

    def __init__(self, answers: list[int] | None = None, default: int = 200) -> None:
        self.answers = list(answers or [])
        self.default = default
        self.secret = ""
        self.received: list[Received] = []
        self.headers_out: dict[str, str] = {}
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", 0))
                body = self.rfile.read(length)
                if len(body) < length:
                    return  # cut short: its sender died mid-request (a test SIGKILLs it)
                with receiver._lock:
                    status = receiver.answers.pop(0) if receiver.answers else receiver.default
                    signed = verify(receiver.secret, self.headers.get("X-Maia-Signature", ""), body)
                    receiver.received.append(
                        Received(self.path, dict(self.headers), body, signed, status)
                    )
                    extra = dict(receiver.headers_out)
                self.send_response(status)
                for name, value in extra.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def do_GET(self) -> None:
                with receiver._lock:
                    receiver.received.append(
                        Received(self.path, dict(self.headers), b"", False, 200)
                    )
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> Receiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()

    def wait_for(self, count: int, timeout: float = 15) -> list[Received]:
        """Wait until ``count`` requests came (AssertionError after ``timeout`` s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.received) >= count:
                    return list(self.received)
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received)} requests came, not {count}: {self.received}")
