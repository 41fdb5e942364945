"""What clients may send and what they get back: marshmallow schemas and query parameters."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from marshmallow import (
    EXCLUDE,
    RAISE,
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_load,
    validate,
)
from werkzeug.datastructures import MultiDict

from .formats import NOT_XML_CHARACTERS
from .models import STATUSES, Training
from .paths import PathOutside, check_relative_path, resolve_inside
from .store import Filter, ListQuery
from .trainers import (
    InvalidParams,
    load_trainer,
    params_from_meta,
    trainer_settings,
    validate_params,
)

MAX_META_BYTES = 64 * 1024
# Fields of the representation that the service sets; sent by a client, they are ignored,
# so that a GET's body can be PUT back as it is (as the original documentation shows).
READ_ONLY_FIELDS = frozenset(
    {
        "id",
        "status",
        "published_at",
        "created_by",
        "updated_by",
        "started_at",
        "finished_at",
        "created_at",
        "updated_at",
        "attempts",
        "error",
        "progress",
        "metrics",
        "binarySha256",
        "binarySize",
    }
)


def to_milliseconds(moment: datetime) -> datetime:
    """``moment`` in UTC, cut to the millisecond precision the API shows."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2026-01-02T03:04:05.678Z``."""
    # isoformat rather than strftime: several times faster, and it pads years below 1000.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


class Timestamp(fields.AwareDateTime):
    """An ISO 8601 datetime; one without a zone is taken as UTC, and it is kept to the ms."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(format="iso", default_timezone=UTC, **kwargs)

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> Any:
        return None if value is None else format_timestamp(value)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> datetime:
        if isinstance(value, str) and value.endswith(("z", "Z")):
            value = value[:-1] + "+00:00"
        moment = super()._deserialize(value, attr, data, **kwargs)
        try:
            return to_milliseconds(moment)
        except OverflowError:  # 9999-12-31T23:59:59-01:00 is past the last UTC datetime
            raise self.make_error("invalid", input=value, obj_type=self.OBJ_TYPE) from None


class MetaText(fields.Field):
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


def _printable(value: str) -> None:
    if not value.isprintable():
        raise ValidationError("Must contain printable characters only.")


def _relative_path(value: str) -> None:
    try:
        check_relative_path(value)
    except PathOutside as exc:
        raise ValidationError(str(exc)) from None


def _finite(**kwargs: Any) -> fields.Float:
    return fields.Float(allow_nan=False, allow_none=True, **kwargs)


class TrainingIn(Schema):
    """A training as a client sends it to POST /trainings or PUT /trainings/{id}."""

    class Meta:
        unknown = RAISE

    uuid = fields.String(validate=[validate.Length(min=1, max=128), _printable])
    # Metrics are results of a run: a client's values are checked, then ignored.
    accuracy = _finite(validate=validate.Range(0, 1), load_only=True)
    precission = _finite(validate=validate.Range(0, 1), load_only=True)
    mae = _finite(validate=validate.Range(min=0), load_only=True)
    rmse = _finite(validate=validate.Range(min=0), load_only=True)
    binary_path = fields.String(
        data_key="binaryPath",
        allow_none=True,
        validate=[validate.Length(max=1024), _relative_path, plain_text],
    )
    version = fields.String(allow_none=True, validate=[validate.Length(max=64), plain_text])
    meta = MetaText(allow_none=True)
    scheduled_at = Timestamp(allow_none=True)

    @pre_load
    def _drop_read_only(self, data: Any, **kwargs: Any) -> Any:
        if isinstance(data, Mapping):
            return {key: value for key, value in data.items() if key not in READ_ONLY_FIELDS}
        return data

    @post_load
    def _without_metrics(self, data: dict[str, Any], **kwargs: Any) -> dict[str, Any]:
        for metric in ("accuracy", "precission", "mae", "rmse"):
            data.pop(metric, None)
        return data


class TrainingOut(Schema):
    """A training as the API shows it."""

    class Meta:
        unknown = EXCLUDE
        ordered = True

    id = fields.Function(lambda training: str(training.id))
    uuid = fields.String()
    accuracy = fields.Float()
    precission = fields.Float()
    mae = fields.Float()
    rmse = fields.Float()
    binaryPath = fields.String(attribute="binary_path")
    version = fields.String()
    meta = fields.String()
    published_at = Timestamp()
    created_by = fields.String()
    updated_by = fields.String()
    status = fields.String()
    scheduled_at = Timestamp()
    started_at = Timestamp()
    finished_at = Timestamp()
    created_at = Timestamp()
    updated_at = Timestamp()
    attempts = fields.Integer()
    error = fields.String()
    progress = fields.Float()
    binarySha256 = fields.String(attribute="binary_sha256")
    binarySize = fields.Integer(attribute="binary_size")
    metrics = fields.Function(
        lambda training: json.loads(training.metrics) if training.metrics else None
    )


training_in = TrainingIn()
training_out = TrainingOut()

# TrainingOut's fields in order, each as (key shown, attribute read, the field's conversion).
# Dumping calls each field's own conversion directly: marshmallow's generic dump machinery
# around them was four fifths of a 100-row list's time (4 ms of 5). training_out.dump gives
# the same result (a test holds them together); these trainings are never partial.
_TRAINING_WRITERS = [
    (field.data_key or name, field.attribute or name, field._serialize)
    for name, field in training_out.dump_fields.items()
]


def dump_training(training: Training) -> dict[str, Any]:
    return {
        key: convert(getattr(training, attribute), attribute, training)
        for key, attribute, convert in _TRAINING_WRITERS
    }


def dump_trainings(trainings: Sequence[Training]) -> list[dict[str, Any]]:
    return [dump_training(training) for training in trainings]


def load_training(
    body: Mapping[str, Any], *, models_dir: Path, partial: bool = False
) -> dict[str, Any]:
    """Validate a client's training fields; ``binaryPath`` must stay inside ``models_dir``."""
    data = training_in.load(body, partial=partial)
    if data.get("binary_path"):
        try:
            resolve_inside(models_dir, data["binary_path"])
        except PathOutside as exc:
            raise ValidationError({"binaryPath": [str(exc)]}) from None
    return data


def check_trainer_params(meta: str, config: Mapping[str, Any]) -> None:
    """Let the configured trainer refuse its parameters (the meta) before anything is stored."""
    params = params_from_meta(meta)
    if not params:
        return  # free text or no object: the trainer gets {} as its parameters
    trainer = load_trainer(config["TRAINER"])
    try:
        validate_params(trainer, params, trainer_settings(config))
    except InvalidParams as exc:
        raise ValidationError({"meta": exc.errors}) from None


# Query parameters of GET /trainings and /trainings/count -----------------------------------

INT, FLOAT, TEXT, TIME = "integer", "number", "text", "datetime"
# API field name -> (column, kind): what lists can filter and sort by.
QUERY_FIELDS: dict[str, tuple[str, str]] = {
    "id": ("id", INT),
    "uuid": ("uuid", TEXT),
    "status": ("status", TEXT),
    "accuracy": ("accuracy", FLOAT),
    "precission": ("precission", FLOAT),
    "mae": ("mae", FLOAT),
    "rmse": ("rmse", FLOAT),
    "binaryPath": ("binary_path", TEXT),
    "version": ("version", TEXT),
    "meta": ("meta", TEXT),
    "published_at": ("published_at", TIME),
    "created_by": ("created_by", TEXT),
    "updated_by": ("updated_by", TEXT),
    "scheduled_at": ("scheduled_at", TIME),
    "started_at": ("started_at", TIME),
    "finished_at": ("finished_at", TIME),
    "created_at": ("created_at", TIME),
    "updated_at": ("updated_at", TIME),
    "attempts": ("attempts", INT),
    "error": ("error", TEXT),
    "progress": ("progress", FLOAT),
}
# Strapi v3's operators, longest suffix first so that `_ncontainss` is not read as `_ncontains`.
OPERATORS = (
    "ncontainss",
    "ncontains",
    "containss",
    "contains",
    "null",
    "nin",
    "in",
    "lte",
    "gte",
    "lt",
    "gt",
    "ne",
    "eq",
)
TEXT_ONLY_OPERATORS = frozenset({"contains", "ncontains", "containss", "ncontainss"})
PAGING_PARAMETERS = ("_limit", "_start", "_sort")
MAX_OFFSET = 2**62
_timestamp = Timestamp()


def _split_parameter(name: str) -> tuple[str, str]:
    if name in QUERY_FIELDS:
        return name, "eq"
    for operator in OPERATORS:
        suffix = "_" + operator
        if name.endswith(suffix) and name[: -len(suffix)] in QUERY_FIELDS:
            return name[: -len(suffix)], operator
    field_name = name.rsplit("_", 1)[0] if "_" in name else name
    if field_name in QUERY_FIELDS:
        raise ValidationError(f"Unknown operator; use one of {', '.join(OPERATORS)}.", name)
    raise ValidationError("Unknown field or parameter.", name)


def _typed(kind: str, operator: str, raw: str) -> Any:
    if operator == "null":
        if raw.lower() not in ("true", "false", "1", "0"):
            raise ValidationError("Must be true or false.")
        return raw.lower() in ("true", "1")
    if operator in TEXT_ONLY_OPERATORS and kind != TEXT:
        raise ValidationError(f"The {operator} operator applies to text fields only.")
    if kind == INT:
        try:
            value = int(raw)
        except ValueError:
            raise ValidationError("Not a valid integer.") from None
        if abs(value) > MAX_OFFSET:
            raise ValidationError("Number too large.")
        return value
    if kind == FLOAT:
        try:
            value = float(raw)
        except ValueError:
            raise ValidationError("Not a valid number.") from None
        if not math.isfinite(value):
            raise ValidationError("Must be a finite number.")
        return value
    if kind == TIME:
        return _timestamp.deserialize(raw)
    return raw


def _filter(name: str, raw_values: list[str]) -> Filter:
    field_name, operator = _split_parameter(name)
    column, kind = QUERY_FIELDS[field_name]
    try:
        values = tuple(_typed(kind, operator, raw) for raw in raw_values)
        if field_name == "status" and operator in ("eq", "ne", "in", "nin"):
            validate.ContainsOnly(STATUSES)(values)
    except ValidationError as exc:
        raise ValidationError(exc.messages, name) from None
    return Filter(column=column, operator=operator, values=values)


def _bounded_int(name: str, raw: str, *, minimum: int) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValidationError("Not a valid integer.", name) from None
    if not minimum <= value <= MAX_OFFSET:
        raise ValidationError(f"Must be between {minimum} and {MAX_OFFSET}.", name)
    return value


def _sort(raw: str) -> tuple[tuple[str, bool], ...]:
    order = []
    for part in raw.split(","):
        field_name, colon, direction = part.strip().partition(":")
        if colon and not direction:
            raise ValidationError("The direction must be ASC or DESC.", "_sort")
        if field_name not in QUERY_FIELDS:
            raise ValidationError(f"Cannot sort by {field_name!r}.", "_sort")
        if direction.upper() not in ("", "ASC", "DESC"):
            raise ValidationError("The direction must be ASC or DESC.", "_sort")
        order.append((QUERY_FIELDS[field_name][0], direction.upper() == "DESC"))
    return tuple(order)


def parse_list_query(args: MultiDict[str, str], *, default_limit: int) -> ListQuery:
    """Strapi v3 list parameters: filters by field suffix, ``_sort``, ``_start``, ``_limit``."""
    errors: dict[str, list[str]] = {}
    filters: list[Filter] = []
    paging: dict[str, Any] = {}
    for name in args:
        values = args.getlist(name)
        try:
            if name in PAGING_PARAMETERS:
                if len(values) > 1:
                    raise ValidationError("Give this parameter once.", name)
                if name == "_sort":
                    paging["sort"] = _sort(values[0])
                elif name == "_start":
                    paging["start"] = _bounded_int(name, values[0], minimum=0)
                else:
                    limit = _bounded_int(name, values[0], minimum=-1)
                    paging["limit"] = None if limit == -1 else limit
            else:
                filters.append(_filter(name, values))
        except ValidationError as exc:
            messages = exc.messages if isinstance(exc.messages, list) else [str(exc.messages)]
            errors.setdefault(exc.field_name or name, []).extend(messages)
    if errors:
        raise ValidationError(errors)
    paging.setdefault("limit", default_limit)
    return ListQuery(filters=tuple(filters), **paging)
