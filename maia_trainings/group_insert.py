"""Group commit: concurrent inserts into one table share one statement and one transaction."""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

from sqlalchemy import Connection, Table
from sqlalchemy.exc import IntegrityError

# Called in a batch's transaction with its rows' (key, row, note); returns what to call once
# the batch is committed, if anything.
BeforeCommit = Callable[
    [Connection, list[tuple[Any, dict[str, Any], Any]]], Callable[[], None] | None
]


class _PendingRow:
    """One caller's row waiting in a group insert, and what became of it."""

    __slots__ = ("done", "error", "finished", "key", "note", "row")

    def __init__(self, row: dict[str, Any], note: Any) -> None:
        self.row = row
        self.note = note
        self.key: Any = None
        self.error: BaseException | None = None
        self.done = False  # its outcome is known (set while the batch is still being written)
        self.finished = threading.Event()  # its batch is over: the caller may return


class GroupInsert:
    """Inserts into one table from many threads, committed together (group commit).

    Each caller adds its row to a shared list and then takes the writer lock. The first to get
    it commits every row waiting at that moment in one transaction and records each row's
    primary key; the callers whose rows went with it find them done when their turn at the lock
    comes, and return without writing. No caller returns before its own row is committed, so an
    answer still means a durable row. Under load one commit (and one round of SQLAlchemy's
    per-transaction work) serves many requests, where it used to serve one; alone, a caller
    commits its row at once, as before. Without a writer lock, callers commit what is waiting
    concurrently, each batch its own, and wait for the batch holding their row. With
    ``grouped=False`` (PostgreSQL, where grouping was measured not to help) each caller
    commits its own row at once.

    When a batch breaks a constraint (a uuid that is taken), its rows are inserted again one
    by one, so that only the offending rows fail, each with its own IntegrityError.
    """

    def __init__(
        self,
        table: Table,
        *,
        connect: Callable[[], Connection],
        write_lock: AbstractContextManager[Any],
        before_commit: BeforeCommit | None = None,
        batch_limit: int = 256,
        grouped: bool = True,
    ) -> None:
        self.table = table
        self._connect = connect
        # Run in each batch's transaction before it commits, with the (key, row, note) of each
        # row it writes (the database announces new work to other nodes, the outbox writes
        # the deliveries the new rows owe); what it returns is called after the commit.
        self._before_commit = before_commit
        # False: each caller commits its own row at once (where grouping was measured not to
        # help: PostgreSQL, see Database.group_insert).
        self.grouped = grouped
        self._write_lock = write_lock
        self.batch_limit = batch_limit
        self._pending: list[_PendingRow] = []
        self._pending_lock = threading.Lock()
        (key_column,) = table.primary_key.columns
        self._insert_many = table.insert().returning(key_column, sort_by_parameter_order=True)
        self._insert_one = table.insert()

    def insert(self, row: dict[str, Any], *, note: Any = None) -> Any:
        """Insert ``row`` (column names to values); returns its primary key once committed.

        ``note`` goes to ``before_commit`` with the batch's other rows and their notes.
        """
        pending = _PendingRow(row, note)
        if not self.grouped:
            self._commit([pending])
        else:
            with self._pending_lock:
                self._pending.append(pending)
        while not pending.finished.is_set():
            with self._write_lock:
                if pending.finished.is_set():
                    break
                with self._pending_lock:
                    batch = self._pending[: self.batch_limit]
                    del self._pending[: self.batch_limit]
                if batch:
                    # The rows that waited longest, which need not include this caller's
                    # (past the batch limit): the loop goes round until its row is written.
                    self._commit(batch)
            if not batch:
                # Its row is in a batch another caller commits concurrently (there is no
                # writer lock): that commit is what this caller waits for.
                pending.finished.wait()
        if pending.error is not None:
            raise pending.error
        return pending.key

    def _commit(self, batch: list[_PendingRow]) -> None:
        try:
            try:
                with self._connection() as connection:
                    # One statement per set of columns: an executemany takes its columns from
                    # the first row, and would drop other rows' extra values without a word.
                    shapes: dict[frozenset[str], list[_PendingRow]] = {}
                    for pending in batch:
                        shapes.setdefault(frozenset(pending.row), []).append(pending)
                    for rows in shapes.values():
                        keys = connection.execute(
                            self._insert_many, [pending.row for pending in rows]
                        ).scalars()
                        for pending, key in zip(rows, keys, strict=True):
                            pending.key = key
                    self._finish(connection, batch)
            except IntegrityError:
                if len(batch) == 1:
                    raise
                for pending in batch:
                    self._commit_alone(pending)
        except BaseException as exc:  # every caller learns what became of its row
            for pending in batch:
                if not pending.done:
                    pending.error = exc
        finally:
            for pending in batch:
                pending.done = True
                pending.finished.set()

    def _commit_alone(self, pending: _PendingRow) -> None:
        try:
            with self._connection() as connection:
                result = connection.execute(self._insert_one, pending.row)
                inserted = result.inserted_primary_key
                assert inserted is not None
                pending.key = inserted[0]
                self._finish(connection, [pending])
        except IntegrityError as exc:
            pending.error = exc
        pending.done = True

    def _finish(self, connection: Connection, batch: list[_PendingRow]) -> None:
        committed = None
        if self._before_commit is not None:
            committed = self._before_commit(
                connection, [(pending.key, pending.row, pending.note) for pending in batch]
            )
        connection.commit()
        if committed is not None:
            committed()

    def _connection(self) -> Connection:
        return self._connect()
