"""/healthz: whether the service and its database answer, and the trainings by status."""

from __future__ import annotations

from flask import Response, current_app

from .. import db, listing
from ..errors import Unavailable
from ..formats import render
from . import bp


@bp.get("/healthz")
def health() -> Response:
    try:
        counts = listing.status_counts(db.get_session())
    except Exception as exc:
        current_app.logger.exception("health check could not reach the database")
        raise Unavailable("the database is not reachable") from exc
    return render({"status": "ok", "database": "ok", "trainings": counts}, root="health")
