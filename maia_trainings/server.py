"""Serving the app with waitress, whose own error answers use the API's error body too."""

from __future__ import annotations

import json
import logging

from flask import Flask
from waitress import create_server
from waitress.channel import HTTPChannel
from waitress.task import ErrorTask

from .errors import MESSAGES
from .headers import CONTENT_SECURITY_POLICY


class JsonErrorTask(ErrorTask):
    """Waitress's answer to a request it cannot parse (a bad request line, conflicting
    Content-Length and Transfer-Encoding, oversized headers): the documented JSON body,
    instead of waitress's plain text."""

    def execute(self) -> None:
        error = self.request.error
        code = int(error.code)
        # Waitress quotes the offending line after the reason; it may hold a token.
        reason = str(error.body).split('"', 1)[0].strip().rstrip(":")
        message = MESSAGES.get(code, error.reason.lower()) + (f": {reason}" if reason else "")
        body = json.dumps({"code": code, "message": message}).encode()
        self.status = f"{code} {error.reason}"
        self.response_headers.extend(
            [
                ("Content-Type", "application/json"),
                ("X-Content-Type-Options", "nosniff"),
                ("Content-Security-Policy", CONTENT_SECURITY_POLICY),
            ]
        )
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class Channel(HTTPChannel):
    """Waitress's connection, with its JSON error answers and without a busy loop.

    While a request is being served, waitress's worker thread sends the answer itself
    (``write_soon`` flushes at once). Stock waitress also marks the connection writable for its
    main loop as long as bytes are in flight, but the main loop cannot take the buffer's lock
    while the worker holds it around its ``send``: ``select`` returns at once, nothing is done,
    and the loop spins, taking the GIL from the workers. Measured with 16 connections creating
    trainings, the loop went round 11 times per request (142 at 64 connections), costing more
    CPU than the requests themselves. Here a connection with a request in service is writable
    only when its buffer is over the high-water mark (the worker is then waiting for the main
    loop to drain it); anything else left in the buffer is sent when the request finishes,
    since waitress wakes the main loop then.
    """

    error_task_class = JsonErrorTask

    def writable(self) -> bool:
        if self.requests and not (self.will_close or self.close_when_flushed):
            return self.total_outbufs_len > self.adj.outbuf_high_watermark
        return bool(super().writable())


def serve(app: Flask, *, host: str, port: int, threads: int) -> None:
    """Serve ``app`` until the process is told to stop (SystemExit or KeyboardInterrupt)."""
    # One warning per request that waits for a thread is noise under load, and costs time.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(app, host=host, port=port, threads=threads, ident="maia-trainings")
    server.channel_class = Channel  # type: ignore[union-attr]
    server.run()
