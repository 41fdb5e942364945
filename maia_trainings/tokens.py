"""API tokens at rest: made, hashed, looked up and revoked. Only hashes are ever stored."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session
from sqlalchemy.orm.attributes import set_committed_value

from .db import Database, reading, rows_changed, writing
from .errors import Conflict, NotFound
from .models import ApiToken, utcnow

PREFIX = "mt_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


@dataclass
class NewToken:
    name: str
    scope: str
    secret: str = field(repr=False)


def create_token(
    session: Session, name: str, scope: str, *, now: datetime | None = None
) -> NewToken:
    """Make a token; its secret is returned here and never again (only its hash is kept)."""
    if find_active_token(session, name) is not None:
        raise Conflict(f"an active token named {name!r} already exists")
    secret = PREFIX + secrets.token_urlsafe(32)
    with writing(session):
        session.add(
            ApiToken(
                name=name,
                token_hash=hash_token(secret),
                scope=scope,
                created_at=now or utcnow(),
            )
        )
    return NewToken(name=name, scope=scope, secret=secret)


def find_active_token(session: Session, name: str) -> ApiToken | None:
    with reading(session):
        return session.scalar(
            select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
        )


def list_tokens(session: Session) -> Sequence[ApiToken]:
    with reading(session):
        return session.scalars(select(ApiToken).order_by(ApiToken.id)).all()


def revoke_token(session: Session, name: str, *, now: datetime | None = None) -> None:
    with writing(session):
        result = session.execute(
            update(ApiToken)
            .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now or utcnow())
        )
    if rows_changed(result) == 0:
        raise NotFound(f"no active token named {name!r}")


# Tokens are revoked, never deleted: this count only grows, one step per revocation.
_REVOCATIONS = select(func.count(ApiToken.revoked_at))


def revocations(database: Database) -> int:
    """How many tokens were ever revoked: a process that caches tokens compares it on each
    request, and so sees a revocation made anywhere (another process, another node) at once."""
    count: int = database.read_now(_REVOCATIONS) or 0
    return count


def authenticate(
    session: Session,
    secret: str,
    *,
    touch_interval: float = 60,
    now: datetime | None = None,
) -> ApiToken | None:
    """The active token whose secret this is, or None; records when it was last used."""
    digest = hash_token(secret)
    with reading(session):
        token = session.scalar(
            select(ApiToken).where(ApiToken.token_hash == digest, ApiToken.revoked_at.is_(None))
        )
    if token is None or not hmac.compare_digest(token.token_hash, digest):
        return None
    now = now or utcnow()
    stale = token.last_used_at is None or now - token.last_used_at >= timedelta(
        seconds=touch_interval
    )
    if stale:
        # Throttled: a write on every request would make reads compete for the write lock.
        # Advisory too: a database that cannot be written (a full disk) must not stop reads.
        try:
            with writing(session):
                session.execute(
                    update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now)
                )
        except OperationalError:
            return token
        set_committed_value(token, "last_used_at", now)  # as stored: nothing left to write
    return token
