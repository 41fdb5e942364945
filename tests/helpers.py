"""Small steps the tests share: make, read and count trainings through the API, and the few
bodies, answers and commands that both the in-process and the real-server tests check."""

from __future__ import annotations

import re
import secrets
import string
import time
from typing import Any

from maia_trainings import db
from maia_trainings.models import Training


def create(client, auth, **fields) -> dict[str, Any]:
    """POST a training as JSON; asserts 200 and returns the representation."""
    response = client.post("/trainings", json=fields, headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def fetch(client, auth, training_id) -> dict[str, Any]:
    response = client.get(f"/trainings/{training_id}", headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def count(client, auth, params=None) -> int:
    response = client.get("/trainings/count", query_string=params, headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def set_columns(app, training_id, **values) -> None:
    """Change a stored training behind the API's back, as a run would."""
    with app.app_context(), db.database(app).session() as session:
        training = session.get(Training, int(training_id))
        for name, value in values.items():
            setattr(training, name, value)
        session.commit()


# Bodies of different shapes ----------------------------------------------------------------

LATER = "2031-01-02T03:04:05.678Z"
# Bodies of different shapes, as different clients send them: concurrent creates are stored
# together, and no field of one may be lost to the shape of another.
SHAPES = (
    {},
    {"scheduled_at": LATER},
    {"meta": "free text", "binaryPath": "models/m.bin"},
    {"scheduled_at": LATER, "meta": '{"seconds": 0}'},
)


# Access: guessed tokens, refusals, security headers ----------------------------------------

# What a write would send if it got through: each would change the training or add one.
CHANGE = {"uuid": "intruder", "version": "9", "meta": "changed by an intruder"}
TOKEN_ALPHABET = string.ascii_letters + string.digits + "-_"
CSP_DIRECTIVES = ("default-src 'none'", "frame-ancestors 'none'")


def guessed_token() -> str:
    """What a guesser would send: the shape of a real secret ("mt_" + 43 URL-safe chars)."""
    return "mt_" + "".join(secrets.choice(TOKEN_ALPHABET) for _ in range(43))


def is_error_body(body: Any, code: int) -> bool:
    return (
        isinstance(body, dict)
        and set(body) == {"code", "message"}
        and body["code"] == code
        and isinstance(body["message"], str)
        and bool(body["message"])
    )


def meta_errors(response):
    """The ``errors.meta`` of a 400 answer (the trainer's refusal of a training's meta)."""
    assert response.status_code == 400, response.json
    body = response.json
    assert body["code"] == 400
    assert body["message"]
    return body["errors"]["meta"]


# The run-pending command -------------------------------------------------------------------

SUMMARY = re.compile(
    r"^(\d+) trainings run: (\d+) succeeded, (\d+) failed, (\d+) back in the queue, "
    r"(\d+) cancelled\.$"
)


def run_pending(runner, *args):
    """Invoke run-pending; returns (result, seconds it took)."""
    started = time.monotonic()
    result = runner.invoke(args=["trainings", "run-pending", *args])
    elapsed = time.monotonic() - started
    # It ends with sys.exit; anything else escaping it is a crash.
    assert result.exception is None or isinstance(result.exception, SystemExit), result.output
    return result, elapsed


def summary(result):
    """The counts of run-pending's last line: run, succeeded, failed, requeued, cancelled."""
    match = SUMMARY.match(result.stdout.strip().splitlines()[-1])
    assert match, result.stdout
    return tuple(int(n) for n in match.groups())
