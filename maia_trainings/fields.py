"""A training's public fields, defined once: name, column, kind, who sets it, metric ranges.

The schemas (what a client may send, what it is shown), listing (what it may filter and sort
by), the store (what it may change) and the trainer interface (which results it may report)
all read this list, so a field is added or changed here and nowhere else.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class Kind(StrEnum):
    """How a field's values are typed, compared and shown."""

    INTEGER = "integer"
    ID = "id"  # an integer key, shown as a string (as the documented ``id`` is)
    NUMBER = "number"
    TEXT = "text"
    DATETIME = "datetime"
    OBJECT = "object"  # a JSON object (stored as its text)
    BOOLEAN = "boolean"


class Setter(StrEnum):
    """Who gives a field its value."""

    CLIENT = "client"  # sent in POST or PUT
    PENDING = "pending"  # sent by the client, changeable only while scheduled or queued
    TRAINER = "trainer"  # a result of the run; a client's value is checked, then ignored
    SERVICE = "service"  # set by the service; sent by a client, it is ignored (read-only)


@dataclass(frozen=True)
class Field:
    """One field of a training as the API shows it."""

    name: str  # as the API spells it
    column: str  # the Training attribute behind it
    kind: Kind
    setter: Setter
    queryable: bool = True  # may be filtered and sorted by
    minimum: float | None = None  # the range of a trainer's figure
    maximum: float | None = None

    @property
    def read_only(self) -> bool:
        return self.setter is Setter.SERVICE

    def in_range(self, value: float) -> bool:
        low = -math.inf if self.minimum is None else self.minimum
        high = math.inf if self.maximum is None else self.maximum
        return math.isfinite(value) and low <= value <= high


_C, _P, _T, _S = Setter.CLIENT, Setter.PENDING, Setter.TRAINER, Setter.SERVICE
_I, _N, _X, _D = Kind.INTEGER, Kind.NUMBER, Kind.TEXT, Kind.DATETIME

# In the order the representation shows them (the original documentation's, then ours).
FIELDS: tuple[Field, ...] = (
    Field("id", "id", Kind.ID, _S),
    Field("uuid", "uuid", _X, _C),
    # Whole numbers where they are whole: the range is quoted in 400 answers as "0" and "1".
    Field("accuracy", "accuracy", _N, _T, minimum=0, maximum=1),
    Field("precission", "precission", _N, _T, minimum=0, maximum=1),  # sic: the API's name
    Field("mae", "mae", _N, _T, minimum=0),
    Field("rmse", "rmse", _N, _T, minimum=0),
    Field("binaryPath", "binary_path", _X, _P),
    Field("version", "version", _X, _C),
    Field("meta", "meta", _X, _C),
    Field("published_at", "published_at", _D, _S),
    Field("created_by", "created_by", _X, _S),
    Field("updated_by", "updated_by", _X, _S),
    Field("status", "status", _X, _S),
    Field("scheduled_at", "scheduled_at", _D, _P),
    Field("started_at", "started_at", _D, _S),
    Field("finished_at", "finished_at", _D, _S),
    Field("created_at", "created_at", _D, _S),
    Field("updated_at", "updated_at", _D, _S),
    Field("attempts", "attempts", _I, _S),
    Field("error", "error", _X, _S),
    Field("progress", "progress", _N, _S),
    Field("binarySha256", "binary_sha256", _X, _S, queryable=False),
    Field("binarySize", "binary_size", _I, _S, queryable=False),
    Field("metrics", "metrics", Kind.OBJECT, _S, queryable=False),
    # The schedule whose fire created it, and the URL told of its final event.
    Field("schedule_id", "schedule_id", Kind.ID, _S),
    Field("callback_url", "callback_url", _X, _C),
    # The model it trains; who published it last and why the policy did or did not (see
    # publishing). Its model fixes its version number and where it is published: it cannot
    # change once the run has started.
    Field("model_name", "model_name", _X, _P),
    Field("published_by", "published_by", _X, _S),
    Field("publish_note", "publish_note", _X, _S, queryable=False),
)
# The figures a trainer reports (the original API's four metrics).
METRICS: tuple[Field, ...] = tuple(field for field in FIELDS if field.setter is _T)
# Names a client may send but that the service ignores, so a GET's body can be PUT back.
READ_ONLY_NAMES = frozenset(field.name for field in FIELDS if field.read_only)
# Columns a client sets, and those it may change only before the run starts.
EDITABLE_COLUMNS = tuple(f.column for f in FIELDS if f.setter in (_C, _P) and f.name != "uuid")
# In the order a 409 names them ("scheduled_at and binaryPath can only change while ...").
PENDING_ONLY_COLUMNS = ("scheduled_at", "binary_path", "model_name")
assert set(PENDING_ONLY_COLUMNS) == {field.column for field in FIELDS if field.setter is _P}
# What lists can filter and sort by.
QUERYABLE: Mapping[str, Field] = {field.name: field for field in FIELDS if field.queryable}


# A model's name: it appears in URL paths (/models/{model_name}), so plain characters only.
MODEL_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")


def is_model_name(text: str) -> bool:
    """Whether ``text`` can name a model ("." and ".." cannot: clients resolve them away)."""
    return bool(MODEL_NAME.fullmatch(text)) and text.strip(".") != ""


def api_name(column: str) -> str:
    """The name the API shows for a column."""
    return next((field.name for field in FIELDS if field.column == column), column)


def to_milliseconds(moment: datetime) -> datetime:
    """``moment`` in UTC, cut to the millisecond precision the API shows."""
    moment = moment.astimezone(UTC)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def format_timestamp(moment: datetime) -> str:
    """ISO 8601 in UTC with milliseconds and a ``Z``: ``2026-01-02T03:04:05.678Z``."""
    # isoformat rather than strftime: several times faster (measured 2026-11-28), and it pads
    # years below 1000.
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def show_value(kind: Kind, value: Any) -> Any:
    """A stored value of ``kind`` as the API shows it."""
    if value is None:
        return None
    if kind is Kind.DATETIME:
        return format_timestamp(value)
    if kind is Kind.OBJECT:
        return json.loads(value) if value else None
    if kind is Kind.ID:
        return str(value)
    return value


# (key shown, attribute read, kind) in order; the id is shown as a string, as documented.
_SHOWN = tuple((field.name, field.column, field.kind) for field in FIELDS if field.name != "id")


def represent(training: Any) -> dict[str, Any]:
    """A training as the API shows it (and as a trainer is given it): field name -> value.

    Plain code over the field list, not a marshmallow dump: the generic dump machinery was four
    fifths of a 100-row list's time (4 ms of 5, measured 2026-11-28). ``schemas.TrainingOut``
    gives the same result (a test holds the two together).
    """
    shown: dict[str, Any] = {"id": str(training.id)}
    for name, column, kind in _SHOWN:
        shown[name] = show_value(kind, getattr(training, column))
    return shown


def parse_timestamp(text: str) -> datetime:
    """An ISO 8601 datetime; one without a zone is UTC; kept to the millisecond.

    Raises ValueError for anything else, or for a moment past the last UTC datetime.
    """
    if not isinstance(text, str):
        raise ValueError("not a string")
    if text.endswith(("z", "Z")):
        text = text[:-1] + "+00:00"
    moment = datetime.fromisoformat(text)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    try:
        return to_milliseconds(moment)
    except OverflowError:  # 9999-12-31T23:59:59-01:00 is past the last UTC datetime
        raise ValueError("out of range") from None
