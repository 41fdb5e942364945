"""The OpenAPI 3.1 document of the API, built by apispec from the schemas that validate requests."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib.metadata import version
from typing import Any, cast

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Flask
from marshmallow import Schema, fields, validate
from werkzeug.routing import Rule

from . import listing, schedules
from .api.trainings import ID_PATTERN
from .error_handlers import MESSAGES
from .fields import MODEL_NAME, Field, Kind
from .formats import FORM, HTML, JSON, MULTIPART, OFFERED_TYPES, XML, XML_ROOT
from .models import DeliveryStatus, Schedule, Scope, WebhookEvent
from .schemas import (
    EventNames,
    MetaText,
    Timestamp,
    TrainingIn,
    TrainingOut,
    WebhookIn,
    shown_field,
)

EXTENSION = "maia_trainings.openapi"
# The request body types of the original documentation, plus multipart forms.
BODY_TYPES = (JSON, XML, FORM, MULTIPART)
BEARER = "bearerAuth"
# Routes that are not operations of the API, each with the reason it is left out.
UNDOCUMENTED = {
    "static": "Flask's own static route: the package ships no static folder",
    "api.docs_file": "Swagger UI's own files, loaded by the page at /docs",
    "api.docs_script": "the page's script, loaded by the page at /docs",
    "dashboard.index": "the dashboard: a page for people, not an operation of the API",
    "dashboard.static": "the dashboard's own files, loaded by its page",
}
# Methods Flask answers for every route by itself.
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})


# The responses no request schema describes: shown here, for the document only ------------


class ErrorOut(Schema):
    """The one error body: ``{code, message[, errors]}``."""

    code = fields.Integer(required=True, metadata={"description": "the HTTP status"})
    message = fields.String(required=True)
    errors = fields.Dict(metadata={"description": "per field or parameter, what is wrong"})


ScheduleOut = Schema.from_dict(
    {field.name: shown_field(field, Schedule) for field in schedules.FIELDS}, name="ScheduleOut"
)


def _shown(**extra: Any) -> dict[str, Any]:
    return {"required": True, "dump_only": True, **extra}


class WebhookOut(Schema):
    id = fields.String(**_shown())
    url = fields.String(required=True)
    events = fields.List(fields.String(validate=validate.OneOf(list(WebhookEvent))), required=True)
    enabled = fields.Boolean(required=True)
    created_at = Timestamp(**_shown())
    updated_at = Timestamp(**_shown())
    created_by = fields.String(**_shown(allow_none=True))
    updated_by = fields.String(**_shown(allow_none=True))
    secret = fields.String(
        dump_only=True, metadata={"description": "the signing secret; only in POST's answer"}
    )


class AttemptOut(Schema):
    attempted_at = Timestamp(**_shown())
    status_code = fields.Integer(**_shown(allow_none=True))
    duration_ms = fields.Integer(**_shown(allow_none=True))
    error = fields.String(**_shown(allow_none=True))
    node = fields.String(**_shown(allow_none=True))


class DeliveryOut(Schema):
    id = fields.String(**_shown())
    delivery_id = fields.String(**_shown())
    webhook_id = fields.String(**_shown(allow_none=True))
    event = fields.String(**_shown(validate=validate.OneOf(list(WebhookEvent))))
    training_id = fields.String(**_shown(allow_none=True))
    url = fields.String(**_shown())
    status = fields.String(**_shown(validate=validate.OneOf(list(DeliveryStatus))))
    attempt_count = fields.Integer(**_shown())
    next_attempt_at = Timestamp(**_shown(allow_none=True))
    last_status_code = fields.Integer(**_shown(allow_none=True))
    last_error = fields.String(**_shown(allow_none=True))
    created_at = Timestamp(**_shown())
    delivered_at = Timestamp(**_shown(allow_none=True))
    attempts = fields.List(fields.Nested(AttemptOut), **_shown())


class ModelOut(Schema):
    model_name = fields.String(**_shown())
    champion = fields.Nested(TrainingOut, **_shown(allow_none=True))


class PublicationOut(Schema):
    id = fields.String(**_shown())
    model_name = fields.String(**_shown())
    training_id = fields.String(**_shown())
    version = fields.String(**_shown(allow_none=True))
    published_by = fields.String(**_shown(allow_none=True))
    published_at = Timestamp(**_shown())
    reason = fields.String(**_shown(allow_none=True))


class ScoreOut(Schema):
    scoreProbability = fields.Float(**_shown())
    score = fields.Float(**_shown())
    scoreVersion = fields.String(**_shown(allow_none=True))
    training_id = fields.String(**_shown())
    model_name = fields.String(**_shown())


class NodeOut(Schema):
    name = fields.String(**_shown())
    role = fields.String(**_shown())
    runs = fields.List(fields.String(), **_shown())
    modelsDir = fields.String(**_shown(validate=validate.OneOf(["writable", "not writable"])))


class HealthOut(Schema):
    status = fields.String(**_shown(validate=validate.OneOf(["ok", "degraded"])))
    database = fields.String(**_shown())
    trainings = fields.Dict(keys=fields.String(), values=fields.Integer(), **_shown())
    node = fields.Nested(NodeOut, **_shown())


class TokenOut(Schema):
    name = fields.String(**_shown())
    scope = fields.String(**_shown(validate=validate.OneOf(list(Scope))))


class ReportOut(Schema):
    """The trainer's pack (its own figures) with the service's facts under ``training``."""

    training = fields.Dict(**_shown())


# The operations --------------------------------------------------------------------------


@dataclass(frozen=True)
class Operation:
    """What the document says of one route and method beyond what the route itself says."""

    summary: str
    answer: Any  # the 200 body's schema: a component's name, or a JSON schema
    body: str | Mapping[str, Any] | None = None  # the request body's component, or schema
    listed: listing.Listed | None = None  # filters and _sort of a list of these
    paged: bool = False  # _start and _limit
    errors: tuple[int, ...] = ()  # beyond those every operation may answer
    writes: bool = False  # needs a write token
    public: bool = False  # needs no token
    token_optional: bool = False  # public or not, as a setting says
    answer_types: tuple[str, ...] = OFFERED_TYPES
    extra: Mapping[int, Mapping[str, Any]] | None = None  # other answers, by status


def _array(component: str) -> dict[str, Any]:
    return {"type": "array", "items": {"$ref": f"#/components/schemas/{component}"}}


_TRAININGS, _SCHEDULES = listing.TRAININGS, schedules.LISTED
_CHANGE = (409,)
_SCORE_ROWS = {
    "oneOf": [
        {"type": "object", "description": "one loan: column name -> value"},
        {"type": "array", "items": {"type": "object"}, "minItems": 1},
    ]
}
_BINARY = {"type": "string", "contentMediaType": "application/octet-stream"}

OPERATIONS: dict[tuple[str, str], Operation] = {
    ("api.health", "GET"): Operation("Whether the service and its database answer", "Health",
                                     public=True),
    ("api.openapi_document", "GET"): Operation("This document", {"type": "object"},
                                               public=True, answer_types=(JSON,)),
    ("api.docs_page", "GET"): Operation("The API reference page (Swagger UI)", {"type": "string"},
                                        public=True, answer_types=(HTML,)),
    ("api.create_training", "POST"): Operation(
        "Create a training (queued, or scheduled when scheduled_at is in the future)",
        "TrainingOut", body="TrainingIn", errors=_CHANGE, writes=True),
    ("api.list_trainings", "GET"): Operation(
        "List trainings", _array("TrainingOut"), listed=_TRAININGS, paged=True),
    ("api.count_trainings", "GET"): Operation(
        "Count the trainings matching the filters", {"type": "integer", "minimum": 0},
        listed=_TRAININGS, paged=True),
    ("api.get_training", "GET"): Operation("One training", "TrainingOut"),
    ("api.update_training", "PUT"): Operation(
        "Change a training (a partial update)", "TrainingOut", body="TrainingIn",
        errors=_CHANGE, writes=True),
    ("api.delete_training", "DELETE"): Operation(
        "Delete a training that is not running nor its model's champion", "TrainingOut",
        errors=_CHANGE, writes=True),
    ("api.cancel_training", "POST"): Operation(
        "Cancel a training that has not finished", "TrainingOut", errors=_CHANGE, writes=True),
    ("api.training_log", "GET"): Operation(
        "The run's output", {"type": "string"}, answer_types=("text/plain",)),
    ("api.training_binary", "GET"): Operation(
        "The published model file (ETag: its SHA-256)", _BINARY,
        answer_types=("application/octet-stream",),
        extra={304: {"description": "the file has the ETag sent in If-None-Match"}}),
    ("api.get_report", "GET"): Operation(
        "Its validation report: the figures, or a printable page", "Report",
        answer_types=(*OFFERED_TYPES, HTML)),
    ("api.publish_training", "POST"): Operation(
        "Make a succeeded training its model's champion", "TrainingOut", errors=_CHANGE,
        writes=True),
    ("api.list_models", "GET"): Operation("Every model with its champion", _array("Model")),
    ("api.get_model", "GET"): Operation("A model's champion", "TrainingOut"),
    ("api.model_binary", "GET"): Operation(
        "The champion's model file (ETag: its SHA-256)", _BINARY,
        answer_types=("application/octet-stream",),
        extra={304: {"description": "the file has the ETag sent in If-None-Match"}}),
    ("api.model_history", "GET"): Operation(
        "Every publication of the model, newest first", _array("Publication")),
    ("api.score_rows", "POST"): Operation(
        "Score one loan (an object) or several (an array) with the champion",
        {"oneOf": [{"$ref": "#/components/schemas/Score"}, _array("Score")]},
        body=_SCORE_ROWS, errors=_CHANGE),
    ("api.create_schedule", "POST"): Operation(
        "Create a recurring training", "ScheduleOut", body="ScheduleIn", errors=_CHANGE,
        writes=True),
    ("api.list_schedules", "GET"): Operation(
        "List schedules", _array("ScheduleOut"), listed=_SCHEDULES, paged=True),
    ("api.get_schedule", "GET"): Operation("One schedule", "ScheduleOut"),
    ("api.update_schedule", "PUT"): Operation(
        "Change a schedule (a partial update)", "ScheduleOut", body="ScheduleChange",
        errors=_CHANGE, writes=True),
    ("api.delete_schedule", "DELETE"): Operation(
        "Delete a schedule (its trainings are kept)", "ScheduleOut", writes=True),
    ("api.pause_schedule", "POST"): Operation("Stop its fires", "ScheduleOut", writes=True),
    ("api.resume_schedule", "POST"): Operation(
        "Restart its fires (no catch-up)", "ScheduleOut", writes=True),
    ("api.schedule_trainings", "GET"): Operation(
        "The trainings its fires created", _array("TrainingOut"), listed=_TRAININGS, paged=True),
    ("api.create_webhook", "POST"): Operation(
        "Subscribe a URL to training events (the answer shows its secret, once)", "WebhookOut",
        body="WebhookIn", writes=True),
    ("api.list_webhooks", "GET"): Operation("List subscriptions", _array("WebhookOut"),
                                            paged=True),
    ("api.get_webhook", "GET"): Operation("One subscription", "WebhookOut"),
    ("api.update_webhook", "PUT"): Operation(
        "Change a subscription (a partial update)", "WebhookOut", body="WebhookChange",
        writes=True),
    ("api.delete_webhook", "DELETE"): Operation(
        "Delete a subscription and its deliveries", "WebhookOut", writes=True),
    ("api.list_deliveries", "GET"): Operation(
        "Its deliveries, newest first, with their attempts", _array("Delivery"), paged=True),
    ("api.scrape", "GET"): Operation(
        "The Prometheus figures (a token is needed when METRICS_PUBLIC is off)",
        {"type": "string"}, token_optional=True,
        answer_types=("text/plain", "application/openmetrics-text")),
    ("api.who_am_i", "GET"): Operation("The name and scope of the token sent", "Token"),
    ("api.redeliver", "POST"): Operation(
        "Send a delivery again (same delivery id and body)", "Delivery", writes=True),
}  # fmt: skip

# Component name -> (schema, extra JSON schema keywords).
COMPONENTS: dict[str, tuple[Any, Mapping[str, Any]]] = {
    # XML bodies are <item> elements (formats.XML_ROOT), one child per field.
    "TrainingIn": (TrainingIn, {"xml": {"name": XML_ROOT}}),
    "TrainingOut": (TrainingOut, {"xml": {"name": XML_ROOT}}),
    "ScheduleIn": (schedules.ScheduleIn, {"xml": {"name": XML_ROOT}}),
    # PUT is a partial update: the same schema, nothing required (as the view loads it).
    "ScheduleChange": (schedules.ScheduleIn(partial=True), {"xml": {"name": XML_ROOT}}),
    "ScheduleOut": (ScheduleOut, {"xml": {"name": "schedule"}}),
    "WebhookIn": (WebhookIn, {"xml": {"name": XML_ROOT}}),
    "WebhookChange": (WebhookIn(partial=True), {"xml": {"name": XML_ROOT}}),
    "WebhookOut": (WebhookOut, {}),
    "Delivery": (DeliveryOut, {}),
    "Model": (ModelOut, {}),
    "Publication": (PublicationOut, {}),
    "Score": (ScoreOut, {}),
    "Health": (HealthOut, {"xml": {"name": "health"}}),
    "Token": (TokenOut, {"xml": {"name": "token"}}),
    "Report": (ReportOut, {"xml": {"name": "report"}}),
    "Error": (ErrorOut, {"xml": {"name": "error"}}),
}


# Parameters ------------------------------------------------------------------------------

_VALUES: dict[Kind, dict[str, Any]] = {
    Kind.INTEGER: {
        "type": "integer",
        "minimum": -listing.MAX_OFFSET,
        "maximum": listing.MAX_OFFSET,
    },
    Kind.ID: {"type": "integer", "minimum": -listing.MAX_OFFSET, "maximum": listing.MAX_OFFSET},
    Kind.NUMBER: {"type": "number"},
    Kind.TEXT: {"type": "string"},
    Kind.DATETIME: {"type": "string", "format": "date-time"},
    Kind.BOOLEAN: {"type": "boolean"},
}
_OPERATOR_MEANINGS = {
    "eq": "equal to",
    "ne": "not equal to (or null)",
    "lt": "less than",
    "lte": "less than or equal to",
    "gt": "greater than",
    "gte": "greater than or equal to",
    "in": "one of",
    "nin": "none of (or null)",
    "contains": "contains, ignoring case",
    "ncontains": "does not contain, ignoring case (or null)",
    "containss": "contains, case-sensitive",
    "ncontainss": "does not contain, case-sensitive (or null)",
    "null": "is null (true) or is not (false)",
}


def _operators(field: Field) -> Iterator[str]:
    for operator in reversed(listing.OPERATORS):  # eq first, as people read them
        if operator in listing.TEXT_ONLY_OPERATORS and field.kind is not Kind.TEXT:
            continue
        if operator in listing.ORDER_OPERATORS and field.kind is Kind.BOOLEAN:
            continue
        yield operator


def _filter(name: str, field: Field, operator: str, of: listing.Listed) -> dict[str, Any]:
    value = dict(_VALUES[Kind.BOOLEAN] if operator == "null" else _VALUES[field.kind])
    if name in of.choices and operator in ("eq", "ne", "in", "nin"):
        value = {"type": "string", "enum": list(of.choices[name])}
    parameter = name if operator == "eq" and field.kind is not Kind.BOOLEAN else None
    return {
        "name": parameter or f"{name}_{operator}",
        "in": "query",
        "description": f"{name} {_OPERATOR_MEANINGS[operator]}; given several times: any of them"
        if operator not in ("in", "nin")
        else f"{name} {_OPERATOR_MEANINGS[operator]} the values (the parameter repeated)",
        # Every filter may be repeated (its values are alternatives): an exploded array.
        "schema": {"type": "array", "items": value, "minItems": 1},
        "style": "form",
        "explode": True,
    }


def _filters(of: listing.Listed) -> Iterator[dict[str, Any]]:
    for name, field in of.fields.items():
        for operator in _operators(field):
            yield _filter(name, field, operator, of)
            if operator == "eq" and field.kind is not Kind.BOOLEAN:
                yield {**_filter(name, field, operator, of), "name": f"{name}_eq"}


def _sort(of: listing.Listed) -> dict[str, Any]:
    one = "(?:{})(?::(?:[Aa][Ss][Cc]|[Dd][Ee][Ss][Cc]))?".format(
        "|".join(re.escape(name) for name in of.fields)
    )
    return {
        "name": "_sort",
        "in": "query",
        "description": "fields to sort by, most significant first: `field[:ASC|DESC],...`",
        "schema": {"type": "string", "pattern": f"^{one}(?:,{one})*$"},
    }


PAGE = (
    {
        "name": "_start",
        "in": "query",
        "description": "how many rows to skip",
        "schema": {"type": "integer", "minimum": 0, "maximum": listing.MAX_OFFSET},
    },
    {
        "name": "_limit",
        "in": "query",
        "description": "how many rows at most (DEFAULT_PAGE_SIZE without it); -1: all",
        "schema": {"type": "integer", "minimum": -1, "maximum": listing.MAX_OFFSET},
    },
)
IF_NONE_MATCH = {
    "name": "If-None-Match",
    "in": "header",
    "required": False,
    "description": "the ETag held: 304 when the file is the same",
    "schema": {"type": "string"},
}


# The document ----------------------------------------------------------------------------


def openapi_path(rule: Rule) -> str:
    """A Flask rule's path as OpenAPI writes it: ``<training_id>`` -> ``{training_id}``."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


def routes(app: Flask) -> Iterator[tuple[Rule, str]]:
    """Each route and method the app answers, but Flask's implicit ones and UNDOCUMENTED."""
    for rule in app.url_map.iter_rules():
        if rule.endpoint in UNDOCUMENTED:
            continue
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            yield rule, method


def undescribed(app: Flask) -> list[str]:
    """Routes the document leaves out because OPERATIONS does not describe them (a test
    holds this empty: a new route is described, or listed in UNDOCUMENTED with its reason)."""
    return [
        f"{method} {rule.rule} ({rule.endpoint})"
        for rule, method in routes(app)
        if (rule.endpoint, method) not in OPERATIONS
    ]


def _body_required(body: str | Mapping[str, Any]) -> bool:
    """Whether a body must be sent: an empty one is a training with every default, but a
    schedule or subscription without its required fields is refused."""
    if not isinstance(body, str):
        return True  # rows to score
    schema = COMPONENTS[body][0]
    schema = schema() if isinstance(schema, type) else schema
    return not schema.partial and any(field.required for field in schema.fields.values())


def _path_value(name: str) -> dict[str, Any]:
    # Anything else is simply not found (404): ids as they are rendered, names as they are made.
    if name == "model_name":
        return {"type": "string", "pattern": f"^{MODEL_NAME.pattern}$"}
    return {"type": "string", "pattern": f"^{ID_PATTERN.pattern}$"}


def _content(schema: Any, types: tuple[str, ...]) -> dict[str, Any]:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {mimetype: {"schema": schema} for mimetype in types}


def _statuses(operation: Operation, rule: Rule) -> list[int]:
    statuses = [406, 503]  # any Accept may be refused; the database may be away
    if not operation.public:
        statuses += [403, 429]  # no token, or a write token needed; guessing slowed down
    if rule.arguments:
        statuses.append(404)
    if operation.listed or operation.paged or operation.body:
        statuses.append(400)
    if operation.body:
        statuses += [413, 415]
    return sorted({*statuses, *operation.errors})


def _operation(rule: Rule, method: str, operation: Operation, suffix: str) -> dict[str, Any]:
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": _path_value(name)}
        for name in sorted(rule.arguments)
    ]
    if operation.listed is not None:
        parameters += [*_filters(operation.listed), _sort(operation.listed)]
    if operation.paged:
        parameters += PAGE
    if operation.extra and 304 in operation.extra:
        parameters.append(IF_NONE_MATCH)
    responses: dict[str, Any] = {
        "200": {
            "description": "OK",
            "content": _content(operation.answer, operation.answer_types),
        }
    }
    for status, answer in (operation.extra or {}).items():
        responses[str(status)] = dict(answer)
    for status in _statuses(operation, rule):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    described: dict[str, Any] = {
        "operationId": f"{rule.endpoint.partition('.')[2]}{suffix}",
        "summary": operation.summary,
        # By resource; the public routes (health, this document, its page) as "service".
        "tags": ["service" if operation.public else rule.rule.split("/")[1]],
        "parameters": parameters,
        "responses": responses,
    }
    if operation.public:
        described["security"] = []
    elif operation.token_optional:
        described["security"] = [{}, {BEARER: []}]  # no token, or a token
    elif operation.writes:
        described["description"] = "Needs a token with the write scope."
    if operation.body is not None:
        types = (JSON,) if not isinstance(operation.body, str) else BODY_TYPES
        described["requestBody"] = {
            "content": _content(operation.body, types),
            "required": _body_required(operation.body),
        }
    return described


def build(app: Flask) -> dict[str, Any]:
    """The document of ``app``'s routes (those OPERATIONS describes; see ``undescribed``)."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title="maia-trainings",
        version=version("maia-trainings"),
        openapi_version="3.1.0",
        plugins=[plugin],
        info={
            "description": "Queues, schedules and runs credit-scoring model trainings. "
            "Errors are `{code, message[, errors]}`."
        },
        servers=[{"url": "/"}],
        security=[{BEARER: []}],
    )
    # apispec's converter has no type hints; the plugin sets it when the spec is made.
    cast(Any, plugin.converter).add_attribute_function(_custom_fields)
    spec.components.security_scheme(BEARER, {"type": "http", "scheme": "bearer"})
    for name, (schema, extra) in COMPONENTS.items():
        spec.components.schema(name, component=dict(extra), schema=schema)
    for status in sorted(set(MESSAGES) - {405, 500}):
        spec.components.response(
            f"Error{status}",
            {"description": MESSAGES[status], "content": _content("Error", OFFERED_TYPES)},
        )
    paths: dict[str, dict[str, Any]] = {}
    seen: dict[tuple[str, str], int] = {}
    for rule, method in routes(app):
        key = (rule.endpoint, method)
        if key not in OPERATIONS:
            continue  # a serving process answers its document all the same
        seen[key] = seen.get(key, 0) + 1
        suffix = "" if seen[key] == 1 else f"_{seen[key]}"  # one view, several paths
        described = _operation(rule, method, OPERATIONS[key], suffix)
        paths.setdefault(openapi_path(rule), {})[method.lower()] = described
    for path, operations in sorted(paths.items()):
        spec.path(path=path, operations=operations)
    return spec.to_dict()


def _custom_fields(converter: Any, field: Any, **kwargs: Any) -> dict[str, Any]:
    """The service's own fields, as JSON schemas (apispec knows marshmallow's only)."""
    if isinstance(field, MetaText):
        # Text for the trainer; a JSON body may send a JSON object, kept as its JSON text.
        return {"type": ["string", "object", "null"] if field.allow_none else ["string", "object"]}
    if isinstance(field, EventNames):
        names = {"type": "string", "enum": [str(event) for event in WebhookEvent]}
        return {
            "anyOf": [
                {"type": "array", "items": names, "minItems": 1},
                {"type": "string", "description": "comma-separated event names (forms, XML)"},
            ]
        }
    if isinstance(field, fields.Function):
        return (
            {"type": field.metadata["type"]}
            if field.allow_none is False
            else {"type": [field.metadata["type"], "null"]}
        )
    return {}


def document(app: Flask) -> dict[str, Any]:
    """The app's document, built on the first request that asks (routes are all known then)."""
    built: dict[str, Any] | None = app.extensions.get(EXTENSION)
    if built is None:
        built = app.extensions[EXTENSION] = build(app)
    return built
