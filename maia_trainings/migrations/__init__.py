"""Schema migrations: Alembic revisions shipped in the package, and the calls that run them.

``upgrade`` brings a database to a revision (the head by default). A new database is made
from the models and stamped with the head (Alembic's documented way to build one from scratch;
a test holds models and revisions together). A database made by the first release, before
migrations, has the tables but no ``alembic_version``: it is stamped with the first revision,
then upgraded, never recreated or emptied.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, inspect

from ..db import WRITE_OPTION, Database
from ..errors import SchemaNotCurrent
from ..models import Base

FOLDER = Path(__file__).resolve().parent
# The revision whose schema the first release made without Alembic.
FIRST_REVISION = "0001"
UPGRADE_COMMAND = "flask --app maia_trainings trainings db upgrade"


def _config(connection: Connection | None = None, output: io.StringIO | None = None) -> Config:
    config = Config(stdout=output or io.StringIO())
    config.set_main_option("script_location", str(FOLDER))
    config.attributes["connection"] = connection
    return config


@functools.cache
def _script() -> ScriptDirectory:
    return ScriptDirectory.from_config(_config())


def head() -> str:
    """The newest revision this release ships."""
    found = _script().get_current_head()
    assert found is not None
    return found


def known(revision: str) -> bool:
    """Whether this release ships ``revision`` (a newer release's is unknown to it)."""
    return revision in {script.revision for script in _script().walk_revisions()}


def current(database: Database) -> str | None:
    """The database's revision; None for an empty database or one made before migrations."""
    with database.engine.connect() as connection:
        return MigrationContext.configure(connection).get_current_revision()


def _has_tables(connection: Connection) -> bool:
    return inspect(connection).has_table("trainings")


@contextmanager
def _changing(database: Database) -> Iterator[Connection]:
    """A connection in one write transaction: a migration is all or nothing."""
    with (
        database.write_lock,
        database.engine.connect().execution_options(**{WRITE_OPTION: True}) as connection,
        connection.begin(),
    ):
        yield connection


def upgrade(database: Database, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; returns the revision it was at before (None: empty).

    An empty database asked for "head" is made from the models and stamped; asked for a
    revision by its id, it is built by running the revisions up to it.
    """
    with _changing(database) as connection:
        before = MigrationContext.configure(connection).get_current_revision()
        config = _config(connection)
        if before is None and not _has_tables(connection) and revision == "head":
            Base.metadata.create_all(connection)
            command.stamp(config, "head")
            return None
        if before is None and _has_tables(connection):
            command.stamp(config, FIRST_REVISION)  # made by the first release
            before = FIRST_REVISION
        command.upgrade(config, revision)
    return before


def downgrade(database: Database, revision: str) -> None:
    """Take the schema back to ``revision`` ("base" drops every table)."""
    with _changing(database) as connection:
        command.downgrade(_config(connection), revision)


def history() -> str:
    """The revisions this release ships, newest first, as Alembic prints them."""
    output = io.StringIO()
    command.history(_config(output=output))
    return output.getvalue()


def ensure_current(database: Database) -> None:
    """Make a new database at the head; refuse one whose schema is behind it (SchemaNotCurrent,
    naming the command to run). Servers and run-pending call this before they start."""
    at = current(database)
    if at == head():
        return
    if at is None:
        with database.engine.connect() as connection:
            empty = not _has_tables(connection)
        if empty:
            upgrade(database)  # nothing to lose: made as init-db would
            return
    if at is not None and not known(at):
        raise SchemaNotCurrent(
            f"the database at {database.shown_url} is at revision {at}, which this release "
            f"does not know (a newer release upgraded it?); this release needs {head()}"
        )
    shown = at or "none (made before migrations)"
    raise SchemaNotCurrent(
        f"the database at {database.shown_url} is at revision {shown}, this release needs "
        f"{head()}: run `{UPGRADE_COMMAND}` first"
    )
