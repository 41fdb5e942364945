"""Schema migrations: the revisions build what the models describe, every one downgrades, an
upgrade keeps every row, and a database from before migrations is adopted, never recreated."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from conftest import build_app
from sqlalchemy import inspect, text

from maia_trainings import create_app, db, migrations
from maia_trainings.models import Base

TRAINING_ROW = {
    "uuid": "kept",
    "status": "succeeded",
    "created_at": "2026-01-02 03:04:05.678000",
    "updated_at": "2026-01-02 03:04:05.678000",
    "attempts": 1,
    "request_fingerprint": "f" * 64,
    "accuracy": 0.75,
    "meta": '{"seed": 7}',
}
TOKEN_ROW = {
    "name": "kept",
    "token_hash": "h" * 64,
    "scope": "write",
    "created_at": "2026-01-02 03:04:05.678000",
}


@pytest.fixture
def database(tmp_path: Path) -> db.Database:
    """An app's database that does not exist yet."""
    app = create_app({"TESTING": True, "DATABASE_URL": f"sqlite:///{tmp_path / 'm.sqlite3'}"})
    return db.database(app)


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory(str(migrations.FOLDER))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def tables(database: db.Database) -> set[str]:
    return set(inspect(database.engine).get_table_names())


def insert_rows(database: db.Database) -> None:
    with database.engine.begin() as connection:
        for table, row in (("trainings", TRAINING_ROW), ("api_tokens", TOKEN_ROW)):
            names = ", ".join(row)
            values = ", ".join(f":{name}" for name in row)
            connection.execute(text(f"INSERT INTO {table} ({names}) VALUES ({values})"), row)


def stored_rows(database: db.Database) -> dict[str, list[tuple[object, ...]]]:
    with database.engine.connect() as connection:
        return {
            table: [
                tuple(row) for row in connection.execute(text(f"SELECT * FROM {table} ORDER BY id"))
            ]
            for table in ("trainings", "api_tokens")
        }


def test_the_revisions_build_exactly_what_the_models_describe(database):
    migrations.upgrade(database, migrations.head())  # by running each revision
    with database.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert differences == []
    assert migrations.current(database) == migrations.head()


def test_a_new_database_is_made_at_the_head_and_upgrading_again_changes_nothing(database):
    assert migrations.upgrade(database) is None
    assert migrations.current(database) == migrations.head()
    insert_rows(database)
    before = stored_rows(database)
    assert migrations.upgrade(database) == migrations.head()
    assert stored_rows(database) == before


def test_every_revision_downgrades_and_upgrades_again(database):
    ids = revisions()
    migrations.upgrade(database, ids[-1])
    for revision in reversed(ids):
        assert migrations.current(database) == revision
        previous = ids[ids.index(revision) - 1] if ids.index(revision) else "base"
        migrations.downgrade(database, previous)
    assert migrations.current(database) is None
    assert tables(database) <= {"alembic_version"}
    migrations.upgrade(database, ids[-1])
    assert {"trainings", "api_tokens"} <= tables(database)


def test_an_upgrade_from_the_first_revision_keeps_every_row(database):
    migrations.upgrade(database, migrations.FIRST_REVISION)
    insert_rows(database)
    before = stored_rows(database)
    migrations.upgrade(database)
    assert migrations.current(database) == migrations.head()
    assert stored_rows(database) == before


def test_a_database_made_before_migrations_is_stamped_and_keeps_its_rows(database):
    Base.metadata.create_all(database.engine)  # what the first release's init-db made
    insert_rows(database)
    before = stored_rows(database)
    assert migrations.current(database) is None

    assert migrations.upgrade(database) == migrations.FIRST_REVISION
    assert migrations.current(database) == migrations.head()
    assert stored_rows(database) == before


def test_commands_refuse_a_database_behind_the_head_and_name_the_upgrade(tmp_path):
    path = tmp_path / "old.sqlite3"
    app = build_app(path, tmp_path)
    with sqlite3.connect(path) as connection:
        connection.execute("DROP TABLE alembic_version")  # as the first release left it
    runner = app.test_cli_runner()
    for command in (["run-pending"], ["token", "create", "late"]):  # serve: in integration
        result = runner.invoke(args=["trainings", *command])
        assert result.exit_code == 1, (command, result.output)
        assert "trainings db upgrade" in result.output
        assert "is at revision none" in result.output

    upgraded = runner.invoke(args=["trainings", "db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    current = runner.invoke(args=["trainings", "db", "current"])
    assert current.output.startswith(migrations.head())
    assert runner.invoke(args=["trainings", "run-pending"]).exit_code == 0


def test_the_history_lists_every_revision(tmp_path):
    app = build_app(tmp_path / "h.sqlite3", tmp_path)
    output = app.test_cli_runner().invoke(args=["trainings", "db", "history"]).output
    for revision in revisions():
        assert revision in output


def test_a_database_from_a_newer_release_is_refused_without_advising_an_upgrade(tmp_path):
    path = tmp_path / "newer.sqlite3"
    app = build_app(path, tmp_path)
    with sqlite3.connect(path) as connection:
        connection.execute("UPDATE alembic_version SET version_num = '9999'")
    result = app.test_cli_runner().invoke(args=["trainings", "run-pending"])
    assert result.exit_code == 1
    assert "is at revision 9999, which this release does not know" in result.output
    assert "db upgrade" not in result.output
