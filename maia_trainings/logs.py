"""Log lines: one per request and one per training transition, as text or JSON, never a secret."""

from __future__ import annotations

import json
import logging
import re
import sys
import time
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

from flask import Flask, Response, g, request
from sqlalchemy.engine import make_url

REQUEST_ID_HEADER = "X-Request-Id"
# A client's request id is kept when it is 1-128 visible ASCII characters; anything else (too
# long, spaces, control characters that would forge log lines) is replaced by a new one.
VALID_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")
UNMATCHED_ROUTE = "<unmatched>"

requests_log = logging.getLogger("maia_trainings.requests")
transitions_log = logging.getLogger("maia_trainings.transitions")

# What a secret looks like wherever it may slip into a message (an exception's text, a URL):
# API tokens, Authorization values, credentials in URLs, and 64-hex-digit keys (webhook
# secrets and signatures).
_SECRET_SHAPES = (
    (re.compile(r"mt_[A-Za-z0-9_\-]{6,}"), "mt_[redacted]"),
    (re.compile(r"(?i)\b(bearer|basic)\s+[^\s\"',]+"), r"\1 [redacted]"),
    (re.compile(r"(?i)([a-z][a-z0-9+.\-]*://[^/\s:@\"']*):[^@\s/\"']*@"), r"\1:[redacted]@"),
    (re.compile(r"\b[0-9a-fA-F]{64}\b"), "[redacted]"),
)
_HANDLER_MARK = "maia_trainings_handler"


class Redactor:
    """Masks secrets in text: the shapes above, and the configured secrets themselves."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so that a secret containing another is masked whole.
        self.secrets = sorted({s for s in secrets if len(s) >= 4}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "[redacted]")
        for shape, mask in _SECRET_SHAPES:
            text = shape.sub(mask, text)
        return text


def configured_secrets(config: Any) -> list[str]:
    """The secrets the settings hold: the callback key and the datasources' passwords."""
    found = [config.get("WEBHOOK_CALLBACK_SECRET") or ""]
    for url in [config.get("DATABASE_URL"), *(config.get("DATASOURCES") or {}).values()]:
        try:
            found.append((make_url(url).password or "") if url else "")
        except Exception:
            found.append(str(url))  # not a URL: masked whole
    return [secret for secret in found if secret]


class Formatter(logging.Formatter):
    """A line per record: readable text, or a JSON object (``json=True``); redacted either way."""

    def __init__(self, *, node: str, json_lines: bool, redact: Redactor) -> None:
        super().__init__()
        self.node = node
        self.json_lines = json_lines
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC)
        stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"
        message = record.getMessage()
        if record.exc_info:
            message += "\n" + self.formatException(record.exc_info)
        fields: dict[str, Any] = getattr(record, "fields", {})
        if self.json_lines:
            line: dict[str, Any] = {
                "time": stamp,
                "level": record.levelname,
                "logger": record.name,
                "node": self.node,
                "message": message,
                **fields,
            }
            return self.redact(json.dumps(line, default=str))
        return self.redact(f"{stamp} {record.levelname} {record.name} [{self.node}] {message}")


def configure(app: Flask) -> None:
    """Send this process's log lines to stderr in LOG_FORMAT ("json" or text), at INFO; for
    the processes that serve or run trainings (create_app leaves logging alone)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        Formatter(
            node=str(app.config["NODE_NAME"]),
            json_lines=str(app.config["LOG_FORMAT"]).lower() == "json",
            redact=Redactor(configured_secrets(app.config)),
        )
    )
    setattr(handler, _HANDLER_MARK, True)
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, _HANDLER_MARK, False)]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    # APScheduler says at INFO every time a timed look runs: noise, every POLL_INTERVAL.
    logging.getLogger("apscheduler").setLevel(logging.WARNING)


def request_seconds() -> float:
    """Seconds since this request began (as its hooks saw it)."""
    now = time.perf_counter()
    started: float = g.get("request_started", now)
    return now - started


def route_template() -> str:
    """The route the request matched, as declared (``/trainings/<training_id>``), never the
    raw path: bounded in number, and free of whatever a client puts in a path."""
    rule = request.url_rule
    return rule.rule if rule is not None else UNMATCHED_ROUTE


def request_id() -> str:
    """This request's id: the client's X-Request-Id when valid, else a new one."""
    found: str = g.get("request_id") or _new_request_id()
    return found


def _new_request_id() -> str:
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    g.request_id = sent if VALID_REQUEST_ID.fullmatch(sent) else uuid.uuid4().hex
    return str(g.request_id)


def _begin() -> None:
    g.request_started = time.perf_counter()
    _new_request_id()


def _finish(response: Response) -> Response:
    response.headers[REQUEST_ID_HEADER] = request_id()
    # The token's name, once authentication ran (flask-httpauth keeps the caller in g).
    caller = g.get("flask_httpauth_user")
    fields = {
        "event": "request",
        "method": request.method,
        "route": route_template(),
        "status": response.status_code,
        "duration_ms": round(request_seconds() * 1000, 3),
        "token": getattr(caller, "name", None),
        "request_id": request_id(),
    }
    requests_log.info(
        "%s %s %s %.1fms token=%s request_id=%s",
        *(fields[name] for name in ("method", "route", "status", "duration_ms")),
        fields["token"] or "-",
        fields["request_id"],
        extra={"fields": fields},
    )
    return response


def transition(training_id: int, uuid_: str, before: str, after: str, attempt: int | None) -> None:
    """Log a training's change of status."""
    transitions_log.info(
        "training %s (%s): %s -> %s, attempt %s",
        training_id,
        uuid_,
        before,
        after,
        attempt,
        extra={
            "fields": {
                "event": "transition",
                "id": str(training_id),
                "uuid": uuid_,
                "from": before,
                "to": after,
                "attempt": attempt,
            }
        },
    )


def init_app(app: Flask) -> None:
    app.before_request(_begin)
    app.after_request(_finish)
