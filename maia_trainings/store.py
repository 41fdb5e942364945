"""Every query the service makes: trainings (create, read, list, change, delete) and tokens."""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import uuid as uuid_module
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, func, not_, or_, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import InstrumentedAttribute, Session

from .db import writing
from .exceptions import Conflict, InvalidRequest, NotFound
from .models import (
    PENDING_STATUSES,
    QUEUED,
    RUNNING,
    SCHEDULED,
    STATUSES,
    ApiToken,
    Training,
    utcnow,
)

# Fields a client may set on a training, and those it may change only before the run starts.
EDITABLE_FIELDS = ("meta", "version", "scheduled_at", "binary_path")
PENDING_ONLY_FIELDS = ("scheduled_at", "binary_path")


# Listing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Filter:
    """One filter parameter: ``column`` compared by ``operator`` with any of ``values`` (OR)."""

    column: str
    operator: str
    values: tuple[Any, ...]


@dataclass(frozen=True)
class ListQuery:
    filters: tuple[Filter, ...] = ()
    # (column, descending) pairs, most significant first.
    sort: tuple[tuple[str, bool], ...] = ()
    start: int = 0
    limit: int | None = 100


def _escape_like(column: InstrumentedAttribute[Any], value: str, *, sensitive: bool) -> Any:
    if sensitive:
        return column.contains(value, autoescape=True)
    return column.icontains(value, autoescape=True)


def _condition(
    column: InstrumentedAttribute[Any], operator: str, value: Any
) -> ColumnElement[bool]:
    # Negations include NULL: a training with no version is "not version 3".
    match operator:
        case "eq":
            return column == value
        case "ne":
            return or_(column != value, column.is_(None))
        case "lt":
            return column < value
        case "lte":
            return column <= value
        case "gt":
            return column > value
        case "gte":
            return column >= value
        case "contains":
            return _escape_like(column, value, sensitive=False)
        case "containss":
            return _escape_like(column, value, sensitive=True)
        case "ncontains":
            return or_(not_(_escape_like(column, value, sensitive=False)), column.is_(None))
        case "ncontainss":
            return or_(not_(_escape_like(column, value, sensitive=True)), column.is_(None))
        case "null":
            return column.is_(None) if value else column.is_not(None)
    raise InvalidRequest(f"unknown filter operator {operator!r}")


def _filter_clause(flt: Filter) -> ColumnElement[bool]:
    column = getattr(Training, flt.column)
    if flt.operator == "in":
        return column.in_(flt.values) if flt.values else false()
    if flt.operator == "nin":
        return or_(column.not_in(flt.values), column.is_(None)) if flt.values else ~false()
    return or_(*(_condition(column, flt.operator, value) for value in flt.values))


def _where(filters: Iterable[Filter]) -> ColumnElement[bool]:
    return and_(true(), *(_filter_clause(flt) for flt in filters))


def list_trainings(session: Session, query: ListQuery) -> Sequence[Training]:
    statement = select(Training).where(_where(query.filters))
    order = [
        getattr(Training, col).desc() if desc else getattr(Training, col)
        for col, desc in query.sort
    ]
    if not any(col == "id" for col, _ in query.sort):
        order.append(Training.id)  # a stable order, so that _start pages neither skip nor repeat
    statement = statement.order_by(*order).offset(query.start)
    if query.limit is not None:
        statement = statement.limit(query.limit)
    return session.scalars(statement).all()


def count_trainings(session: Session, filters: Iterable[Filter] = ()) -> int:
    return session.scalar(select(func.count(Training.id)).where(_where(filters))) or 0


def status_counts(session: Session) -> dict[str, int]:
    rows = session.execute(select(Training.status, func.count()).group_by(Training.status))
    counts = dict.fromkeys(STATUSES, 0)
    counts.update({status: number for status, number in rows})
    return counts


# One training ------------------------------------------------------------------------------


def get_training(session: Session, training_id: int) -> Training:
    training = session.get(Training, training_id, populate_existing=True)
    if training is None:
        raise NotFound()
    return training


def _fingerprint(fields: Mapping[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _status_for(scheduled_at: datetime | None, now: datetime) -> str:
    return SCHEDULED if scheduled_at is not None and scheduled_at > now else QUEUED


def create_training(
    session: Session,
    fields: Mapping[str, Any],
    *,
    actor: str | None,
    now: datetime | None = None,
) -> tuple[Training, bool]:
    """Store a new training from validated ``fields``; returns it and whether it was created.

    A ``uuid`` already taken by a training created from the same fields returns that training
    (a client's retry); taken by different fields, it is a conflict.
    """
    now = now or utcnow()
    fingerprint = _fingerprint(fields)
    values = {name: fields[name] for name in EDITABLE_FIELDS if name in fields}
    training = Training(
        uuid=fields.get("uuid") or str(uuid_module.uuid4()),
        status=_status_for(values.get("scheduled_at"), now),
        created_at=now,
        updated_at=now,
        created_by=actor,
        updated_by=actor,
        attempts=0,
        request_fingerprint=fingerprint,
        **values,
    )
    try:
        with writing(session):
            session.add(training)
    except IntegrityError:
        existing = session.scalar(select(Training).where(Training.uuid == training.uuid))
        if existing is None:
            raise
        if not hmac.compare_digest(existing.request_fingerprint, fingerprint):
            raise Conflict(
                f"a training with uuid {training.uuid!r} already exists with different fields"
            ) from None
        return existing, False
    return training, True


def update_training(
    session: Session,
    training_id: int,
    fields: Mapping[str, Any],
    *,
    actor: str | None,
    now: datetime | None = None,
) -> Training:
    """Apply a client's changes; fields sent with their current value count as unchanged."""
    now = now or utcnow()
    current = get_training(session, training_id)
    if "uuid" in fields and fields["uuid"] != current.uuid:
        raise Conflict("a training's uuid cannot be changed")
    changes = {
        name: fields[name]
        for name in EDITABLE_FIELDS
        if name in fields and fields[name] != getattr(current, name)
    }
    if not changes:
        return current
    guard = Training.id == training_id
    pending_only = [name for name in PENDING_ONLY_FIELDS if name in changes]
    if pending_only:
        if "scheduled_at" in changes:
            changes["status"] = _status_for(changes["scheduled_at"], now)
        guard = and_(guard, Training.status.in_(PENDING_STATUSES))
    with writing(session):
        result = session.execute(
            update(Training).where(guard).values(**changes, updated_at=now, updated_by=actor)
        )
    if result.rowcount == 0:
        get_training(session, training_id)  # raises NotFound if it was deleted meanwhile
        names = " and ".join(_api_name(name) for name in pending_only)
        raise Conflict(f"{names} can only change while the training is scheduled or queued")
    return get_training(session, training_id)


def delete_training(session: Session, training_id: int) -> Training:
    """Delete a training that is not running; returns what it was."""
    current = get_training(session, training_id)
    with writing(session):
        result = session.execute(
            delete(Training).where(Training.id == training_id, Training.status != RUNNING)
        )
    if result.rowcount == 0:
        get_training(session, training_id)
        raise Conflict("a running training cannot be deleted; cancel it first")
    return current


def _api_name(column: str) -> str:
    return "binaryPath" if column == "binary_path" else column


# Tokens ------------------------------------------------------------------------------------


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
    secret = "mt_" + secrets.token_urlsafe(32)
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
    return session.scalar(
        select(ApiToken).where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
    )


def list_tokens(session: Session) -> Sequence[ApiToken]:
    return session.scalars(select(ApiToken).order_by(ApiToken.id)).all()


def revoke_token(session: Session, name: str, *, now: datetime | None = None) -> None:
    with writing(session):
        result = session.execute(
            update(ApiToken)
            .where(ApiToken.name == name, ApiToken.revoked_at.is_(None))
            .values(revoked_at=now or utcnow())
        )
    if result.rowcount == 0:
        raise NotFound(f"no active token named {name!r}")


def authenticate(
    session: Session,
    secret: str,
    *,
    touch_interval: float = 60,
    now: datetime | None = None,
) -> ApiToken | None:
    """The active token whose secret this is, or None; records when it was last used."""
    digest = hash_token(secret)
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
        with writing(session):
            session.execute(
                update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now)
            )
        token.last_used_at = now
    return token
