"""Many clients at once in-process, without the writer lock: every answer is its own stored row.

The same against a real waitress server is in tests/integration/test_concurrency_server.py."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from helpers import SHAPES


def test_concurrent_creates_without_a_writer_lock_each_get_their_own_row(app, auth):
    # On PostgreSQL there is no process-wide writer lock: callers commit concurrent batches,
    # and each answers with its own row. SQLite without the lock (its busy timeout then orders
    # the writers) runs the same path here, though it cannot reproduce PostgreSQL's timing.
    import contextlib

    from maia_trainings import db

    db.database(app).write_lock = contextlib.nullcontext()
    start = threading.Barrier(16)

    def one_client(number: int) -> list[tuple[str, int, Any]]:
        client = app.test_client()
        start.wait()
        answers = []
        for i in range(10):
            uuid = f"n{number}-{i}"
            response = client.post("/trainings", json={"uuid": uuid, **SHAPES[i % 4]}, headers=auth)
            answers.append((uuid, response.status_code, response.json))
        return answers

    with ThreadPoolExecutor(16) as pool:
        answers = [answer for batch in pool.map(one_client, range(16)) for answer in batch]

    assert [status for _, status, _ in answers] == [200] * 160
    assert all(body["uuid"] == uuid for uuid, _, body in answers)
    ids = [body["id"] for _, _, body in answers]
    assert len(set(ids)) == 160
    assert None not in ids
    client = app.test_client()
    for uuid, _, body in answers:
        assert client.get(f"/trainings/{body['id']}", headers=auth).json["uuid"] == uuid


def test_more_concurrent_creates_than_a_batch_holds_are_all_written(app, auth):
    # A caller whose row did not fit in the batch it committed goes round again: none is
    # left waiting for a commit nobody will make (a hang, before 2026-12-02).
    from maia_trainings import db, outbox
    from maia_trainings.models import TRAININGS

    db.database(app).group_insert(TRAININGS, written=outbox.record_created).batch_limit = 2
    start = threading.Barrier(16)
    answers: list[int] = []

    def one_client(number: int) -> None:
        client = app.test_client()
        start.wait()
        for i in range(5):
            response = client.post("/trainings", json={"uuid": f"b{number}-{i}"}, headers=auth)
            answers.append(response.status_code)

    threads = [threading.Thread(target=one_client, args=(n,), daemon=True) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a create never returned"
    assert answers == [200] * 80
    assert app.test_client().get("/trainings/count", headers=auth).json == 80
