"""The dashboard: one page at ``/`` whose script reads and drives the JSON API with a token.

The page holds no data of its own and needs no token to be served: its script asks for one,
keeps it in the tab's sessionStorage and sends it as ``Authorization: Bearer`` with each call.
"""

from __future__ import annotations

from flask import Blueprint, Response, render_template

# The page's own script, style sheet and icon, from this service only; its calls go to the API
# on the same origin. No inline script or style: an injected one would not run.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

bp = Blueprint(
    "dashboard",
    __name__,
    template_folder="templates",
    static_folder="static",
    static_url_path="/dashboard/static",
)


@bp.get("/")
def index() -> str:
    return render_template("dashboard/index.html")


@bp.after_request
def _allow_own_files(response: Response) -> Response:
    # Runs before headers.py's app-wide hook, whose setdefault then leaves this policy alone.
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
