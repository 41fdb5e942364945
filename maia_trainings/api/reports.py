"""A training's validation report: its pack as JSON or XML, or as a printable page."""

from __future__ import annotations

from flask import Response

from .. import db, reports
from ..auth import can_read
from ..formats import HTML, JSON, OFFERED_TYPES, negotiate, render
from ..trainers import report_page
from . import bp
from .trainings import parse_id

# JSON first: a client that accepts anything (curl's */*) gets the figures, a browser the page.
REPORT_TYPES = (JSON, *OFFERED_TYPES[1:], HTML)


@bp.get("/trainings/<training_id>/report")
@can_read
def get_report(training_id: str) -> Response:
    mimetype = negotiate(offered=REPORT_TYPES)
    report = reports.find(db.get_session(), parse_id(training_id))
    if mimetype == HTML:
        page = Response(report.as_html(), mimetype=HTML)
        page.headers["Content-Security-Policy"] = report_page.CONTENT_SECURITY_POLICY
        page.vary.add("Accept")
        return page
    return render(report.as_json(), root="report", mimetype=mimetype)
