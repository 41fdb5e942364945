"""The /trainings resource: each view authorises, parses, validates, stores and renders."""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Any, cast

from flask import Response, current_app, request, send_file
from marshmallow import ValidationError

from .. import db, dispatcher, listing, publishing, queue, trainings
from ..auth import View, can_read, can_write, current_actor
from ..errors import NotFound, PathOutside
from ..fields import represent
from ..formats import negotiate, parse_body, render
from ..models import MAX_ID, Training
from ..paths import resolve_inside
from ..schemas import check_trainer_params, check_webhook_url, load_training
from . import bp

# How ids are rendered: ASCII digits without leading zeros, small enough for any database.
ID_PATTERN = re.compile(r"[1-9][0-9]{0,17}")
MISSING_MODEL = "the model file is missing from the models folder"


def writes(view: View) -> View:
    """Decorator for views that change data: a write token, then an acceptable response type.

    Negotiating first means a client that could not read the answer gets 406 before anything
    is written; authenticating before that keeps the documented 403 for a missing token.
    """

    @functools.wraps(view)
    def negotiated(*args: Any, **kwargs: Any) -> Response:
        negotiate()
        return view(*args, **kwargs)

    return can_write(cast(View, negotiated))


def _models_dir() -> Path:
    return Path(current_app.config["MODELS_DIR"])


def parse_id(raw: str) -> int:
    """An id from a path (trainings, webhooks, deliveries); NotFound for anything else."""
    # Ids are strings in the API; anything but the digits we render is simply not found.
    if not ID_PATTERN.fullmatch(raw) or int(raw) > MAX_ID:
        raise NotFound()
    return int(raw)


def _load(partial: bool = False) -> dict[str, Any]:
    """The body's training fields, validated, with the trainer's own check of the meta."""
    fields = load_training(parse_body(), models_dir=_models_dir(), partial=partial)
    if fields.get("meta") is not None:
        check_trainer_params(fields["meta"], current_app.config)
    if fields.get("callback_url") is not None:
        if not current_app.config["WEBHOOK_CALLBACK_SECRET"]:
            raise ValidationError(
                {"callback_url": ["callback_url needs WEBHOOK_CALLBACK_SECRET set on the server"]}
            )
        check_webhook_url(fields["callback_url"], current_app.config, name="callback_url")
    return fields


@bp.post("/trainings")
@writes
def create_training() -> Response:
    training, _created = trainings.create_training(db.get_session(), _load(), actor=current_actor())
    dispatcher.notify(training)
    return render(represent(training))


@bp.get("/trainings")
@can_read
def list_trainings() -> Response:
    query = listing.parse_list_query(
        request.args, default_limit=current_app.config["DEFAULT_PAGE_SIZE"]
    )
    return render([represent(t) for t in listing.list_trainings(db.get_session(), query)])


@bp.get("/trainings/count")
@can_read
def count_trainings() -> Response:
    query = listing.parse_list_query(request.args, default_limit=0)
    return render(listing.count_trainings(db.get_session(), query.filters), root="count")


@bp.get("/trainings/<training_id>")
@can_read
def get_training(training_id: str) -> Response:
    training = trainings.get_training(db.get_session(), parse_id(training_id))
    return render(represent(training))


@bp.put("/trainings/<training_id>")
@writes
def update_training(training_id: str) -> Response:
    key = parse_id(training_id)
    fields = _load(partial=True)
    training = trainings.update_training(db.get_session(), key, fields, actor=current_actor())
    dispatcher.notify(training)  # a new scheduled_at may have made it due, or due later
    return render(represent(training))


@bp.delete("/trainings/<training_id>")
@writes
def delete_training(training_id: str) -> Response:
    training = trainings.delete_training(db.get_session(), parse_id(training_id))
    return render(represent(training))


@bp.post("/trainings/<training_id>/cancel")
@bp.post("/trainings/cancel/<training_id>")  # the path a later revision of the API documented
@writes
def cancel_training(training_id: str) -> Response:
    training = queue.cancel_training(db.get_session(), parse_id(training_id))
    return render(represent(training))


@bp.get("/trainings/<training_id>/log")
@can_read
def training_log(training_id: str) -> Response:
    training = trainings.get_training(db.get_session(), parse_id(training_id))
    return Response(training.log or "", mimetype="text/plain")


@bp.get("/trainings/<training_id>/binary")
@can_read
def training_binary(training_id: str) -> Response:
    return send_model_file(trainings.get_training(db.get_session(), parse_id(training_id)))


@bp.post("/trainings/<training_id>/publish")
@writes
def publish_training(training_id: str) -> Response:
    key = parse_id(training_id)
    training = publishing.publish(db.get_session(), key, actor=current_actor())
    return render(represent(training))


def send_model_file(training: Training) -> Response:
    """The training's published model file, its SHA-256 as ETag (a training's, a model's)."""
    if not training.binary_path or not training.binary_sha256:
        raise NotFound("the model file is not published (yet)")
    try:
        path = resolve_inside(_models_dir(), training.binary_path)
    except PathOutside:
        # Published inside, it resolves elsewhere now (a link in the folder was changed):
        # nothing outside the models folder is ever served.
        current_app.logger.warning(
            "training %s: its model file left the models folder", training.id
        )
        raise NotFound(MISSING_MODEL) from None
    if not path.is_file():
        raise NotFound(MISSING_MODEL)
    return send_file(
        path,
        mimetype="application/octet-stream",
        as_attachment=True,
        download_name=path.name,
        etag=training.binary_sha256,
        conditional=True,
    )
