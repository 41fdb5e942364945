"""The API describes itself: its OpenAPI document and a reference page, with no token."""

from __future__ import annotations

from flask import Response, current_app, jsonify, send_from_directory, url_for

from .. import openapi, reference_page
from ..formats import HTML
from . import bp


@bp.get("/openapi.json")
def openapi_document() -> Response:
    return jsonify(openapi.document(current_app))


@bp.get("/docs")
def docs_page() -> Response:
    html = reference_page.page(
        folder=url_for("api.docs_page"),  # Swagger UI's files live under /docs/
        script=url_for("api.docs_script"),
        document=url_for("api.openapi_document"),
    )
    answer = Response(html, mimetype=HTML)
    answer.headers["Content-Security-Policy"] = reference_page.CONTENT_SECURITY_POLICY
    return answer


@bp.get("/docs/init.js")
def docs_script() -> Response:
    return Response(reference_page.SCRIPT, mimetype="text/javascript")


@bp.get("/docs/<path:filename>")
def docs_file(filename: str) -> Response:
    return send_from_directory(reference_page.FILES, filename, max_age=3600)
