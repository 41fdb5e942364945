"""The /models resource: each model's champion, its model file, its publications, scoring."""

from __future__ import annotations

from typing import Any

from flask import Response

from .. import db, publishing, scorer
from ..auth import can_read
from ..errors import NotFound
from ..fields import format_timestamp, is_model_name, represent
from ..formats import render
from ..models import Publication, Training
from . import bp
from .trainings import send_model_file


def _name(raw: str) -> str:
    """A model's name from a path; NotFound for what no model can be called."""
    if not is_model_name(raw):
        raise NotFound(f"there is no model {raw!r}")
    return raw


def _champion(model_name: str) -> Training:
    found = publishing.champion(db.get_session(), _name(model_name))
    if found is None:
        raise NotFound(f"model {model_name!r} has no champion: no training is published")
    return found


def _publication(row: Publication) -> dict[str, Any]:
    return {
        "id": str(row.id),
        "model_name": row.model_name,
        "training_id": str(row.training_id),
        "version": row.version,
        "published_by": row.published_by,
        "published_at": format_timestamp(row.published_at),
        "reason": row.reason,
    }


@bp.get("/models")
@can_read
def list_models() -> Response:
    found = publishing.models(db.get_session())
    return render(
        [
            {"model_name": name, "champion": None if champion is None else represent(champion)}
            for name, champion in found
        ]
    )


@bp.get("/models/<model_name>")
@can_read
def get_model(model_name: str) -> Response:
    return render(represent(_champion(model_name)))


@bp.get("/models/<model_name>/binary")
@can_read
def model_binary(model_name: str) -> Response:
    return send_model_file(_champion(model_name))


@bp.get("/models/<model_name>/history")
@can_read
def model_history(model_name: str) -> Response:
    found = publishing.history(db.get_session(), _name(model_name))
    return render([_publication(row) for row in found])


@bp.post("/models/<model_name>/score")
@can_read
def score_rows(model_name: str) -> Response:
    name, rows = _name(model_name), scorer.read_rows()
    # One light read of the champion; without one, the full read says why (404).
    champion = scorer.current_champion(db.get_session(), name)
    return scorer.score(name, champion or scorer.Champion.of(_champion(name)), rows)
