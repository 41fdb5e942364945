"""GET /openapi.json: a valid OpenAPI 3.1 document of every route, built from the schemas that
validate requests, whose claims (parameters, body types, security, errors) the service keeps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from conftest import bearer
from flask import Flask
from flask.testing import FlaskClient
from openapi_spec_validator import validate

from maia_trainings import create_app, fields, listing, openapi, schedules
from maia_trainings.reference_page import CONTENT_SECURITY_POLICY

METHODS = ("get", "put", "post", "delete", "patch")
PUBLIC = {("GET", "/healthz"), ("GET", "/openapi.json"), ("GET", "/docs")}


@pytest.fixture
def document(client: FlaskClient) -> dict[str, Any]:
    answer = client.get("/openapi.json")  # no token: the document is public
    assert answer.status_code == 200, answer.json
    assert answer.mimetype == "application/json"
    document: dict[str, Any] = answer.json
    return document


def _operations(document: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {
        (method.upper(), path): operation
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if method in METHODS
    }


def _flask_path(rule: str) -> str:
    return rule.replace("<", "{").replace(">", "}")


def test_the_document_is_valid_openapi_3_1(document: dict[str, Any]) -> None:
    assert document["openapi"] == "3.1.0"
    validate(document)  # raises on any departure from the specification


def test_every_route_and_method_of_the_app_is_in_the_document(
    app: Flask, document: dict[str, Any]
) -> None:
    documented = set(_operations(document))
    expected = {
        (method, _flask_path(rule.rule.replace("<path:", "<")))
        for rule in app.url_map.iter_rules()
        if rule.endpoint not in openapi.UNDOCUMENTED
        for method in rule.methods or ()
        if method not in ("HEAD", "OPTIONS")
    }
    assert expected - documented == set(), "routes missing from the document"
    assert documented - expected == set(), "operations the app does not have"
    assert openapi.undescribed(app) == []
    # What is left out is left out on purpose: each entry names a route that exists.
    assert set(openapi.UNDOCUMENTED) <= {rule.endpoint for rule in app.url_map.iter_rules()}


def test_a_new_route_without_a_description_is_reported_missing(app: Flask) -> None:
    app.add_url_rule("/extra/<thing>", "extra", lambda thing: thing, methods=["GET", "POST"])

    assert openapi.undescribed(app) == [
        "GET /extra/<thing> (extra)",
        "POST /extra/<thing> (extra)",
    ]
    assert "/extra/{thing}" not in openapi.build(app)["paths"]


def test_only_health_and_the_documentation_are_public(
    client: FlaskClient, document: dict[str, Any]
) -> None:
    assert document["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer"}
    }
    assert document["security"] == [{"bearerAuth": []}]
    for (method, path), operation in _operations(document).items():
        url = path.replace("{model_name}", "default")
        url = url.replace("{training_id}", "1").replace("{schedule_id}", "1")
        url = url.replace("{webhook_id}", "1").replace("{delivery_id}", "1")
        answer = client.open(url, method=method)
        if (method, path) in PUBLIC:
            assert operation["security"] == [], path
            assert answer.status_code == 200, (method, path, answer.status_code)
        elif path == "/metrics":  # public by default; METRICS_PUBLIC = False asks for a token
            assert operation["security"] == [{}, {"bearerAuth": []}]
            assert answer.status_code == 200
            assert "403" in operation["responses"]
        else:
            assert "security" not in operation, path  # the document's bearer scheme
            assert answer.status_code == 403, (method, path, answer.status_code)
            assert "403" in operation["responses"], (method, path)


def _value(schema: dict[str, Any]) -> str:
    """A valid query value of ``schema`` (an item of a filter's array)."""
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("format") == "date-time":
        return "2026-01-02T03:04:05.678Z"
    return {"integer": "1", "number": "0.5", "boolean": "true", "string": "x"}[schema["type"]]


@pytest.mark.parametrize("path", ["/trainings", "/trainings/count", "/schedules"])
def test_every_documented_list_parameter_is_one_the_service_takes(
    client: FlaskClient, auth: dict[str, str], document: dict[str, Any], path: str
) -> None:
    parameters = document["paths"][path]["get"]["parameters"]
    names = {parameter["name"] for parameter in parameters}
    for parameter in parameters:
        schema = parameter["schema"]
        value = "id:DESC" if parameter["name"] == "_sort" else None
        value = value or _value(schema["items"] if schema["type"] == "array" else schema)
        answer = client.get(path, query_string={parameter["name"]: value}, headers=auth)
        assert answer.status_code == 200, (parameter["name"], value, answer.json)
    # Every filter the service takes is documented, and nothing else is.
    of = schedules.LISTED if path == "/schedules" else listing.TRAININGS
    for name, field in of.fields.items():
        for operator in listing.OPERATORS:
            parameter = f"{name}_{operator}"
            sample = "true" if operator == "null" or field.kind is fields.Kind.BOOLEAN else "1"
            if field.kind is fields.Kind.DATETIME and operator != "null":
                sample = "2026-01-02T03:04:05Z"
            if name in of.choices and operator in ("eq", "ne", "in", "nin"):
                sample = of.choices[name][0]
            answer = client.get(path, query_string={parameter: sample}, headers=auth)
            assert (answer.status_code == 200) == (parameter in names), (parameter, answer.json)
    for parameter in ("_start", "_limit", "_sort"):
        assert parameter in names


def test_page_only_lists_document_start_and_limit(document: dict[str, Any]) -> None:
    for path in ("/webhooks", "/webhooks/{webhook_id}/deliveries"):
        names = [parameter["name"] for parameter in document["paths"][path]["get"]["parameters"]]
        assert set(names) - {"webhook_id"} == {"_start", "_limit"}, path


def test_fields_the_service_sets_are_read_only(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    for component, names in (
        ("TrainingOut", fields.READ_ONLY_NAMES),
        ("ScheduleOut", schedules.READ_ONLY_NAMES),
    ):
        properties = schemas[component]["properties"]
        read_only = {name for name, value in properties.items() if value.get("readOnly")}
        assert read_only == names, component
    assert {"status", "id", "created_at"} <= fields.READ_ONLY_NAMES
    webhook = schemas["WebhookOut"]["properties"]
    assert webhook["secret"]["readOnly"]
    assert webhook["id"]["readOnly"]
    assert not webhook["url"].get("readOnly")


BODIES = {
    "application/json": ('{"meta": "m", "version": "v1"}', None),
    "application/xml": ("<item><meta>m</meta><version>v1</version></item>", None),
    "application/x-www-form-urlencoded": ("meta=m&version=v1", None),
    "multipart/form-data": (
        '--b\r\nContent-Disposition: form-data; name="meta"\r\n\r\nm\r\n'
        '--b\r\nContent-Disposition: form-data; name="version"\r\n\r\nv1\r\n--b--\r\n',
        "multipart/form-data; boundary=b",
    ),
}


def test_each_documented_body_type_creates_a_training(
    client: FlaskClient, auth: dict[str, str], document: dict[str, Any]
) -> None:
    content = document["paths"]["/trainings"]["post"]["requestBody"]["content"]
    assert set(content) == set(BODIES)
    for mimetype, (body, content_type) in BODIES.items():
        answer = client.post(
            "/trainings", data=body, headers={**auth, "Content-Type": content_type or mimetype}
        )
        assert answer.status_code == 200, (mimetype, answer.json)
        assert answer.json["version"] == "v1"
    # A type the document does not list is refused, with the documented 415.
    assert "415" in document["paths"]["/trainings"]["post"]["responses"]
    refused = client.post("/trainings", data="x", headers={**auth, "Content-Type": "text/csv"})
    assert refused.status_code == 415


def test_every_error_is_the_code_and_message_body(
    client: FlaskClient, auth: dict[str, str], document: dict[str, Any]
) -> None:
    error = document["components"]["schemas"]["Error"]
    assert set(error["required"]) == {"code", "message"}
    assert set(error["properties"]) == {"code", "message", "errors"}
    for (_method, path), operation in _operations(document).items():
        for status, response in operation["responses"].items():
            if int(status) >= 400:
                assert response == {"$ref": f"#/components/responses/Error{status}"}, path
    for status in ("400", "403", "404", "409", "415"):
        content = document["components"]["responses"][f"Error{status}"]["content"]
        assert content["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}
    answer = client.get("/trainings?status=nope", headers=auth)
    assert answer.status_code == 400
    assert set(answer.json) == {"code", "message", "errors"}


def test_ordering_a_true_false_field_is_a_400_not_a_500(
    client: FlaskClient, auth: dict[str, str]
) -> None:
    answer = client.get("/schedules?enabled_lt=true", headers=auth)
    assert answer.status_code == 400, answer.json
    assert answer.json["code"] == 400
    assert "enabled_lt" in answer.json["errors"]


def test_the_reference_page_and_its_files_are_served_by_the_service(client: FlaskClient) -> None:
    page = client.get("/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    assert page.headers["Content-Security-Policy"] == CONTENT_SECURITY_POLICY
    html = page.get_data(as_text=True)
    for asset in ("/docs/swagger-ui.css", "/docs/swagger-ui-bundle.js", "/docs/init.js"):
        assert asset in html
        served = client.get(asset)
        assert served.status_code == 200, asset
        assert len(served.data) > 100, asset
    assert "/openapi.json" in html
    assert client.get("/docs/nothing-here.js").status_code == 404
    # Other answers keep the API's own policy: no script runs there.
    assert (
        client.get("/healthz").headers["Content-Security-Policy"].startswith("default-src 'none'")
    )


def test_the_document_is_the_same_for_every_app(
    app: Flask, document: dict[str, Any], tmp_path: Path
) -> None:
    # Built from code alone, not from the database or the instance: every node serves one.
    other = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'other.sqlite3'}"})
    assert openapi.build(other) == document


def test_an_undocumented_api_parameter_is_refused(
    client: FlaskClient, write_token: str, document: dict[str, Any]
) -> None:
    names = {p["name"] for p in document["paths"]["/trainings"]["get"]["parameters"]}
    assert "accuracy_contains" not in names  # contains is for text fields
    answer = client.get("/trainings?accuracy_contains=1", headers=bearer(write_token))
    assert answer.status_code == 400
