"""The PostgreSQL databases of a bench run: each made fresh for one use, all dropped at the end.

The server is ``BENCH_POSTGRES_URL`` (else ``MAIA_TEST_POSTGRES_URL``, else the local
``postgresql+psycopg://postgres@127.0.0.1:5432/test``): any database on it the user may connect
to, from which this run's own databases ``maia_bench_<pid>_<name>`` are made and dropped.
"""

from __future__ import annotations

import os

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def server_url() -> str:
    return (
        os.environ.get("BENCH_POSTGRES_URL")
        or os.environ.get("MAIA_TEST_POSTGRES_URL")
        or DEFAULT_URL
    )


class PostgresDatabases:
    """Databases made on one PostgreSQL server for this run; ``drop_all`` removes every one."""

    def __init__(self, url: str | None = None) -> None:
        self.server = make_url(url or server_url())
        # AUTOCOMMIT: CREATE and DROP DATABASE cannot run inside a transaction.
        self._admin = create_engine(self.server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
        self.made: list[str] = []

    def version(self) -> str:
        """The server's version (an OperationalError when it cannot be reached)."""
        with self._admin.connect() as connection:
            return str(connection.execute(text("SHOW server_version")).scalar())

    def create(self, name: str) -> str:
        """The URL (password included: it goes to the service) of a new, empty database."""
        database = f"maia_bench_{os.getpid()}_{name}"
        # Listed first: a run interrupted during CREATE DATABASE still drops what it made.
        self.made.append(database)
        with self._admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            connection.execute(text(f'CREATE DATABASE "{database}"'))
        return self.server.set(database=database).render_as_string(hide_password=False)

    def drop_all(self) -> None:
        """Drop every database made, closing the connections still open to them (FORCE)."""
        with self._admin.connect() as connection:
            while self.made:
                database = self.made.pop()
                connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        self._admin.dispose()
