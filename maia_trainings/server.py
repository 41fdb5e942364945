"""Serving the app with waitress, whose own error answers use the API's error body too."""

from __future__ import annotations

import json
import logging
from typing import Any, cast

from flask import Flask
from waitress.channel import HTTPChannel
from waitress.parser import HTTPRequestParser
from waitress.server import BaseWSGIServer, MultiSocketServer, create_server
from waitress.task import ErrorTask

from .error_handlers import MESSAGES
from .headers import CONTENT_SECURITY_POLICY


class JsonErrorTask(ErrorTask):
    """Waitress's answer to a request it cannot parse (a bad request line, conflicting
    Content-Length and Transfer-Encoding, oversized headers): the documented JSON body,
    instead of waitress's plain text."""

    def execute(self) -> None:
        # Waitress hands an ErrorTask the request parser whose error it reports (its type hints
        # say otherwise).
        error = cast(HTTPRequestParser, self.request).error
        assert error is not None
        code = int(error.code)
        # Waitress quotes the offending line after the reason; it may hold a token.
        reason = str(error.body).split('"', 1)[0].strip().rstrip(":")
        message = MESSAGES.get(code, error.reason.lower()) + (f": {reason}" if reason else "")
        body = json.dumps({"code": code, "message": message}).encode()
        self.status = f"{code} {error.reason}"
        self.response_headers = [
            *self.response_headers,
            ("Content-Type", "application/json"),
            ("X-Content-Type-Options", "nosniff"),
            ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
        ]
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    """Waitress's connection, with its JSON error answers and without a busy loop.

    While a request is being served, waitress's worker thread sends the answer itself
    (``write_soon`` flushes at once). Stock waitress also marks the connection writable for its
    main loop as long as bytes are in flight, but the main loop cannot take the buffer's lock
    while the worker holds it around its ``send``: ``select`` returns at once, nothing is done,
    and the loop spins, taking the GIL from the workers. Measured on 2026-11-28 with 16 connections
    creating trainings, the loop went round 11 times per request (142 at 64), costing more
    CPU than the requests themselves. Here a connection with a request in service is writable
    only when its buffer is over the high-water mark (the worker is then waiting for the main
    loop to drain it); anything else left in the buffer is sent when the request finishes,
    since waitress wakes the main loop then.

    The override reads attributes waitress does not document (``requests``, ``will_close``,
    ``close_when_flushed``, ``total_outbufs_len``, ``adj.outbuf_high_watermark``), so setup.cfg
    pins waitress to 3.0.x (3.0.2 tested), and tests/integration/test_server_channel.py fails
    if the loop spins again or answers stop arriving (pipelined, slow readers, backpressure).
    """

    error_task_class = JsonErrorTask

    def writable(self) -> bool:
        if self.requests and not (self.will_close or self.close_when_flushed):
            return self.total_outbufs_len > self.adj.outbuf_high_watermark
        return bool(super().writable())


def make_server(
    app: Flask, *, host: str, port: int, threads: int, **adjustments: Any
) -> BaseWSGIServer | MultiSocketServer:
    """The waitress server for ``app``, listening (port 0 picks a free port) but not yet run;
    ``adjustments`` are further waitress settings (the tests lower ``outbuf_high_watermark``)."""
    # One warning per request that waits for a thread is noise under load, and costs time.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    sockets: dict[int, Any] = {}
    server = create_server(
        app,
        map=sockets,
        host=host,
        port=port,
        threads=threads,
        ident="maia-trainings",
        **adjustments,
    )
    # A host with several addresses ("localhost" as 127.0.0.1 and ::1) gets one listener each,
    # behind a MultiSocketServer that has no channel_class: set it on every listener.
    for listener in sockets.values():
        if isinstance(listener, BaseWSGIServer):
            listener.channel_class = Channel
    return server


def serve(app: Flask, *, host: str, port: int, threads: int) -> None:
    """Serve ``app`` until the process is told to stop (SystemExit or KeyboardInterrupt)."""
    make_server(app, host=host, port=port, threads=threads).run()
