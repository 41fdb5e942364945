"""Webhook subscriptions at rest: subscribe, list, get, change and delete; and how they are shown.

A subscription's signing secret (32 random bytes, hex) is kept as it is: signing needs it. It
is shown once, in the answer to the subscription's creation, and never again (not in lists, not
in logs). Deleting a subscription deletes its deliveries too, pending ones included: nothing
is sent for it any more, and its delivery history goes with it.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from .db import reading, rows_changed, writing
from .errors import NotFound
from .fields import format_timestamp
from .models import DeliveryStatus, Webhook, WebhookDelivery, WebhookEvent, utcnow
from .outbox import parse_events


def canonical_events(events: Iterable[str]) -> str:
    """Event names as stored: each once, comma-separated, in the enum's order."""
    wanted = {WebhookEvent(name) for name in events}
    return ",".join(event for event in WebhookEvent if event in wanted)


def create_webhook(
    session: Session,
    *,
    url: str,
    events: Iterable[str],
    enabled: bool = True,
    actor: str | None,
    now: datetime | None = None,
) -> Webhook:
    """Subscribe ``url`` to ``events`` with a new secret; the secret is the caller's to show."""
    now = now or utcnow()
    webhook = Webhook(
        url=url,
        events=canonical_events(events),
        enabled=enabled,
        secret=secrets.token_hex(32),
        created_at=now,
        updated_at=now,
        created_by=actor,
        updated_by=actor,
    )
    with writing(session):
        session.add(webhook)
    return webhook


def get_webhook(session: Session, webhook_id: int) -> Webhook:
    """The stored subscription, read afresh; NotFound if there is none."""
    with reading(session):
        webhook = session.get(Webhook, webhook_id, populate_existing=True)
    if webhook is None:
        raise NotFound()
    return webhook


def list_webhooks(
    session: Session, *, start: int = 0, limit: int | None = None
) -> Sequence[Webhook]:
    """Subscriptions in id order, a page of them."""
    with reading(session):
        return session.scalars(
            select(Webhook).order_by(Webhook.id).offset(start).limit(limit)
        ).all()


def update_webhook(
    session: Session,
    webhook_id: int,
    fields: Mapping[str, Any],
    *,
    actor: str | None,
    now: datetime | None = None,
) -> Webhook:
    """Change a subscription's ``url``, ``events`` or ``enabled``.

    A new URL applies to its pending deliveries too: they were owed to the subscription, and
    the old address may be gone. Disabling stops new events; pending deliveries still go.
    """
    now = now or utcnow()
    changes = {name: fields[name] for name in ("url", "enabled") if name in fields}
    if "events" in fields:
        changes["events"] = canonical_events(fields["events"])
    with writing(session):
        result = session.execute(
            update(Webhook)
            .where(Webhook.id == webhook_id)
            .values(**changes, updated_at=now, updated_by=actor)
        )
        if rows_changed(result) and "url" in changes:
            session.execute(
                update(WebhookDelivery)
                .where(
                    WebhookDelivery.webhook_id == webhook_id,
                    WebhookDelivery.status == DeliveryStatus.PENDING,
                )
                .values(url=changes["url"], updated_at=now)
            )
    if rows_changed(result) == 0:
        raise NotFound()
    return get_webhook(session, webhook_id)


def delete_webhook(session: Session, webhook_id: int) -> Webhook:
    """Delete a subscription and its deliveries (their attempts go with them); returns it."""
    current = get_webhook(session, webhook_id)
    with writing(session):
        session.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_id == webhook_id))
        result = session.execute(delete(Webhook).where(Webhook.id == webhook_id))
    if rows_changed(result) == 0:
        raise NotFound()
    return current


def represent_webhook(webhook: Webhook, *, with_secret: bool = False) -> dict[str, Any]:
    """A subscription as the API shows it; ``secret`` only when just made."""
    shown: dict[str, Any] = {
        "id": str(webhook.id),
        "url": webhook.url,
        "events": [str(event) for event in parse_events(webhook.events)],
        "enabled": bool(webhook.enabled),
        "created_at": format_timestamp(webhook.created_at),
        "updated_at": format_timestamp(webhook.updated_at),
        "created_by": webhook.created_by,
        "updated_by": webhook.updated_by,
    }
    if with_secret:
        shown["secret"] = webhook.secret
    return shown
