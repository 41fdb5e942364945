"""Answers for every failure: the one error body, {code, message[, errors]}, by Accept.

The errors themselves (a hierarchy, each class with its status) are in ``errors``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping
from typing import Any

from flask import Flask, Response
from marshmallow import ValidationError
from sqlalchemy.exc import OperationalError
from werkzeug.exceptions import HTTPException

from . import formats
from .errors import NotAcceptable, ServiceError, TooManyRequests

log = logging.getLogger(__name__)

# The texts the original API documentation gives, and ours for the statuses it does not name.
MESSAGES = {
    400: "the request is invalid",
    403: "this operation requires authentication",
    404: "the resource was not found",
    405: "this method is not allowed on this resource",
    406: "no acceptable response type was offered",
    409: "the request conflicts with the resource's current state",
    413: "the request body is too large",
    415: "the request body's content type is not supported",
    429: "too many requests",
    500: "unexpected error",
    503: "the service is temporarily unavailable",
}
VALIDATION_MESSAGE = "the request has invalid fields"
# Names short and plain enough to be field names or operators (ours are at most 24 characters),
# and too short to be a token (46): others are reported under HIDDEN_NAME.
SHOWN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]{0,31}")
HIDDEN_NAME = "_unknown"
DATABASE_UNAVAILABLE = (
    "the database cannot take this request now (disk full, read-only or busy); nothing was "
    "changed, try again later"
)


def error_response(
    code: int,
    message: str | None = None,
    errors: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    body: dict[str, Any] = {"code": code, "message": message or MESSAGES.get(code, MESSAGES[500])}
    if errors:
        body["errors"] = errors
    try:
        mimetype = formats.negotiate()
    except NotAcceptable:
        mimetype = formats.JSON  # the error must be said somehow
    return formats.render(body, code, root="error", mimetype=mimetype, headers=headers)


def _http_error(exc: HTTPException) -> Response:
    # Werkzeug's descriptions are prose for HTML pages; the documented messages are used instead.
    headers = {k: v for k, v in exc.get_headers() if k.lower() == "allow"}
    return error_response(exc.code or 500, headers=headers)


def _service_error(exc: ServiceError) -> Response:
    headers = {"Retry-After": str(exc.retry_after)} if isinstance(exc, TooManyRequests) else None
    return error_response(exc.code, exc.message, exc.errors, headers=headers)


def _database_error(exc: OperationalError) -> Response:
    # A full disk, a read-only file, a lock held too long, a server away: the request is
    # refused whole (its transaction rolled back) and can be sent again later.
    log.error("database error: %s", exc.orig)
    return error_response(503, DATABASE_UNAVAILABLE, headers={"Retry-After": "5"})


def _shown_name(name: object) -> str:
    """A client's field or parameter name, repeated only when it cannot be a secret."""
    text = str(name)
    return text if SHOWN_NAME.fullmatch(text) else HIDDEN_NAME


def _without_secrets(errors: Any) -> Any:
    # Unknown names come from the client and are echoed back; one may be a pasted token.
    if not isinstance(errors, Mapping):
        return errors
    shown: dict[str, Any] = {}
    for name, messages in errors.items():
        key = _shown_name(name)
        value = _without_secrets(messages)
        if key in shown and isinstance(shown[key], list) and isinstance(value, list):
            shown[key] = shown[key] + value
        else:
            shown[key] = value
    return shown


def _validation_error(exc: ValidationError) -> Response:
    errors = exc.messages if isinstance(exc.messages, Mapping) else {"_body": exc.messages}
    return error_response(400, VALIDATION_MESSAGE, _without_secrets(errors))


def _unexpected_error(exc: Exception) -> Response:
    log.exception("unexpected error while handling a request")
    return error_response(500)


def init_app(app: Flask) -> None:
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(ServiceError, _service_error)
    app.register_error_handler(OperationalError, _database_error)
    app.register_error_handler(ValidationError, _validation_error)
    app.register_error_handler(Exception, _unexpected_error)
