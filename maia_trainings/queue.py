"""The queue: every transition of a training's status, each one conditional UPDATE.

scheduled → queued (``promote_due``) → running (``claim_next``, renewed by ``heartbeat``) →
succeeded (``finish``), failed (``fail``), back to queued (``retry_or_fail``, ``requeue``,
``reap_expired``), or cancelled (``cancel_training``). Two processes may race for the same
row: the UPDATE's condition and its row count decide, and exactly one of them wins. Each
function is its own ``writing`` (or ``reading``) transaction, and writes in it the webhook
deliveries its change owes (``outbox.record``): a status change's UPDATE returns the changed
rows' ids and callback_url, so a change nobody listens to costs no further statement.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import String, and_, bindparam, case, cast, func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from . import logs, outbox, publishing, reports
from .db import Announcement, after_commit, database_of, reading, rows_changed, writing
from .errors import Conflict, NotFound
from .fields import METRICS
from .models import (
    EVENT_OF_STATUS,
    PENDING_STATUSES,
    TRAININGS,
    Status,
    Training,
    WebhookEvent,
    utcnow,
)
from .publishing import PublishPolicy
from .retry import RetryPolicy

# A successful run's results the training keeps: the trainer's figures and version, and what
# the runner records about the run.
RESULT_COLUMNS = (*(field.column for field in METRICS), "version")
RUN_RECORD_COLUMNS = (
    "binary_path",
    "binary_sha256",
    "binary_size",
    "log",
    "started_at",
)
# Today's behaviour, and the default: a training that succeeds with a model file is published.
ALWAYS = PublishPolicy()
EXPIRED_MESSAGE = "the run stopped answering (its process died or hung)"


def _release(**values: Any) -> dict[str, Any]:
    """Values that end a run's claim on its training."""
    return {"lease_owner": None, "lease_expires_at": None, **values}


# What a status change's UPDATE returns: enough for the outbox to know who is owed what, and
# for the transition's log line.
_CHANGED = (TRAININGS.c.id, TRAININGS.c.callback_url, TRAININGS.c.uuid, TRAININGS.c.attempts)


def _record_changes(
    session: Session, status: Any, rows: Any, now: datetime | None, *, before: Status
) -> int:
    """Within the change's writing block: the deliveries of the trainings whose UPDATE
    returned ``rows`` (id, callback_url, uuid, attempts) and that went from ``before`` to
    ``status``, and their log lines once committed; returns how many trainings changed."""
    rows = list(rows)
    changed = [(row.id, row.callback_url) for row in rows]
    event = EVENT_OF_STATUS.get(Status(status))
    if changed and event is not None:
        outbox.record(session, event, changed, now=now)
    _log_after_commit(session, rows, before, Status(status))
    return len(changed)


def _log_after_commit(session: Session, rows: Any, before: Status, after: Status) -> None:
    """Log each row's transition once the writing block commits (a rollback logs nothing)."""

    def log_them() -> None:
        for row in rows:
            logs.transition(row.id, row.uuid, before, after, row.attempts)

    if rows:
        after_commit(session, log_them)


def promote_due(session: Session, *, now: datetime | None = None) -> int:
    """Queue the scheduled trainings whose time has come; returns how many."""
    now = now or utcnow()
    due = and_(Training.status == Status.SCHEDULED, Training.due_at <= now)
    # A read first: most looks find nothing, and need not wait for the write lock to say so.
    with reading(session):
        if session.scalar(select(Training.id).where(due).limit(1)) is None:
            return 0
    with writing(session):
        rows = session.execute(
            update(TRAININGS)
            .where(due)
            .values(status=Status.QUEUED, updated_at=now)
            .returning(*_CHANGED)
        ).all()
        promoted = _record_changes(session, Status.QUEUED, rows, now, before=Status.SCHEDULED)
        if promoted:
            database_of(session).announce(session, Announcement.WORK)
    return promoted


# The claim's statements, built once: building them on every claim cost a millisecond of
# Python (SQLAlchemy's expression objects) per training, more than running them (2026-11-28).
# Due rows are read in due order from ix_trainings_status_due_at: a claim's cost does not
# grow with the rows still waiting out a back-off.
_DUE_NOW = and_(Training.status == Status.QUEUED, Training.due_at <= bindparam("now"))
_FIRST_DUE = (
    select(Training.id, Training.due_at)
    .where(_DUE_NOW)
    .order_by(Training.due_at, Training.id)
    .limit(1)
)
_CLAIM = (
    update(TRAININGS)
    .where(Training.id == bindparam("claimed_id"), _DUE_NOW)
    .values(
        status=Status.RUNNING,
        attempts=Training.attempts + 1,
        lease_owner=bindparam("claimed_by"),
        lease_expires_at=bindparam("claimed_until"),
        progress=0.0,
        error=None,
        started_at=None,
        finished_at=None,
        due_at=None,
        updated_at=bindparam("now"),
    )
    # RETURNING: the claimed row comes back with the claim, without another query. On the
    # table, not the ORM entity: the ORM's UPDATE machinery cost 0.35 of a claim's 0.9 ms
    # (measured 2026-11-28).
    .returning(*TRAININGS.columns)
)


def claim_next(
    session: Session,
    owner: str,
    *,
    lease_seconds: float,
    among: Iterable[int] | None = None,
    now: datetime | None = None,
) -> Training | None:
    """Claim the first due training (of ``among``, if given) for ``owner``: one attempt more.

    Due order is ``due_at`` (when it was queued, its scheduled time or its back-off end), then
    id. One short write transaction takes the row ``FOR UPDATE SKIP LOCKED`` and claims it:
    on PostgreSQL, claimers on other nodes skip the rows being claimed instead of waiting for
    them; SQLite has one writer at a time and needs no row lock. Returns None if none is due.
    The training returned keeps the ``due_at`` it was claimed at (the claim clears the row's):
    its dispatch latency is measured from it.
    """
    now = now or utcnow()
    first_due = _FIRST_DUE
    if among is not None:
        first_due = first_due.where(Training.id.in_(list(among)))
    params = {"now": now}
    # A read first: most looks find nothing, and need not wait for the write lock to say so.
    with reading(session):
        if session.scalar(first_due, params) is None:
            return None
    while True:
        with writing(session):
            first = session.execute(first_due.with_for_update(skip_locked=True), params).first()
            if first is None:
                return None
            training_id, due_at = first
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
                outbox.record(session, WebhookEvent.STARTED, [(claimed.id, None)], now=now)
                _log_after_commit(session, [claimed], Status.QUEUED, Status.RUNNING)
        if claimed is not None:
            # As it now is, outside the session (the run reads it in other threads).
            return Training(**{**claimed._mapping, "due_at": due_at})
        # Cancelled or edited between the look and the claim: look again.


# Whether a run still owns its training; built once (see _CLAIM), filled by _owner.
_OWNED = and_(
    Training.id == bindparam("owned_id"),
    Training.status == Status.RUNNING,
    Training.lease_owner == bindparam("owned_by"),
)
# A training without a version (none from its client) gets the trainer's, else the next number
# of its model: the highest its model has handed out, plus one.
_UNVERSIONED = or_(Training.version.is_(None), Training.version == "")
_SAME_MODEL = aliased(Training)
_NEXT_MODEL_VERSION = (
    select(func.coalesce(func.max(_SAME_MODEL.model_version), 0) + 1)
    .where(_SAME_MODEL.model_name == TRAININGS.c.model_name)
    .scalar_subquery()
)
_AUTO_VERSIONED = {
    "model_version": case((_UNVERSIONED, _NEXT_MODEL_VERSION), else_=Training.model_version),
    "version": case((_UNVERSIONED, cast(_NEXT_MODEL_VERSION, String)), else_=Training.version),
}


def _owner(training_id: int, owner: str) -> dict[str, Any]:
    return {"owned_id": training_id, "owned_by": owner}


def _update_owned(
    session: Session,
    training_id: int,
    owner: str,
    *,
    announce: Announcement | None = None,
    now: datetime | None = None,
    **values: Any,
) -> bool:
    statement = update(TRAININGS).where(_OWNED).values(**values)
    params = _owner(training_id, owner)
    with writing(session):
        if "status" in values:
            rows = session.execute(statement.returning(*_CHANGED), params).all()
            changed = _record_changes(session, values["status"], rows, now, before=Status.RUNNING)
        else:  # a heartbeat: no event, no RETURNING
            changed = rows_changed(session.execute(statement, params))
        if announce is not None and changed:
            database_of(session).announce(session, announce)
    return changed == 1


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
    policy: PublishPolicy = ALWAYS,
    now: datetime | None = None,
) -> bool:
    """Record a successful run's results (its validation pack too, when ``results`` has a
    ``report``), and publish it as ``policy`` says; False when the run no longer owned it.

    The version is the client's, else the trainer's, else its model's next automatic number.
    Both are decided in one transaction holding the model's turn: two nodes finishing
    trainings of one model at once would read the same highest number, or the same champion.
    """
    now = now or utcnow()
    values = {name: results[name] for name in RESULT_COLUMNS if results.get(name) is not None}
    if results.get("metrics") is not None:
        values["metrics"] = json.dumps(results["metrics"], sort_keys=True, allow_nan=False)
    for name in RUN_RECORD_COLUMNS:
        if name in results:
            values[name] = results[name]
    trainer_version = values.pop("version", None)
    values.update(_release(status=Status.SUCCEEDED, progress=1.0, finished_at=now, updated_at=now))
    if trainer_version is not None:
        versioned = {"version": case((_UNVERSIONED, trainer_version), else_=Training.version)}
    else:
        versioned = _AUTO_VERSIONED
    # Without a number to hand out or a file to publish, no turn is needed (nor the read).
    has_file = bool(values.get("binary_sha256"))
    for _attempt in range(3):
        try:
            with writing(session):
                decision = publishing.NO_FILE
                if versioned is _AUTO_VERSIONED or has_file:
                    # Its model cannot change once it runs: read before the turn, it still holds.
                    model_name = session.scalar(
                        select(Training.model_name).where(Training.id == training_id)
                    )
                    if model_name is None:
                        return False  # deleted meanwhile
                    publishing.take_model_turn(session, model_name)
                    decision = publishing.decide(
                        session,
                        policy,
                        model_name=model_name,
                        metrics=results.get("metrics"),
                        has_file=has_file,
                    )
                # One statement: the version is decided from the row as it is when written.
                rows = session.execute(
                    update(TRAININGS)
                    .where(_OWNED)
                    .values(**values, **versioned, publish_note=decision.reason)
                    .returning(*_CHANGED, TRAININGS.c.model_name, TRAININGS.c.version),
                    _owner(training_id, owner),
                ).all()
                if rows and decision.publish:
                    publishing.record(session, rows[0], actor=None, reason=decision.reason, now=now)
                if rows and results.get("report") is not None:
                    reports.record(
                        session,
                        training_id,
                        results["report"],
                        results.get("report_charts") or {},
                        now=now,
                    )
                finished = _record_changes(
                    session, Status.SUCCEEDED, rows, now, before=Status.RUNNING
                )
            return finished == 1
        except IntegrityError:
            continue  # a number taken by a writer outside the turn (an older release): again
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
    """Fail the run's training for good; False when the run no longer owned it."""
    now = now or utcnow()
    return _update_owned(
        session,
        training_id,
        owner,
        now=now,
        **_release(status=Status.FAILED, error=error, finished_at=now, updated_at=now, **values),
    )


def retry_or_fail(
    session: Session,
    training_id: int,
    attempts: int,
    owner: str,
    error: str,
    *,
    policy: RetryPolicy,
    now: datetime | None = None,
    **values: Any,
) -> Status | None:
    """After a failure of the machinery: queue again while attempts are left, else fail.

    Returns the status the training was left in, or None when the run no longer owned it.
    """
    now = now or utcnow()
    outcome = _release(**policy.after_failure(attempts, error, now))
    changed = _update_owned(
        session, training_id, owner, announce=Announcement.LOOK, now=now, **outcome, **values
    )
    return outcome["status"] if changed else None


def requeue(
    session: Session, training_id: int, owner: str, *, now: datetime | None = None, **values: Any
) -> bool:
    """Put an interrupted run back in the queue without spending its attempt (shutdown)."""
    now = now or utcnow()
    return _update_owned(
        session,
        training_id,
        owner,
        announce=Announcement.WORK,
        now=now,
        **_release(
            status=Status.QUEUED,
            attempts=Training.attempts - 1,
            due_at=now,
            started_at=None,
            progress=None,
            updated_at=now,
            **values,
        ),
    )


def reap_expired(
    session: Session,
    *,
    policy: RetryPolicy,
    now: datetime | None = None,
    sparing: Collection[int] = (),
) -> int:
    """Recover trainings whose run died (lease expired): queue again or fail; returns how many.

    ``sparing``: the trainings the calling process runs now. Their runs are alive (a thread of
    the caller supervises each): a lease that lapsed while a loaded machine took seconds to
    start a run's child must not make its own process take the training away from itself.
    Other processes still recover them when the caller stalls or dies.
    """
    now = now or utcnow()
    with reading(session):
        expired = session.execute(
            select(Training.id, Training.lease_owner, Training.attempts).where(
                Training.status == Status.RUNNING, Training.lease_expires_at < now
            )
        ).all()
    recovered = 0
    for training_id, owner, attempts in expired:
        if owner is None:
            continue  # not a run's claim (edited by hand): nothing of ours to recover
        if training_id in sparing:
            continue
        outcome = _release(**policy.after_failure(attempts, EXPIRED_MESSAGE, now))
        with writing(session):
            # Still expired: a run that renewed its lease meanwhile is alive and left alone.
            rows = session.execute(
                update(TRAININGS)
                .where(_OWNED, Training.lease_expires_at < now)
                .values(**outcome)
                .returning(*_CHANGED),
                _owner(training_id, owner),
            ).all()
            changed = _record_changes(session, outcome["status"], rows, now, before=Status.RUNNING)
            if changed:
                database_of(session).announce(session, Announcement.LOOK)
        recovered += changed
    return recovered


def cancel_training(session: Session, training_id: int, *, now: datetime | None = None) -> Training:
    """Cancel a training that has not finished; a running one is stopped by its supervisor."""
    now = now or utcnow()
    with writing(session):
        # Its status first, under the row's lock (SQLite's write transaction is alone): what
        # it is cancelled from, for its log line; the UPDATE returns the training, so this
        # costs no statement more than reading it afterwards did.
        was = session.scalar(
            select(Training.status).where(Training.id == training_id).with_for_update()
        )
        if was is None:
            raise NotFound()
        rows = session.execute(
            update(TRAININGS)
            .where(
                Training.id == training_id,
                Training.status.in_((*PENDING_STATUSES, Status.RUNNING)),
            )
            .values(**_release(status=Status.CANCELLED, finished_at=now, updated_at=now))
            .returning(*TRAININGS.columns)
        ).all()
        _record_changes(session, Status.CANCELLED, rows, now, before=Status(was))
    if not rows:
        raise Conflict(f"a {was} training cannot be cancelled")
    return Training(**rows[0]._mapping)


def next_due_at(session: Session, *, now: datetime | None = None) -> datetime | None:
    """When the next scheduled training or back-off ends, for a precise wake-up."""
    now = now or utcnow()
    with reading(session):
        scheduled = session.scalar(
            select(func.min(Training.due_at)).where(Training.status == Status.SCHEDULED)
        )
        # Queued rows already due are work for a free slot, not a reason for a timed look.
        retried = session.scalar(
            select(func.min(Training.due_at)).where(
                Training.status == Status.QUEUED, Training.due_at > now
            )
        )
    moments = [m for m in (scheduled, retried) if m is not None]
    return min(moments) if moments else None


def earliest_wanted(
    session: Session,
    *,
    queued_ids: Iterable[int] = (),
    scheduled_before: datetime | None = None,
    now: datetime | None = None,
) -> datetime | None:
    """When the first of these becomes due: trainings of ``queued_ids`` still queued (waiting
    out a back-off), and trainings scheduled before ``scheduled_before``; None if there are none.
    """
    moments: list[datetime] = []
    ids = list(queued_ids)
    with reading(session):
        if ids:
            rows = session.execute(
                select(Training.due_at).where(
                    Training.id.in_(ids), Training.status == Status.QUEUED
                )
            ).all()
            moments += [due_at or now or utcnow() for (due_at,) in rows]
        if scheduled_before is not None:
            first = session.scalar(
                select(func.min(Training.scheduled_at)).where(
                    Training.status == Status.SCHEDULED, Training.scheduled_at <= scheduled_before
                )
            )
            if first is not None:
                moments.append(first)
    return min(moments) if moments else None
