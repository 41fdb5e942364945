"""The SQLite the app finds must have RETURNING (3.35 or newer), or the app refuses to start."""

from __future__ import annotations

import sqlite3

import pytest

from maia_trainings import create_app


def test_an_sqlite_without_returning_is_refused_at_start_with_a_clear_message(
    tmp_path, monkeypatch
):
    monkeypatch.setattr(sqlite3, "sqlite_version_info", (3, 34, 1))
    monkeypatch.setattr(sqlite3, "sqlite_version", "3.34.1")
    with pytest.raises(RuntimeError, match=r"SQLite 3\.34\.1 is too old.*3\.35 or newer"):
        create_app({"DATABASE_URL": f"sqlite:///{tmp_path / 'old.sqlite3'}"})
