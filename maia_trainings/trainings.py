"""Trainings as clients see them: create (idempotent by uuid), get, update and delete."""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid as uuid_module
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from . import logs, outbox, reports
from .db import (
    Announcement,
    after_commit,
    database_of,
    end_snapshot,
    reading,
    rows_changed,
    writing,
)
from .errors import Conflict, NotFound
from .fields import EDITABLE_COLUMNS, PENDING_ONLY_COLUMNS, api_name
from .models import (
    DEFAULT_MODEL,
    PENDING_STATUSES,
    TRAININGS,
    Publication,
    Status,
    Training,
    WebhookEvent,
    utcnow,
)


def get_training(session: Session, training_id: int) -> Training:
    """The stored training, read afresh; NotFound if there is none."""
    with reading(session):
        training = session.get(Training, training_id, populate_existing=True)
    if training is None:
        raise NotFound()
    return training


def _fingerprint(fields: Mapping[str, Any]) -> str:
    canonical = json.dumps(fields, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def initial_status(scheduled_at: datetime | None, now: datetime) -> Status:
    """A training scheduled ahead waits for its time; any other is due at once."""
    return Status.SCHEDULED if scheduled_at is not None and scheduled_at > now else Status.QUEUED


def _announcement(status: Status) -> Announcement:
    """What other nodes are told of a training now in ``status``: work now, or a new time."""
    return Announcement.WORK if status is Status.QUEUED else Announcement.LOOK


def _queue_position(scheduled_at: datetime | None, now: datetime) -> dict[str, Any]:
    """The status and due time of a training (re)scheduled for ``scheduled_at`` at ``now``."""
    status = initial_status(scheduled_at, now)
    return {"status": status, "due_at": scheduled_at if status is Status.SCHEDULED else now}


def create_training(
    session: Session,
    fields: Mapping[str, Any],
    *,
    actor: str | None,
    now: datetime | None = None,
    schedule_id: int | None = None,
) -> tuple[Training, bool]:
    """Store a new training from validated ``fields``; returns it and whether it was created.

    A ``uuid`` already taken by a training created from the same fields returns that training
    (a client's retry, or another node creating the same schedule fire); taken by different
    fields, it is a conflict. ``schedule_id`` names the schedule whose fire it is.
    """
    now = now or utcnow()
    fingerprint = _fingerprint(
        fields if schedule_id is None else {**fields, "schedule_id": schedule_id}
    )
    row: dict[str, Any] = {
        "uuid": fields.get("uuid") or str(uuid_module.uuid4()),
        **_queue_position(fields.get("scheduled_at"), now),
        "created_at": now,
        "updated_at": now,
        "created_by": actor,
        "updated_by": actor,
        "attempts": 0,
        "request_fingerprint": fingerprint,
        "schedule_id": schedule_id,
        # Set here, not as the schema's default: a retried POST from before models existed
        # must still match its stored fingerprint.
        "model_name": DEFAULT_MODEL,
        **{name: fields[name] for name in EDITABLE_COLUMNS if name in fields},
    }
    end_snapshot(session)  # no read of this session's may hide the row from its later reads
    try:
        # Grouped with concurrent creates into one commit (its own transaction, see
        # group_insert.GroupInsert), with the webhook deliveries a queued one owes; returns
        # once the row is durable.
        training_id = (
            database_of(session)
            .group_insert(TRAININGS, written=outbox.record_created)
            .insert(row, note=_announcement(row["status"]))
        )
    except IntegrityError:
        with reading(session):
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
        for name in EDITABLE_COLUMNS
        if name in fields and fields[name] != getattr(current, name)
    }
    if not changes:
        return current
    guard = Training.id == training_id
    pending_only = [name for name in PENDING_ONLY_COLUMNS if name in changes]
    if pending_only:
        if "scheduled_at" in changes:
            changes.update(_queue_position(changes["scheduled_at"], now))
        guard = and_(guard, Training.status.in_(PENDING_STATUSES))
    with writing(session):
        was = None
        if "status" in changes:
            # Its status as this transaction changes it (locked on PostgreSQL; SQLite's write
            # transaction is alone): queued by a promotion meanwhile, it owes no second event.
            was = session.scalar(
                select(Training.status).where(Training.id == training_id).with_for_update()
            )
        result = session.execute(
            update(Training).where(guard).values(**changes, updated_at=now, updated_by=actor)
        )
        if "status" in changes and rows_changed(result):
            database_of(session).announce(session, _announcement(changes["status"]))
            if changes["status"] is Status.QUEUED and was == Status.SCHEDULED:
                outbox.record(session, WebhookEvent.QUEUED, [(training_id, None)], now=now)
            if was is not None and was != changes["status"]:
                moved = (training_id, current.uuid, was, changes["status"], current.attempts)
                after_commit(session, lambda: logs.transition(*moved))
    if rows_changed(result) == 0:
        get_training(session, training_id)  # raises NotFound if it was deleted meanwhile
        names = " and ".join(api_name(name) for name in pending_only)
        raise Conflict(f"{names} can only change while the training is scheduled or queued")
    return get_training(session, training_id)


# Whether a training is its model's champion: the training of its model's latest publication.
_LATER = aliased(Publication)
_IS_CHAMPION = (
    exists()
    .where(Publication.training_id == Training.id, Publication.model_name == Training.model_name)
    .where(~exists().where(_LATER.model_name == Publication.model_name, _LATER.id > Publication.id))
)


def delete_training(session: Session, training_id: int) -> Training:
    """Delete a training that is not running nor its model's champion; returns what it was.

    A champion stays: deleting it would leave its model without one (or silently roll it back),
    and whoever fetches /models/{model_name}/binary without a model file.
    """
    current = get_training(session, training_id)
    with writing(session):
        result = session.execute(
            delete(Training).where(
                Training.id == training_id, Training.status != Status.RUNNING, ~_IS_CHAMPION
            )
        )
        if rows_changed(result):
            reports.forget(session, training_id)
    if rows_changed(result) == 0:
        if get_training(session, training_id).status == Status.RUNNING:
            raise Conflict("a running training cannot be deleted; cancel it first")
        raise Conflict(
            "the champion of its model cannot be deleted; publish another training first"
        )
    return current
