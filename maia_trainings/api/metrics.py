"""/metrics: the Prometheus figures; public, or for any token when METRICS_PUBLIC is off."""

from __future__ import annotations

from flask import Response, current_app, request

from .. import metrics
from ..auth import can_read
from . import bp


def _figures() -> Response:
    body, content_type = metrics.of(current_app).exposition(request.headers.get("Accept", ""))
    return Response(body, content_type=content_type)


# Built once: the view for METRICS_PUBLIC = False.
_figures_for_a_token = can_read(_figures)


@bp.get("/metrics")
def scrape() -> Response:
    view = _figures if current_app.config["METRICS_PUBLIC"] else _figures_for_a_token
    return view()
