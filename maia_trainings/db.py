"""The database: engine, sessions, reading()/writing() scopes, and SQLite's quirks.

Every transaction is a visible block: ``with reading(session):`` for reads that must see one
moment, ``with writing(session):`` for changes, committed at its end. Nothing else commits.
This is the only module that knows which database it talks to.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from enum import StrEnum
from pathlib import Path
from typing import Any, cast

from flask import Flask, current_app, g
from sqlalchemy import (
    Connection,
    CursorResult,
    Engine,
    Result,
    Select,
    Table,
    bindparam,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from .group_insert import GroupInsert

EXTENSION = "maia_trainings.db"
# The PostgreSQL channel on which nodes tell each other that the queue changed.
WORK_CHANNEL = "maia_trainings_work"
log = logging.getLogger(__name__)


class Announcement(StrEnum):
    """What a change of the queue tells the other nodes (see Database.announce)."""

    WORK = "work"  # a training is due now: a node with a free slot claims it
    LOOK = "look"  # a due time changed (a schedule, a back-off): recompute the timed looks


_NOTIFY = select(func.pg_notify(WORK_CHANNEL, bindparam("announcement")))
_TRANSACTION_LOCK = select(func.pg_advisory_xact_lock(bindparam("key")))
# The oldest SQLite with RETURNING, which claims and group commit use.
MIN_SQLITE = (3, 35)
# Execution option that marks a session's transaction as a write (see `writing`).
WRITE_OPTION = "maia_write"
# Where a session keeps what to call once its writing() block has committed (see after_commit).
AFTER_COMMIT_KEY = "maia_trainings.after_commit"
# A group insert's hook into its batches' transactions (see Database.group_insert).
BatchHook = Callable[
    ["Database", Connection, list[tuple[Any, dict[str, Any]]]], Callable[[], None] | None
]


def build_engine(url: str, *, busy_timeout: float = 30, pool: bool = True) -> Engine:
    """An engine for ``url``; SQLite files get WAL, a busy timeout and case-sensitive LIKE.

    ``pool=False`` connects anew for each connect (for connections a caller keeps).
    """
    parsed = make_url(url)
    pooling: dict[str, Any] = {} if pool else {"poolclass": NullPool}
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True, **pooling)
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        # Claims and group commit use RETURNING; say so at start, not at the first create.
        raise RuntimeError(
            f"SQLite {sqlite3.sqlite_version} is too old: maia-trainings needs "
            f"{'.'.join(map(str, MIN_SQLITE))} or newer (for RETURNING)"
        )
    if parsed.database and parsed.database != ":memory:":
        os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
    engine = create_engine(
        url,
        # Pooled connections keep SQLite's WAL index open: no per-request open and PRAGMAs,
        # and reads go on from an open connection even when the file can no longer be opened
        # for writing (a read-only or full file system).
        **({"pool_size": 8, "max_overflow": 24} if pool else pooling),
        connect_args={"timeout": busy_timeout, "check_same_thread": False},
    )

    path = os.path.abspath(parsed.database) if parsed.database else ""

    def storage_writable() -> bool:
        return not path or os.access(os.path.dirname(path), os.W_OK)

    @event.listens_for(engine, "do_connect")
    def _connect(_dialect: Any, record: Any, cargs: Any, cparams: Any) -> Any:
        if storage_writable() or not os.path.exists(path):
            return None  # the usual connection
        # The file lives on read-only storage: SQLite cannot make the WAL's side files there,
        # so the database is opened as the unchanging file it now is. Reads go on; writes
        # fail (and are answered 503) until the storage is writable again.
        record.info["read_only"] = True
        return sqlite3.connect(
            f"file:{path}?mode=ro&immutable=1",
            uri=True,
            timeout=busy_timeout,
            check_same_thread=False,
        )

    @event.listens_for(engine, "checkout")
    def _recover(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if record.info.get("read_only") and storage_writable():
            raise DisconnectionError("the storage is writable again")  # the pool reconnects

    @event.listens_for(engine, "connect")
    def _configure_sqlite(dbapi_connection: Any, record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin (see "begin" below).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if not record.info.get("read_only"):
            # WAL lets readers go on while one writer commits.
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        # In WAL mode NORMAL is still durable against application crashes.
        cursor.execute("PRAGMA synchronous=NORMAL")
        # LIKE behaves as on PostgreSQL, so the `_containss` filter means the same everywhere.
        cursor.execute("PRAGMA case_sensitive_like=ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin_immediate(conn: Any) -> None:
        # A plain BEGIN upgrades to a write lock mid-transaction, which SQLite may refuse
        # at once with "database is locked"; BEGIN IMMEDIATE waits for the lock instead.
        options = conn.get_execution_options()
        if options.get("isolation_level") == "AUTOCOMMIT":
            return  # each statement is its own transaction (see Database.read_now)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get(WRITE_OPTION) else "BEGIN")

    return engine


class Database:
    """The engine and session factory of one app."""

    def __init__(self, url: str, *, busy_timeout: float = 30) -> None:
        self.url = url
        self.engine = build_engine(url, busy_timeout=busy_timeout)
        self.sessions = sessionmaker(self.engine, expire_on_commit=False, info={"database": self})
        # SQLite has one writer at a time; threads that queue here are woken the moment it
        # is free, where SQLite's busy handler would have them sleep and poll.
        self.write_lock = (
            threading.Lock() if self.engine.dialect.name == "sqlite" else contextlib.nullcontext()
        )
        self._group_inserts: dict[str, GroupInsert] = {}
        self._group_hooks: dict[str, BatchHook | None] = {}
        # Connections for read_now, one per thread, made on first use (see read_now).
        self._quick_engine: Engine | None = None
        self._quick = threading.local()
        self._quick_lock = threading.Lock()
        # Every thread's, for dispose(); weak, so that a thread's ends with the thread.
        self._kept: weakref.WeakSet[Connection] = weakref.WeakSet()
        self._read_now_sql: dict[Select[Any], str] = {}

    def read_now(self, statement: Select[Any]) -> Any:
        """The first value ``statement`` (without parameters) reads, in autocommit on this
        thread's own connection.

        For a read on every request: a pooled connection's checkout and transaction cost
        154 us on SQLite, SQLAlchemy's execution on a kept connection 33 us, the driver's
        cursor on it 3 us (measured 2026-12-02; under a server's threads the difference
        showed as 14% of create throughput). The connection is kept for the thread's life,
        from an engine of its own (the request pool is not drained). After an error it is
        dropped and the read is made once more through SQLAlchemy, whose errors the service
        answers (503 for a database that cannot be reached).
        """
        sql = self._read_now_sql.get(statement)
        if sql is None:
            compiled = statement.compile(dialect=self.engine.dialect)
            if compiled.params:
                raise ValueError("read_now takes statements without parameters")
            sql = self._read_now_sql.setdefault(statement, str(compiled))
        connection: Connection | None = getattr(self._quick, "connection", None)
        try:
            if connection is None or connection.closed:
                connection = self._keep_connection()
            cursor = connection.connection.cursor()
            try:
                cursor.execute(sql)
                row = cursor.fetchone()
            finally:
                cursor.close()
            return None if row is None else row[0]
        except Exception:
            self._quick.connection = None
            if connection is not None and not connection.closed:
                connection.invalidate()
                connection.close()
        with self.engine.connect() as fresh:
            return fresh.execute(statement).scalar()

    def _keep_connection(self) -> Connection:
        with self._quick_lock:
            if self._quick_engine is None:
                # No pool: one connection per thread, made at once and closed when the thread
                # ends, however many threads come and go (never waiting for a free one).
                self._quick_engine = build_engine(self.url, pool=False)
        connection = self._quick_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        if connection.info.get("read_only"):
            # Opened as an unchanging file (read-only storage): it would never see a later
            # revocation. Not kept; the next read tries again.
            connection.close()
            raise ConnectionError("the database is read-only for now")
        with self._quick_lock:
            self._kept.add(connection)
        self._quick.connection = connection
        return connection

    def dispose(self) -> None:
        """Close every connection this database holds (pooled and kept), as a process that
        stops does; with no request in flight. Later use connects again."""
        with self._quick_lock:
            for connection in list(self._kept):
                connection.close()
            self._kept.clear()
            if self._quick_engine is not None:
                self._quick_engine.dispose()
        self.engine.dispose()

    def _write_connection(self) -> Connection:
        """A connection whose transactions begin as writes (BEGIN IMMEDIATE on SQLite)."""
        return self.engine.connect().execution_options(**{WRITE_OPTION: True})

    @property
    def shown_url(self) -> str:
        """The URL without its password, for messages and logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    def group_insert(self, table: Table, *, written: BatchHook | None = None) -> GroupInsert:
        """The group insert of ``table`` (one per table, made on first use).

        ``written`` (the same on every call for a table) runs in each batch's transaction
        with this database, the connection and the batch's (key, row) pairs, before the
        commit; what it returns is called once the batch is committed.
        """
        group = self._group_inserts.get(table.name)
        if group is not None and self._group_hooks.get(table.name) is not written:
            # Silently keeping the first hook would drop what the second caller's rows owe.
            raise RuntimeError(f"the group insert of {table.name} has another hook")
        if group is None:
            self._group_hooks.setdefault(table.name, written)

            def before_commit(
                connection: Connection, batch: list[tuple[Any, dict[str, Any], Any]]
            ) -> Callable[[], None] | None:
                self._announce_all(connection, {note for _key, _row, note in batch})
                if written is None:
                    return None
                return written(self, connection, [(key, row) for key, row, _note in batch])

            group = self._group_inserts.setdefault(
                table.name,
                GroupInsert(
                    table,
                    connect=self._write_connection,
                    write_lock=self.write_lock,
                    before_commit=before_commit,
                    # On PostgreSQL, concurrent callers committing their own rows did as well
                    # as grouped ones (in-process A/B, 16 threads, 6 reps interleaved: 823 vs
                    # 835 creates/s, 2026-12-02), where on SQLite grouping tripled it (3,119
                    # vs 1,056): PostgreSQL commits concurrent transactions in parallel.
                    grouped=self.engine.dialect.name == "sqlite",
                ),
            )
        return group

    @property
    def announces(self) -> bool:
        """Whether changes of the queue reach other processes at once (PostgreSQL's NOTIFY);
        elsewhere they find them at their next timed look (POLL_INTERVAL)."""
        return self.engine.dialect.name == "postgresql"

    def announce(
        self, target: Session | Connection, what: Announcement = Announcement.WORK
    ) -> None:
        """Tell every node's listener, when ``target``'s transaction commits, that the queue
        changed (NOTIFY; nothing on SQLite, where one box polls)."""
        if self.announces:
            target.execute(_NOTIFY, {"announcement": str(what)})

    def take_turn(self, session: Session, key: int) -> None:
        """Within a write transaction: wait until no other transaction holding ``key`` is
        open, and hold it until this one ends. Work such as handing out the next number is
        then done by one transaction at a time on every node (PostgreSQL's advisory lock;
        SQLite's writes already are one at a time)."""
        if self.engine.dialect.name == "postgresql":
            session.execute(_TRANSACTION_LOCK, {"key": key})

    def _announce_all(self, connection: Connection, notes: set[Any]) -> None:
        for what in notes:
            if isinstance(what, Announcement):
                self.announce(connection, what)

    def listen(
        self, on_announcement: Callable[[Announcement], None], stop: threading.Event
    ) -> threading.Thread | None:
        """Call ``on_announcement`` for each announcement any node makes, from a thread of its
        own (LISTEN on a connection of its own, made again after a failure) until ``stop``;
        None where announcements do not cross processes."""
        if not self.announces:
            return None
        thread = threading.Thread(
            target=self._listen, args=(on_announcement, stop), name="maia-listen", daemon=True
        )
        thread.start()
        return thread

    def _listen(
        self, on_announcement: Callable[[Announcement], None], stop: threading.Event
    ) -> None:
        engine = create_engine(self.url, poolclass=NullPool)
        delay = 0.5
        while not stop.is_set():
            try:
                raw = engine.raw_connection()
                try:
                    connection = raw.driver_connection
                    connection.autocommit = True  # type: ignore[union-attr]
                    connection.execute(f"LISTEN {WORK_CHANNEL}")  # type: ignore[union-attr]
                    # What was announced while nobody listened is found by a full look.
                    on_announcement(Announcement.LOOK)
                    delay = 0.5
                    while not stop.is_set():
                        for notice in connection.notifies(timeout=1.0):  # type: ignore[union-attr]
                            on_announcement(Announcement(notice.payload))
                finally:
                    raw.close()
            except Exception as exc:  # the server restarted, the network failed: again, later
                log.warning(
                    "listening for other nodes' work failed (%s); again in %.1f s",
                    type(exc).__name__,
                    delay,
                )
                stop.wait(delay)
                delay = min(delay * 2, 30.0)
        engine.dispose()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session for work outside a request (CLI, worker threads), closed afterwards."""
        with self.sessions() as session:
            yield session


def database(app: Flask | None = None) -> Database:
    found: Database = (app or current_app).extensions[EXTENSION]
    return found


def database_of(session: Session) -> Database:
    found: Database = session.info["database"]
    return found


def get_session() -> Session:
    """The session of the current request, opened on first use and closed at teardown."""
    if "db_session" not in g:
        g.db_session = database().sessions()
    session: Session = g.db_session
    return session


def _close_session(_exc: BaseException | None = None) -> None:
    session = g.pop("db_session", None)
    if session is not None:
        session.close()


def rows_changed(result: Result[Any]) -> int:
    """How many rows an UPDATE or DELETE changed: the count the queue's races are decided by."""
    return cast(CursorResult[Any], result).rowcount


# Marks a session whose reading() or writing() scope is open.
SCOPE_KEY = "maia_trainings.scope"


def end_snapshot(session: Session) -> None:
    """End a read transaction left open on ``session`` (reads made outside any scope).

    Never a caller's changes: a session holding unwritten changes is a bug, and is refused.
    """
    if not session.in_transaction():
        return
    if session.new or session.dirty or session.deleted:
        raise RuntimeError("changes outside a writing() scope would be committed by accident")
    session.commit()


@contextmanager
def _scope(session: Session) -> Iterator[None]:
    if session.info.get(SCOPE_KEY):
        # A nested scope would end its caller's transaction halfway: each store function is
        # one transaction, called outside any other.
        raise RuntimeError("reading() and writing() scopes do not nest")
    end_snapshot(session)
    session.info[SCOPE_KEY] = True
    try:
        yield
    finally:
        session.info.pop(SCOPE_KEY, None)


@contextmanager
def reading(session: Session) -> Iterator[Session]:
    """A read transaction on ``session``: one consistent view, ended (released) at the end.

    Ending it matters in SQLite's WAL mode: an open read keeps the writers' log from being
    checkpointed, and a later write from the same session could not upgrade it.
    """
    with _scope(session):
        try:
            yield session
        except BaseException:
            session.rollback()
            raise
        # Committing ends the (read-only) transaction without expiring what it loaded, as a
        # rollback would: the objects read stay usable after the block.
        session.commit()


@contextmanager
def writing(session: Session) -> Iterator[Session]:
    """One write transaction on ``session``, committed at the end and rolled back on error.

    It takes this process's writer lock first: SQLite has one writer at a time.
    """
    with _scope(session), database_of(session).write_lock:
        session.connection(execution_options={WRITE_OPTION: True})
        try:
            yield session
            session.commit()
        except BaseException:
            session.info.pop(AFTER_COMMIT_KEY, None)
            session.rollback()
            raise
    for callback in session.info.pop(AFTER_COMMIT_KEY, ()):
        callback()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Within a writing() block: call ``callback`` once the block has committed (never when
    it rolls back), after the write lock is released."""
    session.info.setdefault(AFTER_COMMIT_KEY, []).append(callback)


def backup(app: Flask, target: Path) -> int:
    """Copy a live SQLite database to ``target`` consistently (SQLite's online backup API).

    Writers are not stopped: the copy is of one moment, taken in steps that other
    connections' writes may interleave with, restarting a step a write invalidated.
    Written beside ``target`` and renamed into place, so a half-made copy is never there.
    Returns the size of the copy in bytes.
    """
    database_ = database(app)
    if database_.engine.dialect.name != "sqlite":
        raise ValueError(
            f"`trainings backup` copies SQLite databases; {database_.shown_url} is "
            f"{database_.engine.dialect.name}: back it up with its own tool, for PostgreSQL "
            "`pg_dump --format=custom --file=maia.dump <database>` (it is consistent while "
            "the service runs), restored with `pg_restore`"
        )
    partial = target.with_name(f".{target.name}.partial")
    partial.unlink(missing_ok=True)
    source = database_.engine.raw_connection()
    try:
        destination = sqlite3.connect(partial)
        try:
            driver = source.driver_connection
            assert isinstance(driver, sqlite3.Connection)
            driver.backup(destination, pages=1024, sleep=0.005)
        finally:
            destination.close()
    finally:
        source.close()
    os.replace(partial, target)
    return target.stat().st_size


def init_app(app: Flask) -> None:
    url = app.config["DATABASE_URL"] or "sqlite:///" + os.path.join(
        app.instance_path, "trainings.sqlite3"
    )
    app.config["DATABASE_URL"] = url
    app.extensions[EXTENSION] = Database(url, busy_timeout=app.config["SQLITE_BUSY_TIMEOUT"])
    app.teardown_appcontext(_close_session)
