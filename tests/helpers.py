"""Small steps the tests share: make, read and count trainings through the API."""

from __future__ import annotations

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
