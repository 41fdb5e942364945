"""Schema migrations: the revisions build what the models describe, every one downgrades, an
upgrade keeps every row, and a database from before migrations is adopted, never recreated."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask.testing import FlaskCliRunner
from sqlalchemy import MetaData, Table, inspect, text

from maia_trainings import create_app, db, migrations
from maia_trainings.models import Base

# Rows as the first revision stores them, one per status the queue treats differently.
CREATED = datetime(2026, 1, 2, 3, 4, 5, 678000)
TRAINING_ROWS = [
    {"uuid": "finished", "status": "succeeded", "accuracy": 0.75, "meta": '{"seed": 7}'},
    {"uuid": "queued", "status": "queued", "not_before": None},
    {"uuid": "retried", "status": "queued", "not_before": datetime(2026, 1, 3)},
    {"uuid": "scheduled", "status": "scheduled", "scheduled_at": datetime(2026, 2, 1)},
]
TOKEN_ROW = {"name": "kept", "token_hash": "h" * 64, "scope": "write", "created_at": CREATED}
# What revision 0002 makes of each row's due time (naive UTC, as stored).
DUE_AT = {
    "finished": None,
    "queued": CREATED,
    "retried": datetime(2026, 1, 3),
    "scheduled": datetime(2026, 2, 1),
}


@pytest.fixture
def database(databases, tmp_path: Path) -> Iterator[db.Database]:
    """An app's database that does not exist yet (on PostgreSQL, an empty schema)."""
    app = create_app({"TESTING": True, "DATABASE_URL": databases.url(tmp_path)})
    yield db.database(app)
    db.database(app).dispose()


def revisions() -> list[str]:
    """Every revision id, oldest first."""
    script = ScriptDirectory(str(migrations.FOLDER))
    return [r.revision for r in reversed(list(script.walk_revisions()))]


def tables(database: db.Database) -> set[str]:
    return set(inspect(database.engine).get_table_names())


def insert(database: db.Database, table: str, row: dict[str, object]) -> None:
    """Insert ``row`` into ``table`` as its schema is now (read from the database)."""
    reflected = Table(table, MetaData(), autoload_with=database.engine)
    with database.engine.begin() as connection:
        connection.execute(reflected.insert(), row)


def insert_first_release_rows(database: db.Database) -> None:
    """A row in every table, as the first revision's schema holds them."""
    for row in TRAINING_ROWS:
        common = {"created_at": CREATED, "updated_at": CREATED, "attempts": 0}
        insert(database, "trainings", {**common, "request_fingerprint": "f" * 64, **row})
    insert(database, "api_tokens", TOKEN_ROW)


def stored_rows(database: db.Database) -> dict[str, list[dict[str, object]]]:
    """Every row of every table, typed as the schema now says."""
    found = {}
    with database.engine.connect() as connection:
        for name in ("trainings", "api_tokens"):
            table = Table(name, MetaData(), autoload_with=connection)
            rows = connection.execute(table.select().order_by(table.c.id))
            found[name] = [dict(row._mapping) for row in rows]
    return found


def assert_kept(before: dict[str, list[dict[str, object]]], after: dict[str, list[dict]]) -> None:
    """Every row is still there, with the same values in every column both schemas have."""
    for table, rows in before.items():
        assert len(after[table]) == len(rows), table
        for old, new in zip(rows, after[table], strict=True):
            assert {k: v for k, v in old.items() if k in new} == {
                k: v for k, v in new.items() if k in old
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
    insert(database, "api_tokens", TOKEN_ROW)
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
    insert_first_release_rows(database)
    before = stored_rows(database)
    migrations.upgrade(database)
    assert migrations.current(database) == migrations.head()
    after = stored_rows(database)
    assert_kept(before, after)
    assert {row["uuid"]: row["due_at"] for row in after["trainings"]} == DUE_AT


def test_revision_0004_puts_every_training_in_the_default_model_and_keeps_its_champion(database):
    migrations.upgrade(database, "0003")
    common = {"created_at": CREATED, "updated_at": CREATED, "attempts": 0}
    common["request_fingerprint"] = "f" * 64
    published = [  # (uuid, automatic number, published_at); "b" was published last
        ("a", 1, datetime(2026, 1, 3)),
        ("b", 2, datetime(2026, 1, 5)),
        ("c", 3, datetime(2026, 1, 4)),
        ("d", None, None),
    ]
    for uuid, number, published_at in published:
        row = {"uuid": uuid, "status": "succeeded", "version": str(number)}
        row |= {"auto_version": number, "published_at": published_at}
        insert(database, "trainings", {**common, **row})
    migrations.upgrade(database, "0004")
    with database.engine.connect() as connection:
        trainings = connection.execute(
            text("SELECT id, uuid, model_name, model_version FROM trainings ORDER BY id")
        ).all()
        publications = connection.execute(
            text("SELECT model_name, training_id, version FROM publications ORDER BY id")
        ).all()
    assert [(uuid, model, number) for _id, uuid, model, number in trainings] == [
        ("a", "default", 1),
        ("b", "default", 2),
        ("c", "default", 3),
        ("d", "default", None),
    ]
    ids = {uuid: training_id for training_id, uuid, *_rest in trainings}
    assert [tuple(row) for row in publications] == [
        ("default", ids["a"], "1"),
        ("default", ids["c"], "3"),
        ("default", ids["b"], "2"),
    ]


def test_a_downgrade_to_the_first_revision_keeps_every_row(database):
    migrations.upgrade(database, migrations.FIRST_REVISION)
    insert_first_release_rows(database)
    before = stored_rows(database)
    migrations.upgrade(database)
    migrations.downgrade(database, migrations.FIRST_REVISION)
    assert stored_rows(database) == before


def test_a_database_made_before_migrations_is_stamped_and_keeps_its_rows(database):
    migrations.upgrade(database, migrations.FIRST_REVISION)  # the first release's tables...
    with database.engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))  # ...without Alembic's mark
    insert_first_release_rows(database)
    before = stored_rows(database)
    assert migrations.current(database) is None

    assert migrations.upgrade(database) == migrations.FIRST_REVISION
    assert migrations.current(database) == migrations.head()
    assert_kept(before, stored_rows(database))


def cli(database: db.Database) -> FlaskCliRunner:
    """The commands of an app on ``database``."""
    return create_app({"TESTING": True, "DATABASE_URL": database.url}).test_cli_runner()


def test_commands_refuse_a_database_behind_the_head_and_name_the_upgrade(database):
    migrations.upgrade(database, migrations.FIRST_REVISION)
    with database.engine.begin() as connection:
        connection.execute(text("DROP TABLE alembic_version"))  # as the first release left it
    runner = cli(database)
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


def test_the_history_lists_every_revision(database):
    output = cli(database).invoke(args=["trainings", "db", "history"]).output
    for revision in revisions():
        assert revision in output


def test_a_database_from_a_newer_release_is_refused_without_advising_an_upgrade(database):
    migrations.upgrade(database)
    with database.engine.begin() as connection:
        connection.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    result = cli(database).invoke(args=["trainings", "run-pending"])
    assert result.exit_code == 1
    assert "is at revision 9999, which this release does not know" in result.output
    assert "db upgrade" not in result.output
