"""Validation packs as stored: written with a training's success, read as its report.

A pack comes from the trainer (see ``maia_trainings.trainers``); its four charts are drawn
when the run ends and stored beside it, so the page a validator prints later shows what the
run saw. The report adds to the pack what only the service knows: the training's identity,
its model file's digest, and whether (and why) it was published.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, select
from sqlalchemy.orm import Session

from .db import reading
from .errors import NotFound
from .fields import represent
from .models import Report, Training
from .publishing import champion_row
from .trainers import report_page

log = logging.getLogger(__name__)

# The training's fields a report shows on top of its pack.
FACTS = (
    "id",
    "uuid",
    "model_name",
    "version",
    "status",
    "finished_at",
    "binaryPath",
    "binarySha256",
    "published_at",
    "published_by",
    "publish_note",
)
NO_PACK = (
    "training {id} has no validation report: only a succeeded training whose trainer "
    "returned one has it (the scoring trainer always does)"
)


def draw(pack: Mapping[str, Any]) -> dict[str, str]:
    """The charts of ``pack`` as SVG text, by name; none for a pack not in the reference shape
    (a custom trainer's), which is still stored and served as JSON."""
    try:
        return {name: str(svg) for name, svg in report_page.charts(pack).items()}
    except (TypeError, ValueError, AttributeError, KeyError, OverflowError) as exc:
        log.warning("a validation pack's charts could not be drawn: %s", exc)
        return {}


def record(
    session: Session,
    training_id: int,
    pack: Mapping[str, Any],
    charts: Mapping[str, str],
    *,
    now: datetime,
) -> None:
    """Within the transaction that records the training's success: store its pack."""
    session.execute(
        insert(Report).values(
            training_id=training_id,
            pack=json.dumps(pack, allow_nan=False, separators=(",", ":")),
            charts=json.dumps(dict(charts), separators=(",", ":")),
            created_at=now,
        )
    )


def forget(session: Session, training_id: int) -> None:
    """Within the transaction that deletes a training: delete its pack too."""
    session.execute(delete(Report).where(Report.training_id == training_id))


def champion_baseline(session: Session, model_name: str) -> dict[str, Any] | None:
    """What a run of ``model_name`` is told of its champion: id, version, and the score
    distribution its pack kept (None without one), for a stability index against it."""
    with reading(session):
        champion = champion_row(session, model_name)
        if champion is None:
            return None
        stored = session.scalar(select(Report.pack).where(Report.training_id == champion.id))
    bins = json.loads(stored).get("score_bins") if stored else None
    return {"id": str(champion.id), "version": champion.version, "score_bins": bins}


@dataclass(frozen=True)
class TrainingReport:
    """A training's report: its facts, its pack and its stored charts."""

    training: Training
    champion: bool
    pack: dict[str, Any]
    charts: dict[str, str]

    def facts(self) -> dict[str, Any]:
        """What the service knows of the training, named as the API names it, on top of the
        pack: identity, model file, publication (and why), and whether it is the champion."""
        shown = represent(self.training)
        facts = {name: shown[name] for name in FACTS}
        facts["champion"] = self.champion
        return facts

    def as_json(self) -> dict[str, Any]:
        """Every figure of the pack, with the training's facts under ``training``."""
        return {**self.pack, "training": self.facts()}  # the service's facts win

    def as_html(self) -> str:
        """The printable page, with the charts drawn when the training ran."""
        facts = self.facts()
        record = _section(self.pack, "reproducibility")
        dataset = _section(record, "dataset")
        shown = {
            "training": f"{facts['id']} ({facts['uuid']})",
            "model": facts["model_name"],
            "version": facts["version"],
            "finished": facts["finished_at"],
            "model file SHA-256": facts["binarySha256"],
            "champion": "yes" if self.champion else "no",
            "publication": facts["publish_note"],
            "trainer": record.get("trainer"),
            "dataset": dataset.get("name"),
            "dataset SHA-256": dataset.get("sha256"),
            "rows read": dataset.get("rows"),
        }
        title = (
            f"Validation report: training {facts['id']}, "
            f"model {facts['model_name']} version {facts['version']}"
        )
        return report_page.render(
            self.pack,
            title=title,
            facts={name: value for name, value in shown.items() if value is not None},
            drawn=self.charts,
        )


def _section(mapping: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    """A section of a pack that may not be there, or not be an object (a custom trainer's)."""
    section = mapping.get(name)
    return section if isinstance(section, Mapping) else {}


def find(session: Session, training_id: int) -> TrainingReport:
    """The report of a training; NotFound when there is no such training or no pack."""
    with reading(session):
        training = session.get(Training, training_id)
        stored = session.get(Report, training_id) if training is not None else None
        if training is None:
            raise NotFound()
        if stored is None:
            raise NotFound(NO_PACK.format(id=training_id))
        champion = champion_row(session, training.model_name)
    return TrainingReport(
        training=training,
        champion=champion is not None and champion.id == training.id,
        pack=json.loads(stored.pack),
        charts=json.loads(stored.charts),
    )
