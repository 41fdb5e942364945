"""The API reference page at /docs: Swagger UI's files (flask-swagger-ui's), our page, its CSP."""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from markupsafe import escape

# Swagger UI 5 (it reads OpenAPI 3.1), as flask-swagger-ui ships it; its blueprint is not used.
FILES = Path(str(files("flask_swagger_ui") / "dist"))

# Only this service's own scripts, styles and document; Swagger UI sets its inline styles
# through the DOM, and draws its icons from data: URIs.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)

# No inline script (the policy allows none): the page names the document, the script reads it.
SCRIPT = """\
"use strict";
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.url,
  dom_id: "#swagger-ui",
  deepLinking: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout",
});
"""


def page(*, folder: str, script: str, document: str) -> str:
    """The page: Swagger UI's style and script from ``folder``, ours, the document's URL."""
    folder, script, document = escape(folder), escape(script), escape(document)
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>maia-trainings: API reference</title>
<link rel="stylesheet" href="{folder}/swagger-ui.css">
<link rel="icon" href="{folder}/favicon-32x32.png">
</head>
<body>
<div id="swagger-ui" data-url="{document}"></div>
<script src="{folder}/swagger-ui-bundle.js"></script>
<script src="{script}"></script>
</body>
</html>
"""
