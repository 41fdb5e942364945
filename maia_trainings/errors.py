"""Every error the service raises on purpose, in one hierarchy, each class with its HTTP status.

This module imports nothing from the service, so every layer may raise these, trainers included.
``error_handlers`` turns them into the API's ``{code, message[, errors]}`` answers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class ServiceError(Exception):
    """An expected failure: a status, a message for people and optional per-field details."""

    code = 500

    def __init__(self, message: str | None = None, errors: Mapping[str, Any] | None = None) -> None:
        super().__init__(*(() if message is None else (message,)))  # str() is "" without one
        self.message = message
        self.errors = errors


class InvalidRequest(ServiceError):
    """The request cannot be served as it is; sending it again will not help."""

    code = 400


class MalformedBody(InvalidRequest):
    """A body that cannot be read in the format it claims (bad JSON, XML, form)."""


class PathOutside(InvalidRequest, ValueError):
    """A client's path that is not a plain relative path inside its folder."""


class InvalidParams(InvalidRequest, ValueError):
    """A trainer's ``validate`` hook refuses its parameters: parameter name -> problems."""

    def __init__(self, errors: Mapping[str, list[str]]) -> None:
        super().__init__("; ".join(f"{k}: {' '.join(v)}" for k, v in errors.items()), dict(errors))


class NotFound(ServiceError):
    code = 404


class NotAcceptable(ServiceError):
    """No response type the client accepts is offered."""

    code = 406


class Conflict(ServiceError):
    code = 409


class UnsupportedMediaType(ServiceError):
    """A body in a format the API does not read."""

    code = 415


class TooManyRequests(ServiceError):
    code = 429

    def __init__(self, message: str, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Unavailable(ServiceError):
    """The service cannot take the request now; the same request may succeed later."""

    code = 503


class SchemaNotCurrent(Unavailable):
    """The database's schema is not this release's (older, or a newer release's): no start."""


class Retry(Unavailable):
    """Raised by a trainer to ask for another attempt (while attempts are left)."""
