"""The /webhooks resource: subscriptions, their deliveries, and redelivery."""

from __future__ import annotations

from typing import Any

from flask import Response, current_app, request

from .. import db, listing, outbox, webhooks
from ..auth import can_read, current_actor
from ..formats import parse_body, render
from ..schemas import check_webhook_url, webhook_in
from . import bp
from .trainings import parse_id, writes


def _load(partial: bool = False) -> dict[str, Any]:
    """The body's subscription fields, validated; its URL's host must be allowed."""
    fields: dict[str, Any] = webhook_in.load(parse_body(), partial=partial)
    if "url" in fields:
        check_webhook_url(fields["url"], current_app.config, name="url")
    return fields


def _page() -> dict[str, Any]:
    start, limit = listing.parse_page(
        request.args, default_limit=current_app.config["DEFAULT_PAGE_SIZE"]
    )
    return {"start": start, "limit": limit}


@bp.post("/webhooks")
@writes
def create_webhook() -> Response:
    webhook = webhooks.create_webhook(db.get_session(), **_load(), actor=current_actor())
    # The secret is shown this once.
    return render(webhooks.represent_webhook(webhook, with_secret=True))


@bp.get("/webhooks")
@can_read
def list_webhooks() -> Response:
    found = webhooks.list_webhooks(db.get_session(), **_page())
    return render([webhooks.represent_webhook(webhook) for webhook in found])


@bp.get("/webhooks/<webhook_id>")
@can_read
def get_webhook(webhook_id: str) -> Response:
    webhook = webhooks.get_webhook(db.get_session(), parse_id(webhook_id))
    return render(webhooks.represent_webhook(webhook))


@bp.put("/webhooks/<webhook_id>")
@writes
def update_webhook(webhook_id: str) -> Response:
    key = parse_id(webhook_id)
    webhook = webhooks.update_webhook(
        db.get_session(), key, _load(partial=True), actor=current_actor()
    )
    return render(webhooks.represent_webhook(webhook))


@bp.delete("/webhooks/<webhook_id>")
@writes
def delete_webhook(webhook_id: str) -> Response:
    webhook = webhooks.delete_webhook(db.get_session(), parse_id(webhook_id))
    return render(webhooks.represent_webhook(webhook))


@bp.get("/webhooks/<webhook_id>/deliveries")
@can_read
def list_deliveries(webhook_id: str) -> Response:
    session = db.get_session()
    key = parse_id(webhook_id)
    webhooks.get_webhook(session, key)  # 404 for an unknown subscription
    return render(outbox.list_deliveries(session, key, **_page()))


@bp.post("/webhooks/deliveries/<delivery_id>/redeliver")
@writes
def redeliver(delivery_id: str) -> Response:
    session = db.get_session()
    key = parse_id(delivery_id)
    outbox.redeliver(session, key)
    return render(outbox.get_delivery(session, key))
