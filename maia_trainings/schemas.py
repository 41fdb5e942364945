"""What clients may send and what they are shown: the marshmallow schemas of a training."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
)

from . import fields as training_fields
from .allowed_hosts import AllowedHosts, HostRefused
from .errors import InvalidParams, PathOutside
from .fields import METRICS, READ_ONLY_NAMES, parse_timestamp
from .formats import NOT_XML_CHARACTERS
from .models import FINAL_EVENTS, Training, WebhookEvent
from .paths import check_relative_path, resolve_inside
from .trainers import load_trainer, params_from_meta, trainer_settings, validate_params

MAX_META_BYTES = 64 * 1024


class Timestamp(fields.AwareDateTime):
    """An ISO 8601 datetime; one without a zone is taken as UTC, and it is kept to the ms."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", default_timezone=UTC, **kwargs)

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else training_fields.format_timestamp(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        try:
            return parse_timestamp(value)
        except (TypeError, ValueError):
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None


class MetaText(fields.Field[str]):
    """Free text for the trainer; a JSON object sent in a JSON body is kept as its JSON text."""

    default_error_messages = {  # noqa: RUF012 - marshmallow's documented extension point
        "invalid": "Not a valid string or JSON object.",
        "too_long": f"Longer than {MAX_META_BYTES} bytes.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, Mapping):
            try:
                value = json.dumps(
                    value, ensure_ascii=False, separators=(",", ":"), allow_nan=False
                )
            except ValueError:  # a number JSON text cannot hold, such as 1e999 read as infinity
                raise self.make_error("invalid") from None
        if not isinstance(value, str):
            raise self.make_error("invalid")
        plain_text(value)
        if len(value.encode("utf-8", "surrogatepass")) > MAX_META_BYTES:
            raise self.make_error("too_long")
        return value


def plain_text(value: str) -> None:
    """Text every response format can carry: no control characters but tab and newlines."""
    if NOT_XML_CHARACTERS.search(value):
        raise ValidationError("Must not contain control characters or invalid Unicode.")


def printable(value: str) -> None:
    if not value.isprintable():
        raise ValidationError("Must contain printable characters only.")


def model_name_rule(value: str) -> None:
    """A model's name, as trainings and schedules take it."""
    if not training_fields.is_model_name(value):
        raise ValidationError("1 to 64 of the characters A-Z a-z 0-9 . _ - (not only dots).")


def _relative_path(value: str) -> None:
    try:
        check_relative_path(value)
    except PathOutside as exc:
        raise ValidationError(str(exc)) from None


def _finite(**kwargs: Any) -> fields.Float:
    return fields.Float(allow_nan=False, allow_none=True, **kwargs)


class _TrainingInRules(Schema):
    """What every training a client sends goes through, whatever its fields."""

    class Meta:
        unknown = RAISE

    @pre_load
    def _drop_read_only(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if key not in READ_ONLY_NAMES}
        return data

    @post_load
    def _without_metrics(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for metric in METRICS:
            data.pop(metric.name, None)
        return data


# A training as a client sends it to POST /trainings or PUT /trainings/{id}.
TrainingIn = _TrainingInRules.from_dict(
    {
        "uuid": fields.String(validate=[validate.Length(min=1, max=128), printable]),
        # Metrics are results of a run: a client's values are checked, then ignored.
        **{
            metric.name: _finite(
                validate=validate.Range(metric.minimum, metric.maximum), load_only=True
            )
            for metric in METRICS
        },
        "binary_path": fields.String(
            data_key="binaryPath",
            allow_none=True,
            validate=[validate.Length(max=1024), _relative_path, plain_text],
        ),
        "version": fields.String(allow_none=True, validate=[validate.Length(max=64), plain_text]),
        "meta": MetaText(allow_none=True),
        "scheduled_at": Timestamp(allow_none=True),
        # The model it trains (DEFAULT_MODEL when not given; see trainings.create_training).
        "model_name": fields.String(validate=model_name_rule),
        # Where the final event is POSTed (see webhooks); checked against the allowed hosts.
        "callback_url": fields.String(
            allow_none=True, validate=[validate.Length(max=2048), plain_text]
        ),
    },
    name="TrainingIn",
)


_SHOWN_AS: dict[training_fields.Kind, Any] = {
    training_fields.Kind.INTEGER: fields.Integer,
    training_fields.Kind.NUMBER: fields.Float,
    training_fields.Kind.TEXT: fields.String,
    training_fields.Kind.DATETIME: Timestamp,
    training_fields.Kind.BOOLEAN: fields.Boolean,
}


def shown_field(field: training_fields.Field, model: Any) -> fields.Field[Any]:
    """How a row's ``field`` is shown: typed by its kind, read-only when the service sets it,
    null where the column of ``model`` may be (so the OpenAPI document says both)."""
    # Every shown field is required: the representation always has it, null or not.
    flags: dict[str, Any] = {
        "dump_only": field.read_only,
        "allow_none": model.__table__.c[field.column].nullable,
        "required": True,
    }
    if field.kind is training_fields.Kind.ID:  # ids are shown as strings, as documented
        column_id = field.column

        def shown_id(row: Any) -> Any:
            value = getattr(row, column_id)
            return None if value is None else str(value)

        return fields.Function(shown_id, data_key=field.name, metadata={"type": "string"}, **flags)
    if field.kind is training_fields.Kind.OBJECT:
        column = field.column

        def parsed(training: Any) -> Any:
            text = getattr(training, column)
            return json.loads(text) if text else None

        return fields.Function(parsed, metadata={"type": "object"}, **flags)
    shown: fields.Field[Any] = _SHOWN_AS[field.kind](
        attribute=field.column, data_key=field.name, **flags
    )
    return shown


# A training as the API shows it, from the one field list. Responses are rendered by
# fields.represent, which gives the same result faster (a test holds the two together);
# this schema describes the representation to marshmallow's tools (the OpenAPI document).
TrainingOut = Schema.from_dict(
    {field.name: shown_field(field, Training) for field in training_fields.FIELDS},
    name="TrainingOut",
)

training_in = TrainingIn()
training_out = TrainingOut()


def load_training(
    body: Mapping[str, Any], *, models_dir: Path, partial: bool = False
) -> dict[str, Any]:
    """Validate a client's training fields; ``binaryPath`` must stay inside ``models_dir``."""
    data: dict[str, Any] = training_in.load(body, partial=partial)
    if data.get("binary_path"):
        try:
            resolve_inside(models_dir, data["binary_path"])
        except PathOutside as exc:
            raise ValidationError({"binaryPath": [str(exc)]}) from None
    return data


def check_trainer_params(meta: str, config: Mapping[str, Any]) -> None:
    """Let the configured trainer refuse its parameters (the meta) before anything is stored.

    The trainer's module (scikit-learn, for the built-in one) is imported on the first
    training that carries parameters, once per process (``load_trainer`` keeps it): a web
    process that never validates any pays nothing for it, and no request pays for it twice.
    """
    params = params_from_meta(meta)
    if not params:
        return  # free text or no object: the trainer gets {} as its parameters
    trainer = load_trainer(config["TRAINER"])
    try:
        validate_params(trainer, params, trainer_settings(config))
    except InvalidParams as exc:
        raise ValidationError({"meta": exc.errors}) from None


# Webhooks ----------------------------------------------------------------------------------


class EventNames(fields.Field[list[str]]):
    """Webhook event names: a list, or (forms, XML) one comma-separated text."""

    default_error_messages = {  # noqa: RUF012 - marshmallow's documented extension point
        "invalid": "Not a list of event names or a comma-separated text.",
        "empty": "Give at least one event.",
        "unknown": "Unknown events {unknown}; the events are {known}.",
    }

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if isinstance(value, str):
            names = [name.strip() for name in value.split(",") if name.strip()]
        elif isinstance(value, list) and all(isinstance(name, str) for name in value):
            names = value
        else:
            raise self.make_error("invalid")
        if not names:
            raise self.make_error("empty")
        known = [str(event) for event in WebhookEvent]
        unknown = [name for name in names if name not in known]
        if unknown:
            raise self.make_error(
                "unknown", unknown=", ".join(map(repr, unknown)), known=", ".join(known)
            )
        return names


# What the service shows of a subscription and ignores when sent back (a GET's body PUT back).
WEBHOOK_READ_ONLY = frozenset(
    ("id", "secret", "created_at", "updated_at", "created_by", "updated_by")
)


class WebhookIn(Schema):
    """A subscription as a client sends it to POST /webhooks or PUT /webhooks/{id}."""

    class Meta:
        unknown = RAISE

    url = fields.String(
        required=True,
        validate=[validate.Length(min=1, max=2048), plain_text],
        metadata={"examples": ["https://hooks.example.com/maia"]},
    )
    events = EventNames(load_default=lambda: [str(event) for event in FINAL_EVENTS])
    enabled = fields.Boolean(load_default=True)

    @pre_load
    def _drop_read_only(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if key not in WEBHOOK_READ_ONLY}
        return data


webhook_in = WebhookIn()


def check_webhook_url(url: str, config: Mapping[str, Any], *, name: str) -> None:
    """Refuse (ValidationError under ``name``) a URL webhooks may not reach: not http(s),
    carrying a user name or password, or a host not in WEBHOOK_ALLOWED_HOSTS."""
    try:
        AllowedHosts.parse(config["WEBHOOK_ALLOWED_HOSTS"]).check_url(url)
    except HostRefused as exc:
        raise ValidationError({name: [str(exc)]}) from None
