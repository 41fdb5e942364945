"""Prometheus figures: the database's state read at each scrape, and this process's events."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import datetime
from enum import StrEnum

from flask import Flask, Response, current_app, request
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector
from sqlalchemy import func, select

from . import db, listing, logs
from .models import Status, Training, WebhookDelivery, utcnow
from .retry import Ending

EXTENSION = "maia_trainings.metrics"
NAMESPACE = "maia"
log = logging.getLogger(__name__)

# Runs last from seconds to hours (MAX_RUNTIME is an hour by default).
RUN_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600, 7200)
# A training waits for a free slot from a fraction of a second to many minutes.
DISPATCH_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
# Methods a route may answer; anything else a client sends is counted as "other", so that no
# client can add label values (each is a series Prometheus keeps).
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"})


class RunResult(StrEnum):
    """How a run ended, as the runs counter tells it."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the trainer's error, a broken run, or retries used up
    TIMED_OUT = "timed_out"  # stopped at MAX_RUNTIME (the training failed)
    CANCELLED = "cancelled"  # its claim was lost: cancelled, or taken over after its lease lapsed
    RETRIED = "retried"  # back in the queue for another attempt
    INTERRUPTED = "interrupted"  # back in the queue at shutdown, its attempt not spent


def run_result(ending: Ending, status: Status | None) -> RunResult:
    """What a run's Outcome (its ending, the status it left) counts as."""
    if status is None:
        return RunResult.CANCELLED
    if status is Status.SUCCEEDED:
        return RunResult.SUCCEEDED
    if status is Status.QUEUED:
        return RunResult.INTERRUPTED if ending is Ending.INTERRUPTED else RunResult.RETRIED
    return RunResult.TIMED_OUT if ending is Ending.TIMEOUT else RunResult.FAILED


class DatabaseFigures(Collector):
    """The figures that are the database's state, read at each scrape: every node reports the
    same values, whatever ran where. Three cheap queries, on the status indexes."""

    def __init__(self, database: db.Database) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            f"{NAMESPACE}_database_up", "1 when this scrape could read the database, else 0"
        )
        try:
            counts, depth, oldest, deliveries = self._read(now := utcnow())
        except Exception:
            log.exception("metrics: the database could not be read")
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        by_status = GaugeMetricFamily(
            f"{NAMESPACE}_trainings", "Trainings by status (the database's)", labels=["status"]
        )
        for status, number in sorted(counts.items()):
            by_status.add_metric([status], number)
        yield by_status
        yield GaugeMetricFamily(
            f"{NAMESPACE}_queue_depth",
            "Queued trainings due now, waiting for a free slot (retries in back-off excluded)",
            value=depth,
        )
        waited = max((now - oldest).total_seconds(), 0.0) if oldest is not None else 0.0
        yield GaugeMetricFamily(
            f"{NAMESPACE}_queue_oldest_age_seconds",
            "Seconds the longest-waiting due training has waited since it became due (0: none)",
            value=waited,
        )
        sent = GaugeMetricFamily(
            f"{NAMESPACE}_webhook_deliveries",
            "Webhook deliveries by outcome: pending, delivered, failed (the database's)",
            labels=["outcome"],
        )
        for outcome in ("pending", "delivered", "failed"):
            sent.add_metric([outcome], deliveries.get(outcome, 0))
        yield sent

    def _read(self, now: datetime) -> tuple[dict[str, int], int, datetime | None, dict[str, int]]:
        with self.database.session() as session:
            counts = listing.status_counts(session)
            with db.reading(session):
                depth, oldest = session.execute(
                    select(func.count(), func.min(Training.due_at)).where(
                        Training.status == Status.QUEUED, Training.due_at <= now
                    )
                ).one()
                rows = session.execute(
                    select(WebhookDelivery.status, func.count()).group_by(WebhookDelivery.status)
                ).all()
        deliveries = {status: int(number) for status, number in rows}
        return counts, int(depth), oldest, deliveries


class Metrics:
    """An app's registry (not the process's default: a process may hold several apps), with
    this process's event figures and, given a database, the database's figures."""

    def __init__(self, database: db.Database | None = None) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.runs_started = Counter(
            "runs_started", "Runs this process started", namespace=NAMESPACE, registry=registry
        )
        self.runs_ended = Counter(
            "runs_ended",
            "Runs this process supervised to their end, by how they ended",
            ["outcome"],
            namespace=NAMESPACE,
            registry=registry,
        )
        for result in RunResult:
            self.runs_ended.labels(result)  # shown as 0 before the first, so rate() works
        self.run_duration = Histogram(
            "run_duration_seconds",
            "Seconds from a run's claim to its recorded end, by how it ended",
            ["outcome"],
            namespace=NAMESPACE,
            registry=registry,
            buckets=RUN_BUCKETS,
        )
        self.dispatch_latency = Histogram(
            "dispatch_latency_seconds",
            "Seconds from a training's due time to its trainer's start (started_at - due_at)",
            namespace=NAMESPACE,
            registry=registry,
            buckets=DISPATCH_BUCKETS,
        )
        self.http_requests = Counter(
            "http_requests",
            "HTTP requests this process answered, by method, route template and status",
            ["method", "route", "status"],
            namespace=NAMESPACE,
            registry=registry,
        )
        self.http_duration = Histogram(
            "http_request_duration_seconds",
            "Seconds this process took to answer, by method and route template",
            ["method", "route"],
            namespace=NAMESPACE,
            registry=registry,
        )
        if database is not None:
            registry.register(DatabaseFigures(database))

    def run_started(self) -> None:
        self.runs_started.inc()

    def run_began(self, due_at: datetime | None, started_at: datetime) -> None:
        """A trainer started at ``started_at``, its training due at ``due_at``."""
        if due_at is not None:
            self.dispatch_latency.observe(max((started_at - due_at).total_seconds(), 0.0))

    def run_ended(self, ending: Ending, status: Status | None, seconds: float) -> None:
        result = run_result(ending, status)
        self.runs_ended.labels(result).inc()
        self.run_duration.labels(result).observe(seconds)

    def exposition(self, accept: str) -> tuple[bytes, str]:
        """The figures in the format ``accept`` asks for (Prometheus text unless OpenMetrics
        is asked for), and its content type."""
        encode, content_type = choose_encoder(accept)
        return encode(self.registry), content_type


def of(app: Flask) -> Metrics:
    """The app's metrics (create_app always makes them)."""
    found: Metrics = app.extensions[EXTENSION]
    return found


def _observe_request(response: Response) -> Response:
    metrics = of(current_app)
    method = request.method if request.method in KNOWN_METHODS else "other"
    route = logs.route_template()
    metrics.http_requests.labels(method, route, str(response.status_code)).inc()
    metrics.http_duration.labels(method, route).observe(logs.request_seconds())
    return response


def init_app(app: Flask) -> None:
    app.extensions[EXTENSION] = Metrics(db.database(app))
    app.after_request(_observe_request)
