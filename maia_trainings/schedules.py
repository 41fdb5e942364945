"""Recurring schedules: what a client may send and is shown, the store, and firing: the due
fires of every schedule turned into trainings, exactly one per fire whatever the nodes.

Schedules live in the database, not in APScheduler's memory, so every node and run-pending see
the same ones; the claim loop's housekeeping turn fires them (see ``fire_due``). A fire's
training has the uuid ``<name>@<fire time in UTC>`` (``nightly@2026-03-29T01:00:00Z``): it is
created first (idempotent by uuid), then the schedule is moved on by one conditional UPDATE
(``WHERE id = ? AND next_fire_at = <the value read>``). Of two nodes firing at once exactly one
moves it on and both find the same training; a crash between the two steps makes the same uuid
again next time, which finds the training made before.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from marshmallow import RAISE, Schema, ValidationError, fields, post_load, validate
from sqlalchemy import and_, delete, func, select, true, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from .config import MISFIRE_GRACE
from .cron import Cron, catch_up, wall_trigger, zone
from .db import Announcement, database_of, reading, rows_changed, writing
from .errors import Conflict, NotFound
from .fields import Field, Kind, Setter, show_value
from .listing import Listed, ListQuery, list_rows
from .models import DEFAULT_MODEL, MAX_ID, Schedule, Training, utcnow
from .schemas import MetaText, model_name_rule, plain_text, printable
from .trainings import create_training

log = logging.getLogger(__name__)

# A fire's uuid is the name, "@" and 20 characters of time: within a uuid's 128.
MAX_NAME = 90
# The column's size; a fire's version adds 12 digits (YYYYMMDDHHMM): 44 of a version's 64.
MAX_VERSION_PREFIX = 32
MAX_CRON = 128
MAX_TIMEZONE = 64

_C, _S = Setter.CLIENT, Setter.SERVICE
# A schedule's fields in the order the representation shows them.
FIELDS: tuple[Field, ...] = (
    Field("id", "id", Kind.ID, _S),
    Field("name", "name", Kind.TEXT, _C),
    Field("cron", "cron", Kind.TEXT, _C),
    Field("timezone", "timezone", Kind.TEXT, _C),
    Field("meta", "meta", Kind.TEXT, _C),
    Field("version_prefix", "version_prefix", Kind.TEXT, _C),
    Field("model_name", "model_name", Kind.TEXT, _C),
    Field("enabled", "enabled", Kind.BOOLEAN, _C),
    Field("next_fire_at", "next_fire_at", Kind.DATETIME, _S),
    Field("last_fired_at", "last_fired_at", Kind.DATETIME, _S),
    Field("last_training_id", "last_training_id", Kind.ID, _S),
    Field("missed_fires", "missed_fires", Kind.INTEGER, _S),
    Field("created_at", "created_at", Kind.DATETIME, _S),
    Field("updated_at", "updated_at", Kind.DATETIME, _S),
    Field("created_by", "created_by", Kind.TEXT, _S),
    Field("updated_by", "updated_by", Kind.TEXT, _S),
)
READ_ONLY_NAMES = frozenset(field.name for field in FIELDS if field.read_only)
# GET /schedules: every field may be filtered and sorted by.
LISTED = Listed(Schedule, {field.name: field for field in FIELDS})
_SHOWN = tuple((field.name, field.column, field.kind) for field in FIELDS)


def represent(schedule: Schedule) -> dict[str, Any]:
    """A schedule as the API shows it: field name -> value."""
    return {name: show_value(kind, getattr(schedule, column)) for name, column, kind in _SHOWN}


# What a client sends ---------------------------------------------------------------------


def _valid_cron(value: str) -> None:
    try:
        wall_trigger(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


def _valid_timezone(value: str) -> None:
    try:
        zone(value)
    except ValueError as exc:
        raise ValidationError(str(exc)) from None


class ScheduleIn(Schema):
    """A schedule as a client sends it to POST /schedules or PUT /schedules/{id}."""

    class Meta:
        unknown = RAISE

    name = fields.String(required=True, validate=[validate.Length(min=1, max=MAX_NAME), printable])
    cron = fields.String(
        required=True,
        validate=[validate.Length(max=MAX_CRON), _valid_cron],
        metadata={"examples": ["0 3 * * *", "*/15 * * * *"]},
    )
    timezone = fields.String(
        load_default="UTC",
        validate=[validate.Length(max=MAX_TIMEZONE), _valid_timezone],
        metadata={"examples": ["UTC", "Europe/Madrid"]},
    )
    meta = MetaText(allow_none=True)
    version_prefix = fields.String(
        allow_none=True, validate=[validate.Length(max=MAX_VERSION_PREFIX), plain_text]
    )
    model_name = fields.String(load_default=DEFAULT_MODEL, validate=model_name_rule)
    enabled = fields.Boolean(load_default=True)

    @post_load
    def _no_empty_prefix(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        # An empty field of a form or XML body: no prefix, automatic versions.
        if data.get("version_prefix") == "":
            data["version_prefix"] = None
        return data


schedule_in = ScheduleIn()


def load_schedule(body: Mapping[str, Any], *, partial: bool = False) -> dict[str, Any]:
    """A client's schedule fields, validated (ValidationError naming each bad field).

    The service's fields are ignored when sent, so that a GET's body can be PUT back.
    """
    sent = {name: value for name, value in body.items() if name not in READ_ONLY_NAMES}
    loaded: dict[str, Any] = schedule_in.load(sent, partial=partial)
    return loaded


# The store -------------------------------------------------------------------------------


def get_schedule(session: Session, schedule_id: int) -> Schedule:
    """The stored schedule, read afresh; NotFound if there is none."""
    with reading(session):
        schedule = session.get(Schedule, schedule_id, populate_existing=True)
    if schedule is None:
        raise NotFound()
    return schedule


def find_schedule(session: Session, name_or_id: str) -> Schedule:
    """The schedule named ``name_or_id``, else the one with that id; NotFound if neither."""
    with reading(session):
        found = session.scalar(
            select(Schedule)
            .where(Schedule.name == name_or_id)
            .execution_options(populate_existing=True)
        )
        digits = name_or_id.isascii() and name_or_id.isdigit()
        if found is None and digits and int(name_or_id) <= MAX_ID:
            found = session.get(Schedule, int(name_or_id), populate_existing=True)
    if found is None:
        raise NotFound(f"no schedule is named {name_or_id!r} or has that id")
    return found


def list_schedules(session: Session, query: ListQuery) -> Sequence[Schedule]:
    schedules: Sequence[Schedule] = list_rows(session, LISTED, query)
    return schedules


def _first_fire(cron: str, timezone: str, enabled: bool, now: datetime) -> datetime | None:
    """A schedule's next fire when it is made, resumed or its times change: none of the
    fires before ``now`` (those it missed while paused are not caught up)."""
    return Cron(cron, timezone).next_after(now) if enabled else None


def _name_taken(name: str) -> Conflict:
    return Conflict(f"a schedule named {name!r} already exists")


def create_schedule(
    session: Session, fields: Mapping[str, Any], *, actor: str | None, now: datetime | None = None
) -> Schedule:
    """Store a new schedule from validated ``fields``; Conflict if its name is taken."""
    now = now or utcnow()
    values = {
        "timezone": "UTC",
        "enabled": True,
        "meta": None,
        "version_prefix": None,
        "model_name": DEFAULT_MODEL,
        **fields,
    }
    schedule = Schedule(
        **values,
        next_fire_at=_first_fire(values["cron"], values["timezone"], values["enabled"], now),
        missed_fires=0,
        created_at=now,
        updated_at=now,
        created_by=actor,
        updated_by=actor,
    )
    try:
        with writing(session):
            session.add(schedule)
            if schedule.next_fire_at is not None:
                # Every node looks again, and sets its next timed look by this fire too.
                database_of(session).announce(session, Announcement.LOOK)
    except IntegrityError:
        raise _name_taken(values["name"]) from None
    return schedule


def update_schedule(
    session: Session,
    schedule_id: int,
    fields: Mapping[str, Any],
    *,
    actor: str | None,
    now: datetime | None = None,
) -> Schedule:
    """Apply a client's changes; fields sent with their current value count as unchanged.

    A new cron expression or time zone, or enabling, sets the next fire to the first after
    ``now``; disabling clears it (the schedule is paused). The name never changes (409), as a
    training's uuid does not: its fires' trainings are named after it, and a fire made under
    one name and again under another would be two trainings.
    """
    now = now or utcnow()
    current = get_schedule(session, schedule_id)
    changes = {name: value for name, value in fields.items() if value != getattr(current, name)}
    if "name" in changes:
        raise Conflict("a schedule's name cannot be changed; make a new schedule instead")
    if not changes:
        return current
    guard = Schedule.id == schedule_id
    timing = ("cron", "timezone", "enabled")
    if any(name in changes for name in timing):
        after = {name: changes.get(name, getattr(current, name)) for name in timing}
        changes["next_fire_at"] = _first_fire(**after, now=now)
        # Computed from what was read: not written over a concurrent change of those.
        unchanged = [name for name in timing if name not in changes]
        guard = and_(guard, *(getattr(Schedule, n) == getattr(current, n) for n in unchanged))
    try:
        with writing(session):
            result = session.execute(
                update(Schedule).where(guard).values(**changes, updated_at=now, updated_by=actor)
            )
            if changes.get("next_fire_at") is not None and rows_changed(result):
                database_of(session).announce(session, Announcement.LOOK)
    except IntegrityError:
        raise _name_taken(changes["name"]) from None
    if rows_changed(result) == 0:
        get_schedule(session, schedule_id)  # raises NotFound if it was deleted meanwhile
        raise Conflict("the schedule was changed meanwhile; send the change again")
    return get_schedule(session, schedule_id)


def pause_schedule(
    session: Session, schedule_id: int, *, actor: str | None, now: datetime | None = None
) -> Schedule:
    """Stop firing (no next fire) until resumed; a paused schedule is left as it is."""
    return update_schedule(session, schedule_id, {"enabled": False}, actor=actor, now=now)


def resume_schedule(
    session: Session, schedule_id: int, *, actor: str | None, now: datetime | None = None
) -> Schedule:
    """Fire again from the first fire after ``now``; an enabled schedule is left as it is."""
    return update_schedule(session, schedule_id, {"enabled": True}, actor=actor, now=now)


def delete_schedule(session: Session, schedule_id: int) -> Schedule:
    """Delete a schedule; returns what it was. Its trainings stay, with their schedule_id."""
    current = get_schedule(session, schedule_id)
    with writing(session):
        result = session.execute(delete(Schedule).where(Schedule.id == schedule_id))
    if rows_changed(result) == 0:
        raise NotFound()
    return current


def next_fire_at(session: Session, *, now: datetime | None = None) -> datetime | None:
    """The earliest next fire after ``now`` of the enabled schedules, for a timed look.

    Fires already due are the housekeeping turn's: one that could not fire (see
    ``fire_due``) is tried again at the next poll, not in a loop of looks.
    """
    now = now or utcnow()
    with reading(session):
        return session.scalar(
            select(func.min(Schedule.next_fire_at)).where(
                Schedule.enabled == true(), Schedule.next_fire_at > now
            )
        )


# Firing ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fired:
    """What handling one due schedule came to."""

    schedule_id: int
    fire: datetime | None  # the fire that has a training now; None when all were too old
    training_id: int | None
    missed: int  # fires added to missed_fires
    moved_on: bool  # False: another node moved the schedule on first


def fire_uuid(name: str, fire: datetime) -> str:
    """The uuid of the training of a fire: ``<name>@<fire time in UTC>``."""
    return f"{name}@{fire.astimezone(UTC):%Y-%m-%dT%H:%M:%SZ}"


def fire_due(
    session: Session, *, now: datetime | None = None, grace: float = MISFIRE_GRACE
) -> list[Fired]:
    """Turn the fires that fell due by ``now`` into trainings: one per schedule, for its
    latest fire, when that is at most ``grace`` seconds old (MISFIRE_GRACE); every other fire
    is counted in the schedule's ``missed_fires``.

    A schedule that cannot be fired (a time zone this host does not know) is logged and left
    for the next look; the others are fired all the same.
    """
    now = now or utcnow()
    with reading(session):
        due = session.scalars(
            select(Schedule)
            .where(Schedule.enabled == true(), Schedule.next_fire_at <= now)
            .order_by(Schedule.next_fire_at, Schedule.id)
            .execution_options(populate_existing=True)
        ).all()
    fired = []
    for schedule in due:
        try:
            fired.append(_fire(session, schedule, now, grace))
        except Exception:
            log.exception(
                "schedule %s (%s) could not fire; the next look tries again",
                schedule.id,
                schedule.name,
            )
    return fired


def _fire(session: Session, schedule: Schedule, now: datetime, grace: float) -> Fired:
    first = schedule.next_fire_at
    assert first is not None
    cron = Cron(schedule.cron, schedule.timezone)
    plan = catch_up(cron, first, now, grace)
    training_id = None
    if plan.fire is not None:
        training_id = _make_training(session, schedule, cron, plan.fire, now)
    made = training_id is not None
    missed = plan.fires - made
    if missed and plan.last is not None:
        missed -= _made_already(session, schedule, first, plan.last, made=made)
    values: dict[str, Any] = {
        "next_fire_at": plan.next_fire_at,
        "missed_fires": Schedule.missed_fires + missed,
    }
    if made:
        values.update(last_fired_at=plan.fire, last_training_id=training_id)
    with writing(session):
        result = session.execute(
            update(Schedule)
            .where(Schedule.id == schedule.id, Schedule.next_fire_at == first)
            .values(**values)
        )
    moved_on = rows_changed(result) == 1
    if moved_on:
        log.info(
            "schedule %s (%s): fire %s made training %s, %d missed",
            schedule.id,
            schedule.name,
            plan.fire,
            training_id,
            missed,
        )
    fire = plan.fire if made else None
    return Fired(schedule.id, fire, training_id, missed if moved_on else 0, moved_on)


def _make_training(
    session: Session, schedule: Schedule, cron: Cron, fire: datetime, now: datetime
) -> int | None:
    """The id of the training of ``fire``, made now or found made by another node."""
    fields: dict[str, Any] = {
        "uuid": fire_uuid(schedule.name, fire),
        "meta": schedule.meta,
        "model_name": schedule.model_name,
    }
    if schedule.version_prefix:
        fields["version"] = schedule.version_prefix + f"{cron.local(fire):%Y%m%d%H%M}"
    try:
        training, _created = create_training(
            session, fields, actor=f"schedule:{schedule.id}", now=now, schedule_id=schedule.id
        )
    except Conflict:
        # Made from other fields: the schedule was edited between two nodes' attempts at this
        # fire, and the fire has its training; or a client took the uuid, and it has none.
        with reading(session):
            found = session.execute(
                select(Training.id, Training.schedule_id).where(Training.uuid == fields["uuid"])
            ).one_or_none()
        if found is None or found.schedule_id != schedule.id:
            log.warning(
                "schedule %s (%s): the uuid %r of its fire is another training's; the fire "
                "is counted as missed",
                schedule.id,
                schedule.name,
                fields["uuid"],
            )
            return None
        return int(found.id)
    return training.id


def _made_already(
    session: Session, schedule: Schedule, first: datetime, last: datetime, *, made: bool
) -> int:
    """How many fires from ``first`` to ``last`` (``last`` excluded when it was just ``made``)
    have a training already: made by a node that then lost the race to move the schedule on,
    or before a crash. They are not missed. Fire uuids sort as their times do.

    One race is left: a node whose clock reads earlier, making an older fire's training after
    this count, gets that fire both a training and a place in missed_fires (never a second
    training).
    """
    latest = fire_uuid(schedule.name, last)
    with reading(session):
        found = session.scalar(
            select(func.count())
            .select_from(Training)
            .where(
                Training.schedule_id == schedule.id,
                Training.uuid >= fire_uuid(schedule.name, first),
                Training.uuid < latest if made else Training.uuid <= latest,
            )
        )
    return found or 0
