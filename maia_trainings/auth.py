"""Who is calling: bearer tokens checked against their stored hashes, and the scope they carry."""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar, cast

from flask import Flask, Response, current_app, request
from flask_httpauth import HTTPTokenAuth

from . import db, tokens
from .error_handlers import error_response
from .errors import TooManyRequests
from .models import Scope

token_auth = HTTPTokenAuth(scheme="Bearer")
View = TypeVar("View", bound=Callable[..., Response])

EXTENSION = "maia_trainings.failed_authentications"
CACHE_EXTENSION = "maia_trainings.token_cache"
WRITE_REQUIRED_MESSAGE = "this operation requires a token with the write scope"


class FailedAuthentications:
    """A bounded per-address back-off for clients that keep presenting bad tokens.

    The first ``allowed`` failures cost nothing; each one after that shuts the address out for
    twice as long as the one before (1 s, 2 s, 4 s … up to ``longest``), answered at once with
    429 and Retry-After, so guessing is slow and no server thread is held by a guesser. Other
    addresses are unaffected; a success clears the address. At most ``capacity`` addresses are
    remembered (the least recently failing are forgotten first), so memory stays bounded.
    """

    def __init__(self, allowed: int, longest: float, capacity: int = 10_000) -> None:
        self.allowed = allowed
        self.longest = longest
        self.capacity = capacity
        self._lock = threading.Lock()
        # address -> (failures, shut out until this monotonic time)
        self._by_address: OrderedDict[str, tuple[int, float]] = OrderedDict()

    def check(self, address: str, now: float | None = None) -> None:
        """Raise TooManyRequests while ``address`` is shut out."""
        now = time.monotonic() if now is None else now
        with self._lock:
            _failures, until = self._by_address.get(address, (0, 0.0))
        if until > now:
            wait = math.ceil(until - now)
            raise TooManyRequests(
                f"too many failed authentications from this address; retry after {wait} s",
                retry_after=wait,
            )

    def failed(self, address: str, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            failures = self._by_address.pop(address, (0, 0.0))[0] + 1
            excess = failures - self.allowed
            until = now + min(2 ** (excess - 1), self.longest) if excess > 0 else 0.0
            self._by_address[address] = (failures, until)
            while len(self._by_address) > self.capacity:
                self._by_address.popitem(last=False)

    def succeeded(self, address: str) -> None:
        with self._lock:
            self._by_address.pop(address, None)


@dataclass(frozen=True)
class Caller:
    """Who a valid token says the caller is."""

    name: str
    scope: str


class TokenCache:
    """Valid tokens seen in the last ``seconds``, by hash: most requests skip the look-up.

    Only valid tokens are kept (a guesser's tokens are looked up every time, and slowed by
    FailedAuthentications). Each request reads the database's revocation count (a count over
    the few rows of api_tokens, cheaper than the look-up and its bookkeeping); when it moved, the
    cache is emptied, so a revocation made anywhere (the CLI, another node) is refused at the
    next request.
    """

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._lock = threading.Lock()
        self._callers: dict[str, tuple[Caller, float]] = {}
        self._revocations: int | None = None  # the count the cached tokens were checked under

    def get(self, digest: str, now: float, revocations: int) -> Caller | None:
        with self._lock:
            if revocations != self._revocations:
                self._callers.clear()
                self._revocations = revocations
                return None
            found = self._callers.get(digest)
        return found[0] if found is not None and found[1] > now else None

    def put(self, digest: str, caller: Caller, now: float, revocations: int) -> None:
        """Keep ``caller``, found valid while the revocation count was ``revocations``."""
        with self._lock:
            if revocations != self._revocations:
                return  # a revocation came between the look-up and now: look again next time
            if len(self._callers) > 10_000:  # bounded, whatever the callers do
                self._callers.clear()
            self._callers[digest] = (caller, now + self.seconds)

    def clear(self) -> None:
        with self._lock:
            self._callers.clear()


def _failures() -> FailedAuthentications:
    failures: FailedAuthentications = current_app.extensions[EXTENSION]
    return failures


def forget_tokens(app: Flask) -> None:
    """Drop cached tokens, after a revocation."""
    cache = app.extensions.get(CACHE_EXTENSION)
    if cache is not None:
        cache.clear()


def _lookup(secret: str) -> Caller | None:
    cache: TokenCache = current_app.extensions[CACHE_EXTENSION]
    digest = tokens.hash_token(secret)
    now = time.monotonic()
    revocations = tokens.revocations(db.database())
    caller = cache.get(digest, now, revocations)
    if caller is None:
        token = tokens.authenticate(
            db.get_session(), secret, touch_interval=current_app.config["TOKEN_TOUCH_INTERVAL"]
        )
        if token is None:
            return None
        caller = Caller(name=token.name, scope=token.scope)
        cache.put(digest, caller, now, revocations)
    return caller


def verify_token(secret: str) -> Caller | None:
    address = request.remote_addr or "unknown"
    failures = _failures()
    failures.check(address)
    caller = _lookup(secret) if secret else None
    if caller is None:
        failures.failed(address)
    else:
        failures.succeeded(address)
    return caller


def token_roles(token: Caller) -> list[str]:
    # A write token may do everything a read token may.
    return [Scope.READ, Scope.WRITE] if token.scope == Scope.WRITE else [Scope.READ]


def auth_error(status: int) -> Response:
    # flask-httpauth says 401 for a missing or unknown token and 403 for a missing scope;
    # the documented API answers 403 for both.
    message = WRITE_REQUIRED_MESSAGE if status == 403 else None
    return error_response(403, message)


# Registered by calls rather than as decorators: flask-httpauth ships no type hints, and its
# decorators would hide these functions' types from the type checker.
token_auth.verify_token(verify_token)
token_auth.get_user_roles(token_roles)
token_auth.error_handler(auth_error)


def current_actor() -> str | None:
    """The name of the token making this request."""
    token = token_auth.current_user()
    return token.name if token is not None else None


def current_caller() -> Caller:
    """The token making this request (inside a view that needs one)."""
    caller: Caller = token_auth.current_user()
    return caller


def init_app(app: Flask) -> None:
    app.extensions[CACHE_EXTENSION] = TokenCache(float(app.config["TOKEN_CACHE_SECONDS"]))
    app.extensions[EXTENSION] = FailedAuthentications(
        allowed=int(app.config["AUTH_FAILURES_ALLOWED"]),
        longest=float(app.config["AUTH_BACKOFF_MAX"]),
    )


def can_read(view: View) -> View:
    """Decorator: the view needs a token of any scope."""
    return cast(View, token_auth.login_required(role=Scope.READ)(view))


def can_write(view: View) -> View:
    """Decorator: the view needs a token with the write scope."""
    return cast(View, token_auth.login_required(role=Scope.WRITE)(view))
