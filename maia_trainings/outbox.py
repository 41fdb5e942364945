"""The webhook outbox: each delivery written with the change that owes it, claimed and retried.

Each status change of a training (queue.py; creation and rescheduling in trainings.py) writes
its deliveries in its own transaction (:func:`record` in its ``writing`` block; creations
through the group insert's hook, :func:`record_created`), so a delivery exists exactly when the
change does: a crash after the commit delays the delivery (the sender finds it at its next
look), and never drops it. A delivery goes to every enabled subscription that wants the
event, and, for a final event, to the training's own ``callback_url``; its body is the
training's representation as the transaction sees it, stored once and sent byte for byte on
every attempt.

With no subscription and no callback_url, a change pays one read of the enabled
subscriptions' count on a kept connection (``Database.read_now``: a cursor, no transaction)
and nothing else. That read is not in the change's transaction: a subscription made while a
change commits may miss that one event; every change that begins after a subscription was
answered is seen by it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, bindparam, func, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .db import Database, after_commit, database_of, reading, rows_changed, writing
from .errors import NotFound
from .fields import format_timestamp, represent
from .models import (
    FINAL_EVENTS,
    TRAININGS,
    WEBHOOK_DELIVERIES,
    DeliveryStatus,
    Status,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEvent,
    utcnow,
)

# A changed training: its id and its callback_url (None when it has none, or it is unknown
# because the event is not final).
Changed = tuple[int, str | None]

# Whether any subscription could want an event: the one read a change pays without one.
_ENABLED_COUNT = select(func.count()).select_from(Webhook).where(Webhook.enabled.is_(True))
_ENABLED = select(Webhook.id, Webhook.url, Webhook.events).where(Webhook.enabled.is_(True))
_INSERT = insert(WEBHOOK_DELIVERIES)

# Who to tell, in this process, that deliveries were committed (the sender, when it runs).
_listeners: list[Callable[[], None]] = []
_listeners_lock = threading.Lock()


def listen(listener: Callable[[], None]) -> None:
    """Call ``listener`` whenever this process commits new deliveries."""
    with _listeners_lock:
        _listeners.append(listener)


def forget(listener: Callable[[], None]) -> None:
    with _listeners_lock:
        if listener in _listeners:
            _listeners.remove(listener)


def announce_written() -> None:
    """Tell this process's listeners that deliveries were committed (after the commit: a
    sender woken before it would look, find nothing yet, and wait for its next poll)."""
    with _listeners_lock:
        listeners = list(_listeners)
    for listener in listeners:
        listener()


def parse_events(text: str) -> list[WebhookEvent]:
    """A subscription's stored events (comma-separated) as values of the enum."""
    return [WebhookEvent(name) for name in text.split(",") if name]


def _subscriptions(
    database: Database, target: Session | Connection, event: WebhookEvent
) -> list[tuple[int, str]]:
    if not database.read_now(_ENABLED_COUNT):
        return []
    # Read again inside the change's transaction: the subscriptions as the change sees them.
    return [
        (webhook_id, url)
        for webhook_id, url, events in target.execute(_ENABLED).all()
        if event in parse_events(events)
    ]


def write(
    database: Database,
    target: Session | Connection,
    event: WebhookEvent,
    changed: Iterable[Changed],
    *,
    now: datetime | None = None,
) -> int:
    """Insert, in ``target``'s open transaction, the deliveries ``event`` of the ``changed``
    trainings owes; returns how many."""
    changes = list(changed)
    if not changes:
        return 0
    subscriptions = _subscriptions(database, target, event)
    final = event in FINAL_EVENTS
    if not subscriptions and not (final and any(url for _id, url in changes)):
        return 0
    now = now or utcnow()
    ids = sorted({training_id for training_id, _url in changes})
    rows = target.execute(select(TRAININGS).where(TRAININGS.c.id.in_(ids))).all()
    deliveries: list[dict[str, Any]] = []
    for row in rows:
        # As GET /trainings/{id} renders it (formats.render's separators).
        payload = json.dumps(represent(row), separators=(",", ":"))
        targets: list[tuple[int | None, str]] = list(subscriptions)
        if final and row.callback_url:
            targets.append((None, row.callback_url))
        deliveries += [
            {
                "delivery_uuid": str(uuid.uuid4()),
                "webhook_id": webhook_id,
                "url": url,
                "event": str(event),
                "training_id": row.id,
                "payload": payload,
                "status": DeliveryStatus.PENDING,
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
                "updated_at": now,
            }
            for webhook_id, url in targets
        ]
    if deliveries:
        target.execute(_INSERT, deliveries)
    return len(deliveries)


def record(
    session: Session,
    event: WebhookEvent,
    changed: Iterable[Changed],
    *,
    now: datetime | None = None,
) -> int:
    """Within ``session``'s ``writing`` block: write the deliveries of ``event`` for the
    ``changed`` trainings, and wake this process's sender once the block commits."""
    written = write(database_of(session), session, event, changed, now=now)
    if written:
        after_commit(session, announce_written)
    return written


def record_created(
    database: Database, connection: Connection, batch: list[tuple[Any, dict[str, Any]]]
) -> Callable[[], None] | None:
    """The group insert's hook for new trainings (key, row): a queued one is an event."""
    queued = [
        (key, None) for key, row in batch if row.get("status") == Status.QUEUED and key is not None
    ]
    if write(database, connection, WebhookEvent.QUEUED, queued):
        return announce_written
    return None


# The sender's side: claims, attempts, redelivery and the listing ----------------------------

# Due: pending and its next attempt's time reached. A claim sets that time to its lease's end,
# so a delivery whose sender died mid-send is simply due again when the lease runs out; one
# index (status, next_attempt_at, id) serves both.
_DUE_BY = and_(
    WebhookDelivery.status == DeliveryStatus.PENDING,
    WebhookDelivery.next_attempt_at <= bindparam("due_by"),
)
_FIRST_DUE = (
    select(WebhookDelivery.id, WebhookDelivery.attempts)
    .where(_DUE_BY)
    .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
    .limit(1)
)
_CLAIM = (
    update(WEBHOOK_DELIVERIES)
    .where(
        WebhookDelivery.id == bindparam("claimed_id"),
        _DUE_BY,
        WebhookDelivery.attempts < bindparam("max_attempts"),
    )
    .values(
        attempts=WebhookDelivery.attempts + 1,
        lease_owner=bindparam("claimed_by"),
        lease_expires_at=bindparam("claimed_until"),
        next_attempt_at=bindparam("claimed_until"),
        updated_at=bindparam("now"),
    )
    .returning(*WEBHOOK_DELIVERIES.columns)
)
# Due with its attempts used up: its last attempt was never recorded (its sender died, or
# could not write), and its lease ran out. It is failed, never handed out again.
_GIVE_UP = (
    update(WEBHOOK_DELIVERIES)
    .where(
        WebhookDelivery.id == bindparam("claimed_id"),
        _DUE_BY,
        WebhookDelivery.attempts >= bindparam("max_attempts"),
    )
    .values(
        status=DeliveryStatus.FAILED,
        next_attempt_at=None,
        lease_owner=None,
        lease_expires_at=None,
        last_status_code=None,
        last_error="its last attempt never finished: its sender stopped before recording it",
        updated_at=bindparam("now"),
    )
)
_SECRET = select(Webhook.secret).where(Webhook.id == bindparam("webhook_id"))
_HELD = and_(
    WebhookDelivery.id == bindparam("held_id"),
    WebhookDelivery.status == DeliveryStatus.PENDING,
    WebhookDelivery.lease_owner == bindparam("held_by"),
)


@dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt: what to send, where, and the subscription's secret
    (None for a callback_url, signed with WEBHOOK_CALLBACK_SECRET; or a deleted subscription)."""

    id: int
    delivery_uuid: str
    webhook_id: int | None
    url: str
    event: str
    payload: str
    attempts: int  # this one included
    secret: str | None = field(repr=False)


@dataclass(frozen=True)
class AttemptResult:
    """How one attempt went: the answer's status (None when no answer came) and any error."""

    status_code: int | None
    error: str | None
    duration_ms: float | None

    @property
    def delivered(self) -> bool:
        return self.error is None and self.status_code is not None


def claim_delivery(
    session: Session,
    owner: str,
    *,
    lease_seconds: float,
    max_attempts: int,
    due_by: datetime | None = None,
    now: datetime | None = None,
) -> Claimed | None:
    """Claim the first delivery due by ``due_by`` (default: now) for one attempt by ``owner``.

    As ``queue.claim_next``: a read first (most looks find nothing), then one write
    transaction that takes the row ``FOR UPDATE SKIP LOCKED`` (PostgreSQL: senders on other
    nodes skip it) and claims it with a conditional UPDATE whose row decides the winner.
    A due delivery that had its ``max_attempts`` already is failed instead (its last attempt
    was never recorded), and the next one looked for: none is attempted more often.
    """
    now = now or utcnow()
    params = {"due_by": min(due_by or now, now), "max_attempts": max_attempts, "now": now}
    with reading(session):
        if session.execute(_FIRST_DUE, params).first() is None:
            return None
    while True:
        with writing(session):
            due = session.execute(_FIRST_DUE.with_for_update(skip_locked=True), params).first()
            if due is None:
                return None
            if due.attempts >= max_attempts:
                session.execute(_GIVE_UP, {**params, "claimed_id": due.id})
                continue
            row = session.execute(
                _CLAIM,
                {
                    **params,
                    "claimed_id": due.id,
                    "claimed_by": owner,
                    "claimed_until": now + timedelta(seconds=lease_seconds),
                },
            ).one_or_none()
            secret = None
            if row is not None and row.webhook_id is not None:
                secret = session.scalar(_SECRET, {"webhook_id": row.webhook_id})
        if row is not None:
            return Claimed(
                id=row.id,
                delivery_uuid=row.delivery_uuid,
                webhook_id=row.webhook_id,
                url=row.url,
                event=row.event,
                payload=row.payload,
                attempts=row.attempts,
                secret=secret,
            )


def record_attempt(
    session: Session,
    claimed: Claimed,
    owner: str,
    result: AttemptResult,
    *,
    max_attempts: int,
    retry_delay: float,
    node: str | None = None,
    now: datetime | None = None,
) -> datetime | None:
    """Record an attempt, and what follows: delivered, due again after the back-off
    (``retry_delay``·2ⁿ⁻¹ after the n-th attempt), or failed after ``max_attempts``.

    Returns when the delivery is due again, if it is. A sender whose lease was taken over
    (it was too slow) records its attempt and changes nothing else.
    """
    now = now or utcnow()
    values: dict[str, Any] = {
        "lease_owner": None,
        "lease_expires_at": None,
        "last_status_code": result.status_code,
        "last_error": result.error,
        "updated_at": now,
    }
    due_again = None
    if result.delivered:
        values.update(status=DeliveryStatus.DELIVERED, delivered_at=now, next_attempt_at=None)
    elif claimed.attempts >= max_attempts:
        values.update(status=DeliveryStatus.FAILED, next_attempt_at=None)
    else:
        due_again = now + timedelta(seconds=retry_delay * 2 ** (claimed.attempts - 1))
        values.update(next_attempt_at=due_again)
    try:
        with writing(session):
            session.execute(
                insert(WebhookAttempt).values(
                    delivery_id=claimed.id,
                    attempted_at=now,
                    status_code=result.status_code,
                    duration_ms=result.duration_ms,
                    error=result.error,
                    node=node,
                )
            )
            session.execute(
                update(WEBHOOK_DELIVERIES).where(_HELD).values(**values),
                {"held_id": claimed.id, "held_by": owner},
            )
    except IntegrityError:
        return None  # deleted meanwhile (with its subscription): nothing left to record
    return due_again


def redeliver(session: Session, delivery_id: int, *, now: datetime | None = None) -> None:
    """Send a delivery again, now: pending with a new round of attempts, keeping its id and
    body (its attempts so far stay listed); NotFound if there is none."""
    now = now or utcnow()
    with writing(session):
        result = session.execute(
            update(WebhookDelivery)
            .where(WebhookDelivery.id == delivery_id)
            .values(
                status=DeliveryStatus.PENDING,
                attempts=0,
                next_attempt_at=now,
                lease_owner=None,
                lease_expires_at=None,
                updated_at=now,
            )
        )
        if rows_changed(result):
            after_commit(session, announce_written)
    if rows_changed(result) == 0:
        raise NotFound()


def get_delivery(session: Session, delivery_id: int) -> dict[str, Any]:
    """One delivery with its attempts, as the API shows it; NotFound if there is none."""
    with reading(session):
        delivery = session.get(WebhookDelivery, delivery_id, populate_existing=True)
        if delivery is None:
            raise NotFound()
        attempts = session.scalars(
            select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id == delivery_id)
            .order_by(WebhookAttempt.id)
        ).all()
    return represent_delivery(delivery, attempts)


def list_deliveries(
    session: Session, webhook_id: int, *, start: int = 0, limit: int | None = None
) -> list[dict[str, Any]]:
    """A subscription's deliveries, newest first, each with its attempts (oldest first), as
    the API shows them."""
    with reading(session):
        deliveries = session.scalars(
            select(WebhookDelivery)
            .where(WebhookDelivery.webhook_id == webhook_id)
            .order_by(WebhookDelivery.id.desc())
            .offset(start)
            .limit(limit)
        ).all()
        attempts: dict[int, list[WebhookAttempt]] = {d.id: [] for d in deliveries}
        if attempts:
            for attempt in session.scalars(
                select(WebhookAttempt)
                .where(WebhookAttempt.delivery_id.in_(list(attempts)))
                .order_by(WebhookAttempt.id)
            ):
                attempts[attempt.delivery_id].append(attempt)
    return [represent_delivery(d, attempts[d.id]) for d in deliveries]


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else format_timestamp(moment)


def represent_delivery(
    delivery: WebhookDelivery, attempts: Iterable[WebhookAttempt]
) -> dict[str, Any]:
    """A delivery as the API shows it: ``attempt_count`` counts its current round's attempts
    (a redeliver starts a new round), ``attempts`` lists every attempt ever made."""
    return {
        "id": str(delivery.id),
        "delivery_id": delivery.delivery_uuid,
        "webhook_id": None if delivery.webhook_id is None else str(delivery.webhook_id),
        "event": delivery.event,
        "training_id": None if delivery.training_id is None else str(delivery.training_id),
        "url": delivery.url,
        "status": delivery.status,
        "attempt_count": delivery.attempts,
        "next_attempt_at": (
            _time(delivery.next_attempt_at) if delivery.status == DeliveryStatus.PENDING else None
        ),
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "created_at": _time(delivery.created_at),
        "delivered_at": _time(delivery.delivered_at),
        "attempts": [
            {
                "attempted_at": _time(attempt.attempted_at),
                "status_code": attempt.status_code,
                "duration_ms": attempt.duration_ms,
                "error": attempt.error,
                "node": attempt.node,
            }
            for attempt in attempts
        ],
    }
