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

from sqlalchemy import (
    ColumnElement,
    String,
    and_,
    bindparam,
    case,
    cast,
    delete,
    false,
    func,
    not_,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import InstrumentedAttribute, Session, defer

from .db import database_of, writing
from .exceptions import Conflict, InvalidRequest, NotFound
from .models import (
    CANCELLED,
    FAILED,
    PENDING_STATUSES,
    QUEUED,
    RUNNING,
    SCHEDULED,
    STATUSES,
    SUCCEEDED,
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
    # The run's log can be long and no list shows it: it is loaded only if something asks.
    statement = select(Training).options(defer(Training.log)).where(_where(query.filters))
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
    # count(*), not count(id): SQLite then counts index entries without reading each row id,
    # a third faster (32 against 50 ms for 850,000 of 1,000,000 rows).
    statement = select(func.count()).select_from(Training).where(_where(filters))
    return session.scalar(statement) or 0


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
    row: dict[str, Any] = {
        "uuid": fields.get("uuid") or str(uuid_module.uuid4()),
        "status": _status_for(fields.get("scheduled_at"), now),
        "created_at": now,
        "updated_at": now,
        "created_by": actor,
        "updated_by": actor,
        "attempts": 0,
        "request_fingerprint": fingerprint,
        **{name: fields[name] for name in EDITABLE_FIELDS if name in fields},
    }
    if session.in_transaction():
        session.commit()  # no snapshot of this session's may hide the row from later reads
    try:
        # Grouped with concurrent creates into one commit; returns once the row is durable.
        training_id = database_of(session).group_insert(Training.__table__).insert(row)
    except IntegrityError:
        existing = session.scalar(select(Training).where(Training.uuid == row["uuid"]))
        if existing is None:
            raise
        if not hmac.compare_digest(existing.request_fingerprint, fingerprint):
            raise Conflict(
                f"a training with uuid {row['uuid']!r} already exists with different fields"
            ) from None
        return existing, False
    # What was stored, as an object outside the session (nothing else is loaded or tracked).
    return Training(id=training_id, **row), True


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
        # Advisory too: a database that cannot be written (a full disk) must not stop reads.
        try:
            with writing(session):
                session.execute(
                    update(ApiToken).where(ApiToken.id == token.id).values(last_used_at=now)
                )
        except OperationalError:
            return token
        token.last_used_at = now
    return token


# The queue ---------------------------------------------------------------------------------
# Every state change below is one conditional UPDATE whose row count says whether it happened:
# two processes may race for the same row, and exactly one of them wins.

FINAL_FIELDS = ("accuracy", "precission", "mae", "rmse", "version")
# What the runner records about a successful run besides the trainer's results.
RUN_RECORD_FIELDS = (
    "binary_path",
    "binary_sha256",
    "binary_size",
    "published_at",
    "log",
    "started_at",
)


def _release(**values: Any) -> dict[str, Any]:
    """Values that end a run's claim on its training."""
    return {"lease_owner": None, "lease_expires_at": None, **values}


def promote_due(session: Session, *, now: datetime | None = None) -> int:
    """Queue the scheduled trainings whose time has come; returns how many."""
    now = now or utcnow()
    due = and_(Training.status == SCHEDULED, Training.scheduled_at <= now)
    # A read first: most looks find nothing, and need not wait for the write lock to say so.
    if session.scalar(select(Training.id).where(due).limit(1)) is None:
        session.commit()
        return 0
    with writing(session):
        result = session.execute(update(Training).where(due).values(status=QUEUED, updated_at=now))
    return result.rowcount


# The claim's two statements, built once: building them on every claim cost a millisecond of
# Python (SQLAlchemy's expression objects) per training, more than running them.
_DUE_NOW = and_(
    Training.status == QUEUED,
    or_(Training.not_before.is_(None), Training.not_before <= bindparam("now")),
)
_DUE_CANDIDATES = select(Training.id).where(_DUE_NOW).order_by(Training.id).limit(8)
_CLAIM = (
    update(Training.__table__)
    .where(Training.id == bindparam("claimed_id"), _DUE_NOW)
    .values(
        status=RUNNING,
        attempts=Training.attempts + 1,
        lease_owner=bindparam("claimed_by"),
        lease_expires_at=bindparam("claimed_until"),
        progress=0.0,
        error=None,
        started_at=None,
        finished_at=None,
        updated_at=bindparam("now"),
    )
    # RETURNING: the claimed row comes back with the claim, without another query. On the
    # table, not the ORM entity: the ORM's UPDATE machinery cost 0.35 of a claim's 0.9 ms.
    .returning(*Training.__table__.columns)
)


def claim_next(
    session: Session,
    owner: str,
    *,
    lease_seconds: float,
    among: Iterable[int] | None = None,
    now: datetime | None = None,
) -> Training | None:
    """Claim the oldest due training (of ``among``, if given) for ``owner``: one attempt more.

    Returns None if none is due.
    """
    now = now or utcnow()
    candidates_statement = _DUE_CANDIDATES
    if among is not None:
        candidates_statement = candidates_statement.where(Training.id.in_(list(among)))
    params = {"now": now}
    while True:
        candidates = session.scalars(candidates_statement, params).all()
        if not candidates:
            session.commit()  # end the read snapshot
            return None
        for training_id in candidates:
            with writing(session):
                claimed = session.execute(
                    _CLAIM,
                    {
                        "now": now,
                        "claimed_id": training_id,
                        "claimed_by": owner,
                        "claimed_until": now + timedelta(seconds=lease_seconds),
                    },
                ).one_or_none()
            if claimed is not None:
                # As it now is, outside the session (the run reads it in other threads).
                return Training(**claimed._mapping)
        # Every candidate was taken by someone else meanwhile: look again.


# Whether a run still owns its training; built once (see _CLAIM), filled by _owner.
_OWNED = and_(
    Training.id == bindparam("owned_id"),
    Training.status == RUNNING,
    Training.lease_owner == bindparam("owned_by"),
)
# A training without a version (none from its client) gets the trainer's, else the next number.
_UNVERSIONED = or_(Training.version.is_(None), Training.version == "")
_NEXT_AUTO_VERSION = select(func.coalesce(func.max(Training.auto_version), 0) + 1).scalar_subquery()
_AUTO_VERSIONED = {
    "auto_version": case((_UNVERSIONED, _NEXT_AUTO_VERSION), else_=Training.auto_version),
    "version": case((_UNVERSIONED, cast(_NEXT_AUTO_VERSION, String)), else_=Training.version),
}


def _owner(training_id: int, owner: str) -> dict[str, Any]:
    return {"owned_id": training_id, "owned_by": owner}


def _update_owned(session: Session, training_id: int, owner: str, **values: Any) -> bool:
    with writing(session):
        result = session.execute(
            update(Training).where(_OWNED).values(**values), _owner(training_id, owner)
        )
    return result.rowcount == 1


def heartbeat(
    session: Session,
    training_id: int,
    owner: str,
    *,
    lease_seconds: float,
    now: datetime | None = None,
    **values: Any,
) -> bool:
    """Renew ``owner``'s lease (and record ``values``); False when the run no longer owns it."""
    now = now or utcnow()
    return _update_owned(
        session,
        training_id,
        owner,
        lease_expires_at=now + timedelta(seconds=lease_seconds),
        **values,
    )


def finish(
    session: Session,
    training_id: int,
    owner: str,
    *,
    results: Mapping[str, Any],
    now: datetime | None = None,
) -> bool:
    """Record a successful run's results; False when the run no longer owned the training.

    The version is the client's, else the trainer's, else the next automatic number.
    """
    now = now or utcnow()
    values = {name: results[name] for name in FINAL_FIELDS if results.get(name) is not None}
    if results.get("metrics") is not None:
        values["metrics"] = json.dumps(results["metrics"], sort_keys=True, allow_nan=False)
    for name in RUN_RECORD_FIELDS:
        if name in results:
            values[name] = results[name]
    trainer_version = values.pop("version", None)
    values.update(_release(status=SUCCEEDED, progress=1.0, finished_at=now, updated_at=now))
    if trainer_version is not None:
        versioned = {"version": case((_UNVERSIONED, trainer_version), else_=Training.version)}
    else:
        versioned = _AUTO_VERSIONED
    for _attempt in range(3):
        try:
            with writing(session):
                # One statement: the version is decided from the row as it is when written.
                result = session.execute(
                    update(Training).where(_OWNED).values(**values, **versioned),
                    _owner(training_id, owner),
                )
            return result.rowcount == 1
        except IntegrityError:
            continue  # another process took that number between our read and write
    raise RuntimeError("could not assign an automatic version")


def fail(
    session: Session,
    training_id: int,
    owner: str,
    error: str,
    *,
    now: datetime | None = None,
    **values: Any,
) -> bool:
    """Fail the run's training for good."""
    now = now or utcnow()
    return _update_owned(
        session,
        training_id,
        owner,
        **_release(status=FAILED, error=error, finished_at=now, updated_at=now, **values),
    )


def retry_delay(attempts: int, base_delay: float) -> timedelta:
    """Exponential back-off: ``base_delay`` after the first attempt, doubling after each."""
    return timedelta(seconds=base_delay * 2 ** max(attempts - 1, 0))


def _after_machinery_failure(
    attempts: int, error: str, *, max_attempts: int, base_delay: float, now: datetime
) -> dict[str, Any]:
    """A failed attempt goes back to the queue, after a back-off, while attempts are left."""
    if attempts >= max_attempts:
        return _release(
            status=FAILED,
            error=f"{error} (after {attempts} attempts)",
            finished_at=now,
            updated_at=now,
        )
    return _release(
        status=QUEUED,
        error=error,
        not_before=now + retry_delay(attempts, base_delay),
        updated_at=now,
    )


def retry_or_fail(
    session: Session,
    training_id: int,
    attempts: int,
    owner: str,
    error: str,
    *,
    max_attempts: int,
    base_delay: float,
    now: datetime | None = None,
    **values: Any,
) -> str:
    """After a failure of the machinery: queue again while attempts are left, else fail.

    Returns the status the training was left in, or "" when the run no longer owned it.
    """
    outcome = _after_machinery_failure(
        attempts, error, max_attempts=max_attempts, base_delay=base_delay, now=now or utcnow()
    )
    changed = _update_owned(session, training_id, owner, **outcome, **values)
    return outcome["status"] if changed else ""


def requeue(
    session: Session, training_id: int, owner: str, *, now: datetime | None = None, **values: Any
) -> bool:
    """Put an interrupted run back in the queue without spending its attempt (shutdown)."""
    now = now or utcnow()
    return _update_owned(
        session,
        training_id,
        owner,
        **_release(
            status=QUEUED,
            attempts=Training.attempts - 1,
            not_before=None,
            started_at=None,
            progress=None,
            updated_at=now,
            **values,
        ),
    )


def reap_expired(
    session: Session, *, max_attempts: int, base_delay: float, now: datetime | None = None
) -> int:
    """Recover trainings whose run died (lease expired): queue again or fail; returns how many."""
    now = now or utcnow()
    expired = session.execute(
        select(Training.id, Training.lease_owner, Training.attempts).where(
            Training.status == RUNNING, Training.lease_expires_at < now
        )
    ).all()
    session.commit()
    recovered = 0
    for training_id, owner, attempts in expired:
        outcome = _after_machinery_failure(
            attempts,
            "the run stopped answering (its process died or hung)",
            max_attempts=max_attempts,
            base_delay=base_delay,
            now=now,
        )
        with writing(session):
            # Still expired: a run that renewed its lease meanwhile is alive and left alone.
            result = session.execute(
                update(Training).where(_OWNED, Training.lease_expires_at < now).values(**outcome),
                _owner(training_id, owner),
            )
        recovered += result.rowcount
    return recovered


def cancel_training(session: Session, training_id: int, *, now: datetime | None = None) -> Training:
    """Cancel a training that has not finished; a running one is stopped by its supervisor."""
    now = now or utcnow()
    with writing(session):
        result = session.execute(
            update(Training)
            .where(Training.id == training_id, Training.status.in_((*PENDING_STATUSES, RUNNING)))
            .values(**_release(status=CANCELLED, finished_at=now, updated_at=now))
        )
    training = get_training(session, training_id)
    if result.rowcount == 0:
        raise Conflict(f"a {training.status} training cannot be cancelled")
    return training


def is_owned(session: Session, training_id: int, owner: str) -> bool:
    found = session.scalar(select(Training.id).where(_OWNED), _owner(training_id, owner))
    session.commit()
    return found is not None


def next_due_at(session: Session) -> datetime | None:
    """When the next scheduled training or back-off ends, for a precise wake-up."""
    scheduled = session.scalar(
        select(func.min(Training.scheduled_at)).where(Training.status == SCHEDULED)
    )
    retried = session.scalar(select(func.min(Training.not_before)).where(Training.status == QUEUED))
    session.commit()
    moments = [m for m in (scheduled, retried) if m is not None]
    return min(moments) if moments else None


def earliest_wanted(
    session: Session,
    *,
    queued_ids: Iterable[int] = (),
    scheduled_before: datetime | None = None,
) -> datetime | None:
    """When the first of these becomes due: trainings of ``queued_ids`` still queued (waiting
    out a back-off), and trainings scheduled before ``scheduled_before``; None if there are none.
    """
    moments: list[datetime] = []
    ids = list(queued_ids)
    if ids:
        rows = session.execute(
            select(Training.not_before).where(Training.id.in_(ids), Training.status == QUEUED)
        ).all()
        moments += [not_before or utcnow() for (not_before,) in rows]
    if scheduled_before is not None:
        first = session.scalar(
            select(func.min(Training.scheduled_at)).where(
                Training.status == SCHEDULED, Training.scheduled_at <= scheduled_before
            )
        )
        if first is not None:
            moments.append(first)
    session.commit()
    return min(moments) if moments else None
