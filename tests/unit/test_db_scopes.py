"""Transactions are visible blocks: db.reading() and db.writing() never nest, and no scope
commits changes a caller left outside a writing() block."""

from __future__ import annotations

import pytest
from helpers import create

from maia_trainings import db, trainings
from maia_trainings.models import Training


def test_a_scope_inside_another_is_refused_and_the_outer_write_is_rolled_back(app, client, auth):
    training_id = int(create(client, auth, version="1")["id"])
    with db.database(app).session() as session:

        def write_then_read() -> None:
            with db.writing(session):
                session.get(Training, training_id).version = "2"
                trainings.get_training(session, training_id)  # its own reading() scope

        with pytest.raises(RuntimeError, match="do not nest"):
            write_then_read()
        assert trainings.get_training(session, training_id).version == "1"


def test_changes_left_outside_a_writing_scope_are_never_committed_by_a_read(app, client, auth):
    training_id = int(create(client, auth, version="1")["id"])
    with db.database(app).session() as session:
        session.get(Training, training_id).version = "2"  # not inside writing()
        with pytest.raises(RuntimeError, match="outside a writing"):
            trainings.get_training(session, training_id)
        session.rollback()
        assert trainings.get_training(session, training_id).version == "1"
