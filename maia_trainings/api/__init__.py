"""The HTTP API: one blueprint, a module of thin views per resource."""

from __future__ import annotations

from flask import Blueprint

bp = Blueprint("api", __name__)

# The views register themselves on bp when imported.
from . import docs, health, metrics, models, reports, schedules, tokens, trainings, webhooks  # noqa: E402

__all__ = [
    "bp",
    "docs",
    "health",
    "metrics",
    "models",
    "reports",
    "schedules",
    "tokens",
    "trainings",
    "webhooks",
]
