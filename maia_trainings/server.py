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


class JsonErrorChannel(HTTPChannel):
    error_task_class = JsonErrorTask


def serve(app: Flask, *, host: str, port: int, threads: int) -> None:
    """Serve ``app`` until the process is told to stop (SystemExit or KeyboardInterrupt)."""
    # One warning per request that waits for a thread is noise under load, and costs time.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    server = create_server(app, host=host, port=port, threads=threads, ident="maia-trainings")
    server.channel_class = JsonErrorChannel  # type: ignore[union-attr]
    server.run()
