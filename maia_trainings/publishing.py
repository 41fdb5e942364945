"""Models and their champions: publishing a training, the policy at a run's end, the history.

A training belongs to a model (its ``model_name``). Publishing a succeeded training makes it
its model's champion: it adds a row to ``publications`` and sets the training's
``published_at`` and ``published_by``; the champion is the training of the model's latest
publication, so publishing an older training again is a rollback. Publications of one model
are made one at a time on every node (the model's turn, which ``queue.finish`` also takes to
number versions), so a policy's comparison with the champion is never made against a stale one.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Row, bindparam, func, insert, select, update
from sqlalchemy.orm import Session

from .db import database_of, reading, writing
from .errors import Conflict, NotFound
from .models import TRAININGS, Publication, Status, Training, utcnow

UNPUBLISHABLE = "only a succeeded training with a model file can be published"


class Policy(StrEnum):
    """What becomes of a training that succeeds (PUBLISH_POLICY)."""

    ALWAYS = "always"  # it is published: the champion is always the latest
    MANUAL = "manual"  # it waits as a challenger for POST /trainings/{id}/publish
    IF_BETTER = "if_better"  # published when its gini beats the champion's by PUBLISH_MARGIN


@dataclass(frozen=True)
class PublishPolicy:
    """PUBLISH_POLICY and PUBLISH_MARGIN, read once from the config."""

    policy: Policy = Policy.ALWAYS
    margin: float = 0.0

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> PublishPolicy:
        """The configured policy; ValueError names the choices when it is none of them."""
        try:
            policy = Policy(config["PUBLISH_POLICY"])
        except ValueError:
            choices = ", ".join(p.value for p in Policy)
            raise ValueError(f"PUBLISH_POLICY must be one of {choices}") from None
        return cls(policy, float(config["PUBLISH_MARGIN"]))


@dataclass(frozen=True)
class Decision:
    """Whether a training that just succeeded is published, and why (shown as publish_note)."""

    publish: bool
    reason: str


# What becomes of a run that left no model file, whatever the policy.
NO_FILE = Decision(False, "not published: the run left no model file")


def model_turn(model_name: str) -> int:
    """The key of a model's turn (a signed 64-bit advisory lock key on PostgreSQL)."""
    digest = hashlib.sha256(f"maia-model:{model_name}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def take_model_turn(session: Session, model_name: str) -> None:
    """Within a write transaction: be the only one numbering or publishing ``model_name``."""
    database_of(session).take_turn(session, model_turn(model_name))


def _gini(metrics: Any) -> float | None:
    """The gini among a training's metrics (a JSON object's text or a mapping), if any."""
    if isinstance(metrics, str):
        metrics = json.loads(metrics) if metrics else None
    value = metrics.get("gini") if isinstance(metrics, Mapping) else None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


# The champion's id, version and model file, for a read on every score request: one indexed
# query with no training row to build.
_LATEST = (
    select(func.max(Publication.id))
    .where(Publication.model_name == bindparam("model_name"))
    .scalar_subquery()
)
_CHAMPION_FILE = (
    select(Training.id, Training.version, Training.binary_path, Training.binary_sha256)
    .join(Publication, Publication.training_id == Training.id)
    .where(Publication.id == _LATEST)
)


def champion_file(
    session: Session, model_name: str
) -> Row[int, str | None, str | None, str | None] | None:
    """The champion of ``model_name`` as ``(id, version, binary_path, binary_sha256)``, read
    now; None while it has none (or when there is no such model)."""
    with reading(session):
        return session.execute(_CHAMPION_FILE, {"model_name": model_name}).first()


def champion_row(session: Session, model_name: str) -> Training | None:
    """Within a read or write: the champion of ``model_name``, None while it has none."""
    latest = select(func.max(Publication.id)).where(Publication.model_name == model_name)
    return session.scalar(
        select(Training)
        .join(Publication, Publication.training_id == Training.id)
        .where(Publication.id == latest.scalar_subquery())
    )


def decide(
    session: Session, policy: PublishPolicy, *, model_name: str, metrics: Any, has_file: bool
) -> Decision:
    """Within the model's turn: whether a training that just succeeded is published."""
    if not has_file:
        return NO_FILE
    if policy.policy is Policy.ALWAYS:
        return Decision(True, "policy always")
    if policy.policy is Policy.MANUAL:
        return Decision(False, "policy manual: waits for POST /trainings/{id}/publish")
    gini = _gini(metrics)
    if gini is None:
        return Decision(False, "if_better: not published, the training reported no gini")
    champion = champion_row(session, model_name)
    if champion is None:
        return Decision(True, f"if_better: gini {gini:g}, the model has no champion yet")
    best = _gini(champion.metrics)
    if best is None:
        return Decision(True, f"if_better: gini {gini:g}, champion {champion.id} has no gini")
    # "Beats by at least the margin": strictly better, and by no less than PUBLISH_MARGIN.
    beats = gini > best and gini - best >= policy.margin
    verdict = "beats" if beats else "does not beat"
    return Decision(
        beats, f"if_better: gini {gini:g} {verdict} champion {best:g} by ≥ {policy.margin:g}"
    )


def record(
    session: Session,
    training: Any,
    *,
    actor: str | None,
    reason: str,
    now: datetime,
) -> None:
    """Within the model's turn: publish ``training`` (id, model_name, version) as champion."""
    session.execute(
        insert(Publication).values(
            model_name=training.model_name,
            training_id=training.id,
            version=training.version,
            published_by=actor,
            published_at=now,
            reason=reason,
        )
    )
    session.execute(
        update(TRAININGS)
        .where(TRAININGS.c.id == training.id)
        .values(published_at=now, published_by=actor)
    )


def publish(
    session: Session,
    training_id: int,
    *,
    actor: str | None,
    reason: str = "manual",
    now: datetime | None = None,
) -> Training:
    """Make a succeeded training with a model file its model's champion (POST .../publish).

    The previous champion is left as it was; NotFound, or Conflict when it cannot be published.
    """
    now = now or utcnow()
    with writing(session):
        # Locked (PostgreSQL) until the publication is written: a concurrent DELETE must not
        # leave a champion that no longer exists. A succeeded training's model and file no
        # longer change: read before the turn, they still hold within it.
        training = session.get(Training, training_id, populate_existing=True, with_for_update=True)
        if training is None:
            raise NotFound()
        if training.status != Status.SUCCEEDED or not training.binary_sha256:
            raise Conflict(UNPUBLISHABLE)
        take_model_turn(session, training.model_name)
        record(session, training, actor=actor, reason=reason, now=now)
    with reading(session):
        session.refresh(training)
    return training


def _known(session: Session, model_name: str) -> None:
    """NotFound unless ``model_name`` names a model (one with trainings or publications)."""
    trained = select(Training.id).where(Training.model_name == model_name).limit(1)
    published = select(Publication.id).where(Publication.model_name == model_name).limit(1)
    if session.scalar(trained) is None and session.scalar(published) is None:
        raise NotFound(f"there is no model {model_name!r}")


def champion(session: Session, model_name: str) -> Training | None:
    """The champion of ``model_name`` (None while nothing is published); NotFound if unknown."""
    with reading(session):
        _known(session, model_name)
        return champion_row(session, model_name)


def models(session: Session) -> list[tuple[str, Training | None]]:
    """Every model that has trainings, by name, with its champion (None while it has none)."""
    latest = select(func.max(Publication.id)).group_by(Publication.model_name)
    with reading(session):
        names = session.scalars(
            select(Training.model_name).distinct().order_by(Training.model_name)
        ).all()
        champions = session.scalars(
            select(Training)
            .join(Publication, Publication.training_id == Training.id)
            .where(Publication.id.in_(latest))
        ).all()
    by_model = {training.model_name: training for training in champions}
    return [(name, by_model.get(name)) for name in names]


def history(session: Session, model_name: str) -> list[Publication]:
    """Every publication of ``model_name``, newest first; NotFound if it is unknown."""
    with reading(session):
        _known(session, model_name)
        return list(
            session.scalars(
                select(Publication)
                .where(Publication.model_name == model_name)
                .order_by(Publication.id.desc())
            ).all()
        )
