"""/healthz: whether the service and its database answer, the trainings by status, and this
node: its name, role, the trainings it runs and whether it can write to the models folder."""

from __future__ import annotations

from flask import Response, current_app

from .. import db, dispatcher, listing, node
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
    started = dispatcher.running()
    writable = node.models_dir_writable(current_app.config["MODELS_DIR"])
    answer = {
        # "degraded": the API answers, but this node cannot publish models (a lost mount).
        "status": "ok" if writable else "degraded",
        "database": "ok",
        "trainings": counts,
        "node": {
            "name": node.name(current_app),
            "role": node.role(current_app) if started is not None else node.Role.API,
            # Ids as strings, as every representation shows them.
            "runs": [str(i) for i in started.loop.running()] if started is not None else [],
            "modelsDir": "writable" if writable else "not writable",
        },
    }
    return render(answer, root="health")
