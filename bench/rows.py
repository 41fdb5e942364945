"""The rows of the read benchmark: a trainings table filled directly with sqlite3."""

from __future__ import annotations

import datetime as dt
import random
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# A run's log as the scoring trainer writes it; the figures in it are sample values.
LOG_TEMPLATE = (
    "{t} INFO maia_trainings.trainer: loaded 50000 rows and 16 feature columns from the CSV "
    "file loans.csv; 7473 defaults (14.9%, defaulted = '1')\n"
    "{t} INFO maia_trainings.trainer: loading in 0.41 s\n"
    "{t} INFO maia_trainings.trainer: fitting logistic_regression on 40000 rows in 1.93 s\n"
    "{t} INFO maia_trainings.trainer: evaluating on 10000 rows (ROC AUC 0.812) in 0.05 s\n"
    "{t} INFO maia_trainings.trainer: saving the model (10234 bytes) in 0.03 s\n"
    "{t} INFO maia_trainings.trainer: peak memory 312.4 MB, CPU 3.10 s\n"
)
METRICS = (
    '{{"roc_auc": {auc:.4f}, "gini": {gini:.4f}, "ks": 0.4812, "recall": 0.3121, '
    '"f1": 0.4012, "brier": 0.1034, "n_train": 40000, "n_test": 10000, "positive_rate": 0.1495}}'
)
META = '{"dataset": "loans.csv", "model": "logistic_regression"}'


def _db_time(moment: dt.datetime) -> str:
    """How the models' UTCDateTime stores a time in SQLite (naive UTC, microseconds)."""
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def insert_trainings(path: Path, rows: int, seed: int = 7) -> dict[str, int]:
    """Fill ``path``'s trainings table with ``rows`` trainings in one transaction; mixed statuses:
    mostly finished, some queued (waiting out a retry back-off, so none is due) and scheduled
    (in the future), none running. Returns the count by status."""
    from maia_trainings.models import Training

    columns = [c.name for c in Training.__table__.columns if c.name != "id"]
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    begin = now - dt.timedelta(days=365)
    step = dt.timedelta(days=364) / rows
    statuses = ["succeeded", "failed", "cancelled", "queued", "scheduled"]
    weights = [0.85, 0.08, 0.045, 0.015, 0.01]
    counts = dict.fromkeys(statuses, 0)
    auto_version = 0

    def generate() -> Iterator[tuple[Any, ...]]:
        nonlocal auto_version
        for i in range(rows):
            status = rng.choices(statuses, weights)[0]
            counts[status] += 1
            created = begin + step * i
            created = created.replace(microsecond=created.microsecond // 1000 * 1000)
            row: dict[str, Any] = dict.fromkeys(columns)
            uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            row.update(
                uuid=uid,
                status=status,
                meta=META,
                created_at=_db_time(created),
                updated_at=_db_time(created),
                created_by="bench",
                updated_by="bench",
                attempts=0,
                request_fingerprint=f"{rng.getrandbits(256):064x}",
                model_name="default",
            )
            if status in ("succeeded", "failed"):
                started = created + dt.timedelta(milliseconds=rng.randint(5, 2000))
                finished = started + dt.timedelta(milliseconds=rng.randint(2000, 60000))
                stamp = started.strftime("%Y-%m-%d %H:%M:%S,000")
                row.update(
                    started_at=_db_time(started),
                    finished_at=_db_time(finished),
                    updated_at=_db_time(finished),
                    attempts=1,
                    progress=1.0,
                    log=LOG_TEMPLATE.format(t=stamp),
                )
                if status == "succeeded":
                    auto_version += 1
                    auc = 0.78 + rng.random() * 0.05
                    row.update(
                        accuracy=0.85 + rng.random() * 0.05,
                        precission=0.6 + rng.random() * 0.1,
                        mae=0.2 + rng.random() * 0.05,
                        rmse=0.3 + rng.random() * 0.05,
                        version=str(auto_version),
                        auto_version=auto_version,
                        model_version=auto_version,
                        metrics=METRICS.format(auc=auc, gini=2 * auc - 1),
                        binary_path=f"{uid}/model.skops",
                        binary_sha256=f"{rng.getrandbits(256):064x}",
                        binary_size=rng.randint(8000, 12000),
                        published_at=_db_time(finished),
                    )
                else:
                    row.update(error="ValueError: the target must have two values, it has 1: 0")
            elif status == "cancelled":
                row.update(finished_at=_db_time(created + dt.timedelta(seconds=30)))
            elif status == "queued":
                row.update(
                    attempts=1,
                    error="the run stopped answering (its process died or hung)",
                    due_at=_db_time(now + dt.timedelta(days=1)),
                )
            else:
                row["scheduled_at"] = row["due_at"] = _db_time(
                    now + dt.timedelta(days=rng.randint(1, 30))
                )
            yield tuple(row[c] for c in columns)

    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        placeholders = ", ".join("?" for _ in columns)
        with connection:
            connection.executemany(
                f"INSERT INTO trainings ({', '.join(columns)}) VALUES ({placeholders})",
                generate(),
            )
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return counts
