"""The claim benchmark of the nodes part: ``queue.claim_next`` timed in-process, with and without
a backlog of queued trainings that are not due.

    python bench/claims.py --backlog 100000 --claims 200 --reps 3 EMPTY_URL BACKLOG_URL

Both databases must be at the head schema (``trainings init-db``). Each gets ``--finished``
finished trainings, the second also ``--backlog`` queued ones due a day from now (waiting out a
retry back-off), inserted in bulk. Then, per repetition and in alternating order: ``--claims``
times, one due queued training is inserted and ``claim_next`` claims it (only the claim is
timed, ``time.perf_counter`` around the call), then finishes it. The service's own code does
all of it: ``create_app({"DATABASE_URL": url})``, its ``Database`` and sessions, no threads.

It prints one JSON object: for "empty" and "backlog" the per-repetition p50 and p99 in ms and
the rows each held, the fill's seconds, and the plan of the claim's look for a due row once
the claims are done.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import random
import re
import sys
import time
import uuid
from collections.abc import Iterator
from typing import Any

from common import percentile
from sqlalchemy import func, insert, select, text
from sqlalchemy.orm import Session

from maia_trainings import create_app, queue
from maia_trainings.db import Database, database, reading, writing
from maia_trainings.models import TRAININGS, Status, Training, utcnow

OWNER = "bench-claims"
LEASE_SECONDS = 30.0
BATCH = 5_000  # rows per executemany: bounded memory, few round trips
WARM_UP = 20  # claims per database before the first measured repetition, not counted
TIME_LITERAL = re.compile(r"'[0-9: .-]+'::timestamp without time zone")


def training_row(rng: random.Random, status: Status, now: dt.datetime) -> dict[str, Any]:
    """The columns a training needs (the rest are NULL or their defaults)."""
    created = now - dt.timedelta(hours=1)
    return {
        "uuid": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
        "status": status,
        "created_at": created,
        "updated_at": created,
        "created_by": "bench",
        "updated_by": "bench",
        "attempts": 0,
        "request_fingerprint": f"{rng.getrandbits(256):064x}",
    }


def finished_rows(rng: random.Random, count: int, now: dt.datetime) -> Iterator[dict[str, Any]]:
    for _ in range(count):
        row = training_row(rng, Status.SUCCEEDED, now)
        row.update(attempts=1, progress=1.0, started_at=now, finished_at=now, updated_at=now)
        yield row


def waiting_rows(rng: random.Random, count: int, now: dt.datetime) -> Iterator[dict[str, Any]]:
    """Queued trainings whose retry back-off ends in a day: queued, but not due."""
    for _ in range(count):
        row = training_row(rng, Status.QUEUED, now)
        row.update(
            attempts=1,
            error=queue.EXPIRED_MESSAGE,
            due_at=now + dt.timedelta(days=1),
        )
        yield row


def bulk_insert(db: Database, rows: Iterator[dict[str, Any]]) -> None:
    """Insert ``rows`` in one transaction, BATCH at a time (an executemany each: SQLAlchemy
    sends them as multi-row INSERTs)."""
    with db.engine.begin() as connection:
        batch: list[dict[str, Any]] = []
        for row in rows:
            batch.append(row)
            if len(batch) == BATCH:
                connection.execute(insert(TRAININGS), batch)
                batch = []
        if batch:
            connection.execute(insert(TRAININGS), batch)


def count(db: Database, status: Status) -> int:
    with db.session() as session, reading(session):
        return int(
            session.scalar(
                select(func.count()).select_from(TRAININGS).where(Training.status == status)
            )
        )


def claim_plan(db: Database) -> str:
    """How the database finds the first due training: the plan of the claim's look (its
    statement written out here: the claim's own is private to ``queue``)."""
    look = (
        "SELECT id FROM trainings WHERE status = 'queued' AND due_at <= :now "
        "ORDER BY due_at, id LIMIT 1"
    )
    # Naive UTC, as the models store times.
    now = {"now": utcnow().replace(tzinfo=None)}
    with db.engine.connect() as connection:
        if db.engine.dialect.name == "sqlite":
            rows = connection.execute(text(f"EXPLAIN QUERY PLAN {look}"), now).all()
            return "; ".join(str(row[-1]) for row in rows)
        rows = connection.execute(text(f"EXPLAIN (COSTS OFF) {look}"), now).all()
        # The time compared with is this moment's: shown as the parameter it stands for.
        return "; ".join(TIME_LITERAL.sub(":now", str(row[0]).strip()) for row in rows)


def timed_claims(session: Session, rng: random.Random, claims: int) -> list[float]:
    """``claims`` times: insert one due training, time its claim, finish it. Seconds each."""
    seconds = []
    for _ in range(claims):
        now = utcnow()
        row = training_row(rng, Status.QUEUED, now)
        row["due_at"] = now
        with writing(session):
            inserted = session.scalar(insert(TRAININGS).values(row).returning(TRAININGS.c.id))
        began = time.perf_counter()
        claimed = queue.claim_next(session, OWNER, lease_seconds=LEASE_SECONDS)
        seconds.append(time.perf_counter() - began)
        if claimed is None or claimed.id != inserted:
            found = None if claimed is None else claimed.id
            raise RuntimeError(f"claimed {found}, not the due training {inserted}")
        # Finished, so the next claim sees the same table: the backlog and finished rows.
        if not queue.finish(session, claimed.id, OWNER, results={"version": "bench"}):
            raise RuntimeError(f"could not finish the claimed training {claimed.id}")
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("empty_url")
    parser.add_argument("backlog_url")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--finished", type=int, default=20)
    parser.add_argument("--claims", type=int, default=200)
    parser.add_argument("--reps", type=int, default=3)
    args = parser.parse_args()
    rng = random.Random(11)
    now = utcnow()
    databases = {
        "empty": database(create_app({"DATABASE_URL": args.empty_url})),
        "backlog": database(create_app({"DATABASE_URL": args.backlog_url})),
    }
    out: dict[str, Any] = {"finished": args.finished}
    began = time.monotonic()
    for db in databases.values():
        bulk_insert(db, finished_rows(rng, args.finished, now))
    bulk_insert(databases["backlog"], waiting_rows(rng, args.backlog, now))
    out["fill_s"] = time.monotonic() - began
    out["dialect"] = databases["empty"].engine.dialect.name
    if out["dialect"] == "postgresql":
        # Statistics for the planner, as autovacuum's analyze gathers them within a minute
        # of a load this size; without it the measurement could straddle that moment.
        for db in databases.values():
            with db.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
                conn.execute(text("ANALYZE trainings"))
    figures: dict[str, dict[str, Any]] = {}
    with contextlib.ExitStack() as stack:
        for db in databases.values():
            stack.callback(db.engine.dispose)
        # One session per database for all its claims, as a claim loop keeps one.
        sessions = {name: stack.enter_context(db.session()) for name, db in databases.items()}
        for name in databases:
            timed_claims(sessions[name], rng, WARM_UP)
            figures[name] = {"waiting": count(databases[name], Status.QUEUED), "p50": [], "p99": []}
        for rep in range(args.reps):
            order = list(databases) if rep % 2 == 0 else list(reversed(databases))
            for name in order:
                ms = [s * 1e3 for s in timed_claims(sessions[name], rng, args.claims)]
                figures[name]["p50"].append(percentile(ms, 0.5))
                figures[name]["p99"].append(percentile(ms, 0.99))
        for name, db in databases.items():
            figures[name]["plan"] = claim_plan(db)  # as the table is after the claims
    out.update(figures)
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
