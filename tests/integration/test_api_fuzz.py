"""schemathesis against the live app, from its own OpenAPI document: every operation, with a
write token, a few hundred generated requests, seeded. No answer may be a 5xx, every answer
must be one the document describes (status, content type, body), and every error must carry
the ``{code, message}`` body.

In-process (WSGI): what crosses the wire is tested by the servers' tests; here the document
and the service are held together, on SQLite and on PostgreSQL.
"""

from __future__ import annotations

import json
import time
from typing import Any

import schemathesis
from conftest import bearer, make_token
from flask import Flask
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

# Generated requests per operation (35 operations: about 550 in all).
EXAMPLES = 16


@schemathesis.check
def error_body(ctx: Any, response: schemathesis.Response, case: schemathesis.Case) -> bool:
    """Every error (4xx, 5xx) answered as JSON is ``{code, message[, errors]}``, code its status."""
    if response.status_code < 400:
        return True
    assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
        response.headers
    )
    body = json.loads(response.content)
    assert isinstance(body, dict), body
    assert body.get("code") == response.status_code, body
    assert isinstance(body.get("message"), str), body
    assert body["message"], body
    assert set(body) <= {"code", "message", "errors"}, body
    return True


CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    error_body,
]


def _seed(app: Flask, headers: dict[str, str]) -> dict[str, str]:
    """A training, a schedule and a subscription to find: path parameters that exist."""
    client = app.test_client()
    made = {}
    for path, body, name in (
        ("/trainings", {"meta": "seed"}, "training_id"),
        ("/schedules", {"name": "seed", "cron": "0 3 * * *"}, "schedule_id"),
        ("/webhooks", {"url": "https://hooks.example.com/maia"}, "webhook_id"),
    ):
        answer = client.post(path, json=body, headers=headers)
        assert answer.status_code == 200, answer.json
        made[name] = answer.json["id"]
    return {**made, "delivery_id": "1", "model_name": "default"}


def test_every_operation_answers_as_its_document_says(app: Flask) -> None:
    app.config["WEBHOOK_ALLOWED_HOSTS"] = ["hooks.example.com"]
    headers = bearer(make_token(app, "fuzzer", "write"))
    known = _seed(app, headers)
    schema = schemathesis.openapi.from_wsgi("/openapi.json", app)
    # Deletions last, so that the other operations find the seeded resources.
    operations = sorted(
        (result.ok() for result in schema.get_all_operations()),
        key=lambda operation: operation.method.upper() == "DELETE",
    )
    assert len(operations) >= 35
    failures: dict[str, str] = {}
    cases = 0
    statuses: dict[str, list[int]] = {}
    started = time.monotonic()
    for operation in operations:
        # Half the cases on resources that exist, half on any path the document allows.
        existing = {name: value for name, value in known.items() if f"{{{name}}}" in operation.path}
        strategies = [operation.as_strategy()]
        if existing:
            strategies.insert(0, operation.as_strategy(path_parameters=existing))

        @settings(
            max_examples=EXAMPLES,
            derandomize=True,  # the same requests every run: a failure is reproducible
            database=None,
            deadline=None,
            phases=[Phase.explicit, Phase.generate],  # report the first failure, unshrunk
            suppress_health_check=list(HealthCheck),
        )
        @given(case=st.sampled_from(strategies).flatmap(lambda strategy: strategy))
        def run(case: schemathesis.Case) -> None:
            nonlocal cases
            cases += 1
            response = case.call(headers=headers)
            statuses.setdefault(case.operation.label, []).append(response.status_code)
            case.validate_response(response, checks=CHECKS)

        try:
            run()
        except Exception as exc:  # one operation's failure must not hide the others'
            failures[operation.label] = str(exc)[:3000]
    for label, codes in statuses.items():
        print(label, sorted(codes))
    print(f"{cases} cases over {len(operations)} operations in {time.monotonic() - started:.1f} s")
    assert not failures, "\n\n".join(f"{label}:\n{text}" for label, text in failures.items())
    assert cases >= 300
    # The seeded resources are found: most operations answered a success, not only errors.
    succeeded = [label for label, codes in statuses.items() if any(c < 300 for c in codes)]
    assert len(succeeded) >= 25, statuses
