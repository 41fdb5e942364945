"""The database tables (SQLAlchemy 2 typed models), the training statuses and token scopes."""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import cast

from sqlalchemy import (
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Status(StrEnum):
    """Where a training is in its life; stored and shown as these exact strings."""

    SCHEDULED = "scheduled"  # waits for its scheduled_at
    QUEUED = "queued"  # due: the next free worker claims it
    RUNNING = "running"  # claimed by a run that holds its lease
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


PENDING_STATUSES = (Status.SCHEDULED, Status.QUEUED)
# The model a training belongs to when its client names none.
DEFAULT_MODEL = "default"
# The largest id a training can have: its column is a 32-bit INTEGER on PostgreSQL.
MAX_ID = 2**31 - 1


class Scope(StrEnum):
    """What a token may do: read, or read and write."""

    READ = "read"
    WRITE = "write"


def utcnow() -> datetime:
    """The current time in UTC, to the millisecond: the precision the API shows and filters by."""
    now = datetime.now(UTC)
    return now.replace(microsecond=now.microsecond // 1000 * 1000)


class UTCDateTime(TypeDecorator[datetime]):
    """Stores naive UTC (sortable the same way on every backend) and returns aware UTC."""

    impl = DateTime
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are ambiguous; pass an aware one")
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        return None if value is None else value.replace(tzinfo=UTC)


class Base(DeclarativeBase):
    pass


class Training(Base):
    """One training: the request that launched it, its place in the queue and its results."""

    __tablename__ = "trainings"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    uuid: Mapped[str] = mapped_column(String(128), unique=True)
    status: Mapped[str] = mapped_column(String(16), index=True)
    accuracy: Mapped[float | None] = mapped_column(Float)
    precission: Mapped[float | None] = mapped_column(Float)
    mae: Mapped[float | None] = mapped_column(Float)
    rmse: Mapped[float | None] = mapped_column(Float)
    binary_path: Mapped[str | None] = mapped_column(String(1024))
    version: Mapped[str | None] = mapped_column(String(64))
    meta: Mapped[str | None] = mapped_column(Text)
    scheduled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_by: Mapped[str | None] = mapped_column(String(64))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    error: Mapped[str | None] = mapped_column(Text)
    progress: Mapped[float | None] = mapped_column(Float)
    # Further figures a trainer reported, as a JSON object's text.
    metrics: Mapped[str | None] = mapped_column(Text)
    # The run's output (stdout, stderr, the trainer's log), kept to LOG_LIMIT bytes.
    log: Mapped[str | None] = mapped_column(Text)
    # The published model file's SHA-256 (hex) and size in bytes.
    binary_sha256: Mapped[str | None] = mapped_column(String(64))
    binary_size: Mapped[int | None] = mapped_column(Integer)
    # The number behind an automatic version before models had their own numbers (0004): no
    # longer set. Kept because dropping its table-level UNIQUE on SQLite needs a copy of the
    # table, which resets its AUTOINCREMENT counter (see revision 0002).
    auto_version: Mapped[int | None] = mapped_column(Integer, unique=True)
    # The model it trains (see publishing), and the number behind its automatic version
    # ("1", "2", ...): counted per model, unique within it so two runs never share one.
    model_name: Mapped[str] = mapped_column(String(64), server_default=DEFAULT_MODEL)
    model_version: Mapped[int | None] = mapped_column(Integer)
    # Who published it last (None: the service, by PUBLISH_POLICY), and why the policy did or
    # did not publish it when it finished.
    published_by: Mapped[str | None] = mapped_column(String(64))
    publish_note: Mapped[str | None] = mapped_column(Text)
    # Who runs it and until when that claim holds unless renewed (see queue.claim_next).
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a pending training may run: a scheduled one's time, a retried one's back-off end,
    # otherwise when it was queued. Claims read due rows in this order (see queue.claim_next).
    due_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # SHA-256 of the creating request's fields: a retried POST with the same uuid is
    # recognised as the same request even after the training was edited.
    request_fingerprint: Mapped[str] = mapped_column(String(64))
    # The schedule whose fire created it (kept after the schedule is deleted: ids are never
    # reused), and the URL told of its final event.
    schedule_id: Mapped[int | None] = mapped_column(Integer, index=True)
    callback_url: Mapped[str | None] = mapped_column(String(2048))

    __table_args__ = (
        # The queue looks for due work by status and time.
        Index("ix_trainings_status_scheduled_at", "status", "scheduled_at"),
        Index("ix_trainings_status_lease_expires_at", "status", "lease_expires_at"),
        # Claims: the due queued rows in due order, however many wait out a back-off.
        Index("ix_trainings_status_due_at", "status", "due_at", "id"),
        # A model's trainings (GET /models), and its numbers (finish hands out the next one).
        Index("ix_trainings_model_name_status", "model_name", "status"),
        Index("ix_trainings_model_name_model_version", "model_name", "model_version", unique=True),
        # Never hand a deleted training's id to a new one: a client retrying a DELETE whose
        # answer it lost must not delete someone else's training (PostgreSQL never reuses).
        {"sqlite_autoincrement": True},
    )


# The trainings table itself, for Core statements (claims, group inserts) that skip the ORM.
TRAININGS = cast(Table, Training.__table__)


class Publication(Base):
    """One publication of a training as its model's champion; the latest one is the champion.

    Rows are only added: publishing an older training again (a rollback) adds one more.
    """

    __tablename__ = "publications"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model_name: Mapped[str] = mapped_column(String(64), index=True)
    training_id: Mapped[int] = mapped_column(Integer)
    version: Mapped[str | None] = mapped_column(String(64))
    # The token's name; None when the service published it (PUBLISH_POLICY).
    published_by: Mapped[str | None] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Why: "manual", "policy always", "if_better: gini 0.61 beats champion 0.58 by ≥ 0".
    reason: Mapped[str | None] = mapped_column(Text)


PUBLICATIONS = cast(Table, Publication.__table__)


class Report(Base):
    """A succeeded training's validation pack, and the charts drawn from it when it ran.

    Kept apart from ``trainings``: a pack is tens of kilobytes that only its own page reads.
    It goes with its training: deleting one deletes the other.
    """

    __tablename__ = "reports"

    training_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    # The pack as a JSON object's text (see maia_trainings.trainers).
    pack: Mapped[str] = mapped_column(Text)
    # The charts as a JSON object of SVG elements' text, by chart ("roc", "ks", ...).
    charts: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


REPORTS = cast(Table, Report.__table__)


class ApiToken(Base):
    """A bearer token: only its SHA-256 is stored, never the token itself."""

    __tablename__ = "api_tokens"
    __table_args__ = ({"sqlite_autoincrement": True},)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    scope: Mapped[str] = mapped_column(String(8))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Schedule(Base):
    """A recurring training: each fire of its cron expression (in its time zone) creates one."""

    __tablename__ = "schedules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    cron: Mapped[str] = mapped_column(String(128))
    timezone: Mapped[str] = mapped_column(String(64))
    meta: Mapped[str | None] = mapped_column(Text)
    version_prefix: Mapped[str | None] = mapped_column(String(32))
    # The model its trainings belong to (their model_name).
    model_name: Mapped[str] = mapped_column(String(64), server_default=DEFAULT_MODEL)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # The next fire not yet turned into a training; None while paused.
    next_fire_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_fired_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_training_id: Mapped[int | None] = mapped_column(Integer)
    # Fires that made no training of their own (coalesced, or past MISFIRE_GRACE).
    missed_fires: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = (
        # The fires that fell due: enabled schedules by their next fire.
        Index("ix_schedules_enabled_next_fire_at", "enabled", "next_fire_at"),
        {"sqlite_autoincrement": True},
    )


SCHEDULES = cast(Table, Schedule.__table__)


class Webhook(Base):
    """A subscription to training events: where they are POSTed and the secret signing them."""

    __tablename__ = "webhooks"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    url: Mapped[str] = mapped_column(String(2048))
    # The event names, comma-separated in a canonical order.
    events: Mapped[str] = mapped_column(String(256))
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # HMAC-SHA256 key (hex). Kept as it is, unlike token hashes: signing needs the key itself.
    secret: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    created_by: Mapped[str | None] = mapped_column(String(64))
    updated_by: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = ({"sqlite_autoincrement": True},)


class WebhookEvent(StrEnum):
    """What a webhook is told of: a training queued, started (claimed by a run) or ended."""

    QUEUED = "training.queued"
    STARTED = "training.started"
    SUCCEEDED = "training.succeeded"
    FAILED = "training.failed"
    CANCELLED = "training.cancelled"


# The events of a training's end: a subscription's default, and all a callback_url is told of.
FINAL_EVENTS = (WebhookEvent.SUCCEEDED, WebhookEvent.FAILED, WebhookEvent.CANCELLED)
# The event of a training entering each status (a scheduled training is told of when queued).
EVENT_OF_STATUS = {
    Status.QUEUED: WebhookEvent.QUEUED,
    Status.RUNNING: WebhookEvent.STARTED,
    Status.SUCCEEDED: WebhookEvent.SUCCEEDED,
    Status.FAILED: WebhookEvent.FAILED,
    Status.CANCELLED: WebhookEvent.CANCELLED,
}


class DeliveryStatus(StrEnum):
    """Where a webhook delivery is: waiting to be (re)sent, delivered, or given up."""

    PENDING = "pending"
    DELIVERED = "delivered"
    FAILED = "failed"


class WebhookDelivery(Base):
    """The outbox: one event to POST to one URL, written with the change that caused it."""

    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    # The X-Maia-Delivery id: the same on every attempt, so receivers can drop duplicates.
    delivery_uuid: Mapped[str] = mapped_column(String(36), unique=True)
    # The subscription it is for; None for a training's own callback_url.
    webhook_id: Mapped[int | None] = mapped_column(Integer, index=True)
    url: Mapped[str] = mapped_column(String(2048))
    event: Mapped[str] = mapped_column(String(32))
    training_id: Mapped[int | None] = mapped_column(Integer)
    # The body, as sent on every attempt: the training as it was at the change.
    payload: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # The sender that is sending it and until when that claim holds.
    lease_owner: Mapped[str | None] = mapped_column(String(64))
    lease_expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        # The sender looks for due deliveries by status and time.
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at", "id"),
        {"sqlite_autoincrement": True},
    )


WEBHOOK_DELIVERIES = cast(Table, WebhookDelivery.__table__)


class WebhookAttempt(Base):
    """One attempt at a delivery: when, the answer's status code, how long, and any error."""

    __tablename__ = "webhook_attempts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    delivery_id: Mapped[int] = mapped_column(
        Integer, ForeignKey("webhook_deliveries.id", ondelete="CASCADE"), index=True
    )
    attempted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    status_code: Mapped[int | None] = mapped_column(Integer)
    duration_ms: Mapped[float | None] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)
    node: Mapped[str | None] = mapped_column(String(64))

    __table_args__ = ({"sqlite_autoincrement": True},)
