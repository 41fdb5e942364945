"""Who is calling: bearer tokens checked against their stored hashes, and the scope they carry."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from flask import Response, current_app
from flask_httpauth import HTTPTokenAuth

from . import db, store
from .errors import error_response
from .models import READ_SCOPE, WRITE_SCOPE, ApiToken

token_auth = HTTPTokenAuth(scheme="Bearer")
View = TypeVar("View", bound=Callable[..., Response])

WRITE_REQUIRED_MESSAGE = "this operation requires a token with the write scope"


@token_auth.verify_token
def verify_token(secret: str) -> ApiToken | None:
    if not secret:
        return None
    return store.authenticate(
        db.get_session(), secret, touch_interval=current_app.config["TOKEN_TOUCH_INTERVAL"]
    )


@token_auth.get_user_roles
def token_roles(token: ApiToken) -> list[str]:
    # A write token may do everything a read token may.
    return [READ_SCOPE, WRITE_SCOPE] if token.scope == WRITE_SCOPE else [READ_SCOPE]


@token_auth.error_handler
def auth_error(status: int) -> Response:
    # flask-httpauth says 401 for a missing or unknown token and 403 for a missing scope;
    # the documented API answers 403 for both.
    message = WRITE_REQUIRED_MESSAGE if status == 403 else None
    return error_response(403, message)


def current_actor() -> str | None:
    """The name of the token making this request."""
    token = token_auth.current_user()
    return token.name if token is not None else None


def can_read(view: View) -> View:
    """Decorator: the view needs a token of any scope."""
    return token_auth.login_required(role=READ_SCOPE)(view)


def can_write(view: View) -> View:
    """Decorator: the view needs a token with the write scope."""
    return token_auth.login_required(role=WRITE_SCOPE)(view)
