"""`trainings top`: the queue as a live terminal view, read from the database and drawn by rich."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text
from sqlalchemy import select

from . import db, listing
from .fields import format_timestamp
from .models import Status, Training, utcnow

# Rows shown of the running trainings and of the oldest queued ones.
SHOWN = 10
# What a row of the view needs, never the whole training (its log alone may be 64 KiB).
_COLUMNS = (
    Training.id,
    Training.uuid,
    Training.model_name,
    Training.attempts,
    Training.progress,
    Training.started_at,
    Training.due_at,
    Training.lease_owner,
)
_RUNNING = select(*_COLUMNS).where(Training.status == Status.RUNNING).order_by(Training.id)
# In claim order, from ix_trainings_status_due_at: the first is the next to run.
_QUEUED = (
    select(*_COLUMNS).where(Training.status == Status.QUEUED).order_by(Training.due_at, Training.id)
)
STATUS_STYLES = {
    Status.SCHEDULED: "cyan",
    Status.QUEUED: "yellow",
    Status.RUNNING: "blue",
    Status.SUCCEEDED: "green",
    Status.FAILED: "red",
    Status.CANCELLED: "dim",
}


@dataclass(frozen=True)
class Snapshot:
    """The queue at one moment: counts by status, the running trainings, the oldest queued."""

    taken_at: datetime
    counts: dict[str, int]
    running: list[Any]
    queued: list[Any]


def snapshot(database: db.Database, *, shown: int = SHOWN) -> Snapshot:
    """Read the queue: three indexed queries, a few rows each."""
    with database.session() as session:
        counts = listing.status_counts(session)
        with db.reading(session):
            running = list(session.execute(_RUNNING.limit(shown)).all())
            queued = list(session.execute(_QUEUED.limit(shown)).all())
    return Snapshot(utcnow(), counts, running, queued)


def _took(seconds: float) -> str:
    """A duration as an operator reads it: 42s, 3m07s, 2h05m."""
    seconds = max(int(seconds), 0)
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _node(lease_owner: str | None) -> str:
    # A claim's owner is "<node>:<pid>:<attempt>" (runner.new_owner).
    return lease_owner.rsplit(":", 2)[0] if lease_owner else "-"


def render(now: Snapshot, *, source: str) -> RenderableType:
    """One frame of the view."""
    title = Text.assemble(
        ("maia-trainings", "bold"), f"  {source}  ", (format_timestamp(now.taken_at), "dim")
    )
    counts = Table(box=None, pad_edge=False)
    for status in Status:
        counts.add_column(Text(str(status), style=STATUS_STYLES[status]), justify="right")
    counts.add_row(*(str(now.counts.get(str(status), 0)) for status in Status))

    running = Table(title=f"running ({now.counts.get(Status.RUNNING, 0)})", title_justify="left")
    for name in ("id", "uuid", "model", "progress", "", "running for", "attempt", "node"):
        running.add_column(name, overflow="fold")
    for row in now.running:
        fraction = min(max(row.progress or 0.0, 0.0), 1.0)
        running.add_row(
            str(row.id),
            row.uuid,
            row.model_name,
            ProgressBar(total=1.0, completed=fraction, width=20),
            f"{fraction:.0%}",
            _took((now.taken_at - row.started_at).total_seconds())
            if row.started_at
            else "starting",
            str(row.attempts),
            _node(row.lease_owner),
        )

    waiting = now.counts.get(Status.QUEUED, 0)
    queued = Table(title=f"oldest queued ({waiting})", title_justify="left")
    for name in ("id", "uuid", "model", "due", "waiting", "attempts"):
        queued.add_column(name, overflow="fold")
    for row in now.queued:
        due = row.due_at
        queued.add_row(
            str(row.id),
            row.uuid,
            row.model_name,
            format_timestamp(due) if due else "-",
            _took((now.taken_at - due).total_seconds()) if due and due <= now.taken_at else "-",
            str(row.attempts),
        )
    more = waiting - len(now.queued)
    footer = Text(f"… and {more} more queued", style="dim") if more > 0 else Text("")
    return Group(title, counts, Text(""), running, queued, footer)


def watch(database: db.Database, *, once: bool, interval: float, console: Console) -> None:
    """Draw the view once (``once``), or redraw it every ``interval`` seconds until Ctrl-C."""
    source = database.shown_url

    def frame() -> RenderableType:
        return render(snapshot(database), source=source)

    if once:
        console.print(frame())
        return
    try:
        with Live(frame(), console=console, screen=False, auto_refresh=False) as live:
            while True:
                time.sleep(interval)
                live.update(frame(), refresh=True)
    except KeyboardInterrupt:
        pass
