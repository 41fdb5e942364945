"""The /schedules resource: each view authorises, parses, validates, stores and renders."""

from __future__ import annotations

import dataclasses
from typing import Any

from flask import Response, current_app, request

from .. import db, dispatcher, listing, schedules
from ..auth import can_read, current_actor
from ..fields import represent
from ..formats import parse_body, render
from ..listing import Filter
from ..schemas import check_trainer_params
from . import bp
from .trainings import parse_id, writes

ROOT = "schedule"  # the XML root of one schedule


def _load(partial: bool = False) -> dict[str, Any]:
    """The body's schedule fields, validated, with the trainer's own check of the meta."""
    fields = schedules.load_schedule(parse_body(), partial=partial)
    if fields.get("meta") is not None:
        check_trainer_params(fields["meta"], current_app.config)
    return fields


def _shown(schedule: Any) -> Response:
    return render(schedules.represent(schedule), root=ROOT)


@bp.post("/schedules")
@writes
def create_schedule() -> Response:
    schedule = schedules.create_schedule(db.get_session(), _load(), actor=current_actor())
    dispatcher.notify_schedule(schedule)
    return _shown(schedule)


@bp.get("/schedules")
@can_read
def list_schedules() -> Response:
    query = listing.parse_list_query(
        request.args,
        default_limit=current_app.config["DEFAULT_PAGE_SIZE"],
        of=schedules.LISTED,
    )
    found = schedules.list_schedules(db.get_session(), query)
    return render([schedules.represent(schedule) for schedule in found])


@bp.get("/schedules/<schedule_id>")
@can_read
def get_schedule(schedule_id: str) -> Response:
    return _shown(schedules.get_schedule(db.get_session(), parse_id(schedule_id)))


@bp.put("/schedules/<schedule_id>")
@writes
def update_schedule(schedule_id: str) -> Response:
    key = parse_id(schedule_id)
    fields = _load(partial=True)
    schedule = schedules.update_schedule(db.get_session(), key, fields, actor=current_actor())
    dispatcher.notify_schedule(schedule)  # a new cron, zone or resumption: a new next fire
    return _shown(schedule)


@bp.delete("/schedules/<schedule_id>")
@writes
def delete_schedule(schedule_id: str) -> Response:
    return _shown(schedules.delete_schedule(db.get_session(), parse_id(schedule_id)))


@bp.post("/schedules/<schedule_id>/pause")
@writes
def pause_schedule(schedule_id: str) -> Response:
    key = parse_id(schedule_id)
    return _shown(schedules.pause_schedule(db.get_session(), key, actor=current_actor()))


@bp.post("/schedules/<schedule_id>/resume")
@writes
def resume_schedule(schedule_id: str) -> Response:
    key = parse_id(schedule_id)
    schedule = schedules.resume_schedule(db.get_session(), key, actor=current_actor())
    dispatcher.notify_schedule(schedule)
    return _shown(schedule)


@bp.get("/schedules/<schedule_id>/trainings")
@can_read
def schedule_trainings(schedule_id: str) -> Response:
    """The schedule's trainings: GET /trainings with schedule_id set, the same parameters."""
    session = db.get_session()
    key = parse_id(schedule_id)
    query = listing.parse_list_query(
        request.args, default_limit=current_app.config["DEFAULT_PAGE_SIZE"]
    )
    schedules.get_schedule(session, key)  # NotFound for an unknown schedule
    own = dataclasses.replace(query, filters=(*query.filters, Filter("schedule_id", "eq", (key,))))
    return render([represent(training) for training in listing.list_trainings(session, own)])
