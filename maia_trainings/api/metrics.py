"""/metrics: the Prometheus figures; public, or for any token when METRICS_PUBLIC is off."""

from __future__ import annotations

from flask import Response, current_app, request

from .. import metrics
from ..auth import can_read
from . import bp


def _figures() -> Response:
    found = metrics.of(current_app)
    assert found is not None  # create_app always makes them
    body, content_type = found.exposition(request.headers.get("Accept", ""))
    return Response(body, content_type=content_type)


@bp.get("/metrics")
def scrape() -> Response:
    view = _figures if current_app.config["METRICS_PUBLIC"] else can_read(_figures)
    return view()
