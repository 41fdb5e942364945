"""The database queue: claims, leases, retries and cancellation, with the clock passed in."""

from __future__ import annotations

import threading
from datetime import timedelta

import pytest
from conftest import bearer
from helpers import set_columns

from maia_trainings import db, queue, trainings
from maia_trainings.fields import format_timestamp
from maia_trainings.models import Training, utcnow
from maia_trainings.retry import RetryPolicy

LEASE = 30.0


def create(client, auth, **fields):
    response = client.post("/trainings", json=fields, headers=auth)
    assert response.status_code == 200, response.json
    return int(response.json["id"])


def row(app, training_id):
    """The stored training, read afresh."""
    with db.database(app).session() as session:
        return trainings.get_training(session, training_id)


def claim(app, owner, now, lease_seconds=LEASE):
    with db.database(app).session() as session:
        return queue.claim_next(session, owner, lease_seconds=lease_seconds, now=now)


def claim_one(app, client, auth, owner="owner-a", now=None, **fields):
    """Create a training and claim it for ``owner``; returns (id, the claim's time)."""
    training_id = create(client, auth, **fields)
    now = now or utcnow()
    claimed = claim(app, owner, now)
    assert claimed is not None
    assert claimed.id == training_id
    return training_id, now


# Claiming ----------------------------------------------------------------------------------


@pytest.mark.parametrize("engines", ["shared", "one-per-thread"])
def test_claiming_is_atomic_across_racing_threads(app, client, auth, engines):
    ids = {create(client, auth) for _ in range(50)}
    owners = [f"worker-{n}" for n in range(8)]
    claims: dict[str, list[int]] = {owner: [] for owner in owners}
    problems: list[BaseException] = []
    barrier = threading.Barrier(len(owners))

    def work(owner):
        # "shared": the app's Database (its write lock serialises the threads first);
        # "one-per-thread": separate engines, so only SQLite's locking keeps claims apart.
        database = (
            db.database(app) if engines == "shared" else db.Database(app.config["DATABASE_URL"])
        )
        try:
            with database.session() as session:
                barrier.wait(timeout=10)
                while True:
                    training = queue.claim_next(session, owner, lease_seconds=LEASE)
                    if training is None:
                        break
                    claims[owner].append(training.id)
        except BaseException as exc:  # reported by the main thread
            problems.append(exc)

    threads = [threading.Thread(target=work, args=(owner,)) for owner in owners]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert not problems
    claimed = [training_id for mine in claims.values() for training_id in mine]
    assert len(claimed) == len(set(claimed)), "a training was claimed twice"
    assert set(claimed) == ids
    with db.database(app).session() as session:
        for owner, mine in claims.items():
            for training_id in mine:
                training = trainings.get_training(session, training_id)
                assert training.status == "running"
                assert training.attempts == 1
                assert training.lease_owner == owner
                assert training.lease_expires_at is not None


def test_runs_finishing_at_once_on_separate_engines_get_distinct_automatic_versions(
    app, client, auth
):
    # Each thread has an engine of its own, as a node on another machine has.
    claimed = [claim_one(app, client, auth, owner=f"node-{n}")[0] for n in range(24)]
    problems: list[BaseException] = []
    barrier = threading.Barrier(len(claimed))

    def finish(training_id: int, owner: str) -> None:
        database = db.Database(app.config["DATABASE_URL"])
        try:
            with database.session() as session:
                barrier.wait(timeout=30)
                assert queue.finish(session, training_id, owner, results={})
        except BaseException as exc:  # reported by the main thread
            problems.append(exc)
        finally:
            database.dispose()

    threads = [
        threading.Thread(target=finish, args=(training_id, f"node-{n}"))
        for n, training_id in enumerate(claimed)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert problems == []
    versions = sorted(int(row(app, training_id).version) for training_id in claimed)
    assert versions == list(range(1, len(claimed) + 1))


def test_claim_takes_the_oldest_first_and_sets_the_lease(app, client, auth):
    first = create(client, auth)
    create(client, auth)
    now = utcnow()

    claimed = claim(app, "owner-a", now, lease_seconds=45)

    assert claimed.id == first
    assert claimed.status == "running"
    assert claimed.lease_owner == "owner-a"
    assert claimed.lease_expires_at == now + timedelta(seconds=45)
    assert claimed.progress == 0.0


def test_claim_with_nothing_due_returns_none(app, client, auth):
    assert claim(app, "owner-a", utcnow()) is None


def test_scheduled_training_is_claimed_only_once_promoted_at_its_time(app, client, auth):
    now = utcnow()
    at = now + timedelta(hours=1)
    training_id = create(client, auth, scheduled_at=format_timestamp(at))
    assert row(app, training_id).status == "scheduled"

    with db.database(app).session() as session:
        assert queue.next_due_at(session) == at
        assert queue.claim_next(session, "owner-a", lease_seconds=LEASE, now=at) is None
        assert queue.promote_due(session, now=at - timedelta(milliseconds=1)) == 0
        assert queue.claim_next(session, "owner-a", lease_seconds=LEASE, now=now) is None
    assert row(app, training_id).status == "scheduled"

    with db.database(app).session() as session:
        assert queue.promote_due(session, now=at) == 1
    assert row(app, training_id).status == "queued"

    claimed = claim(app, "owner-a", at)
    assert claimed.id == training_id
    assert claimed.status == "running"


def test_next_due_at_is_the_earliest_of_schedules_and_back_offs(app, client, auth):
    with db.database(app).session() as session:
        assert queue.next_due_at(session) is None
    now = utcnow()
    later = now + timedelta(hours=2)
    create(client, auth, scheduled_at=format_timestamp(later))
    with db.database(app).session() as session:
        assert queue.next_due_at(session) == later

    # A training waiting out a back-off that ends sooner is what is due next.
    training_id, claimed_at = claim_one(app, client, auth)
    with db.database(app).session() as session:
        queue.retry_or_fail(
            session, training_id, 1, "owner-a", "boom", policy=RetryPolicy(3, 60), now=claimed_at
        )
        assert queue.next_due_at(session) == claimed_at + timedelta(seconds=60)


# Retries -----------------------------------------------------------------------------------


def test_retry_backs_off_exponentially_then_fails_when_attempts_are_used_up(app, client, auth):
    base = 10.0
    training_id, now = claim_one(app, client, auth, owner="owner-1")

    for attempt in (1, 2):
        owner = f"owner-{attempt}"
        with db.database(app).session() as session:
            status = queue.retry_or_fail(
                session,
                training_id,
                attempt,
                owner,
                f"failure {attempt}",
                policy=RetryPolicy(3, base),
                now=now,
            )
        assert status == "queued"
        training = row(app, training_id)
        wait = timedelta(seconds=base * 2 ** (attempt - 1))  # 10 s, then 20 s
        assert training.status == "queued"
        assert training.attempts == attempt
        assert training.due_at == now + wait
        assert training.error == f"failure {attempt}"
        assert training.lease_owner is None
        assert training.lease_expires_at is None

        assert claim(app, "early", now + wait - timedelta(milliseconds=1)) is None
        assert row(app, training_id).status == "queued"
        now = now + wait
        claimed = claim(app, f"owner-{attempt + 1}", now)
        assert claimed.id == training_id
        assert claimed.attempts == attempt + 1
        assert claimed.error is None

    with db.database(app).session() as session:
        status = queue.retry_or_fail(
            session,
            training_id,
            3,
            "owner-3",
            "failure 3",
            policy=RetryPolicy(3, base),
            now=now,
        )
    assert status == "failed"
    training = row(app, training_id)
    assert training.status == "failed"
    assert training.attempts == 3
    assert "failure 3" in training.error
    assert "3 attempts" in training.error
    assert training.finished_at == now
    assert training.lease_owner is None
    assert claim(app, "late", now + timedelta(days=1)) is None


def test_retry_by_an_owner_that_lost_the_training_changes_nothing(app, client, auth):
    training_id, now = claim_one(app, client, auth, owner="owner-a")
    with db.database(app).session() as session:
        status = queue.retry_or_fail(
            session, training_id, 1, "owner-b", "x", policy=RetryPolicy(3, 1), now=now
        )
    assert status is None
    assert row(app, training_id).status == "running"
    assert row(app, training_id).lease_owner == "owner-a"


# Leases ------------------------------------------------------------------------------------


def test_expired_lease_is_requeued_with_its_attempt_counted(app, client, auth):
    training_id, now = claim_one(app, client, auth)
    expired = now + timedelta(seconds=LEASE + 1)

    with db.database(app).session() as session:
        # Not yet expired: nothing to recover.
        assert queue.reap_expired(session, policy=RetryPolicy(3, 5), now=now) == 0
        assert queue.reap_expired(session, policy=RetryPolicy(3, 5), now=expired) == 1
    training = row(app, training_id)
    assert training.status == "queued"
    assert training.attempts == 1
    assert training.lease_owner is None
    assert training.lease_expires_at is None
    assert training.due_at == expired + timedelta(seconds=5)
    assert "stopped answering" in training.error

    claimed = claim(app, "owner-b", expired + timedelta(seconds=5))
    assert claimed.id == training_id
    assert claimed.attempts == 2


def test_expired_lease_fails_the_training_when_attempts_are_used_up(app, client, auth):
    training_id, now = claim_one(app, client, auth)
    expired = now + timedelta(seconds=LEASE + 1)

    with db.database(app).session() as session:
        assert queue.reap_expired(session, policy=RetryPolicy(1, 5), now=expired) == 1
    training = row(app, training_id)
    assert training.status == "failed"
    assert training.attempts == 1
    assert "1 attempts" in training.error
    assert training.finished_at == expired
    assert training.lease_owner is None


def test_heartbeat_renews_the_lease_so_reaping_leaves_it_alone(app, client, auth):
    training_id, now = claim_one(app, client, auth, owner="owner-a")
    beat = now + timedelta(seconds=20)

    with db.database(app).session() as session:
        renewed = queue.heartbeat(
            session, training_id, "owner-a", lease_seconds=LEASE, now=beat, progress=0.5
        )
        assert renewed is True
        # Past the first lease, but within the renewed one.
        assert (
            queue.reap_expired(
                session, policy=RetryPolicy(3, 5), now=now + timedelta(seconds=LEASE + 1)
            )
            == 0
        )
    training = row(app, training_id)
    assert training.status == "running"
    assert training.lease_owner == "owner-a"
    assert training.lease_expires_at == beat + timedelta(seconds=LEASE)
    assert training.progress == 0.5


def test_heartbeat_by_another_owner_is_refused_and_changes_nothing(app, client, auth):
    training_id, now = claim_one(app, client, auth, owner="owner-a")
    before = row(app, training_id).lease_expires_at

    with db.database(app).session() as session:
        renewed = queue.heartbeat(
            session,
            training_id,
            "owner-b",
            lease_seconds=LEASE,
            now=now + timedelta(seconds=20),
            progress=0.9,
        )
    assert renewed is False
    training = row(app, training_id)
    assert training.lease_owner == "owner-a"
    assert training.lease_expires_at == before
    assert training.progress == 0.0


def test_heartbeat_of_a_queued_training_is_refused(app, client, auth):
    training_id = create(client, auth)
    with db.database(app).session() as session:
        assert not queue.heartbeat(session, training_id, "owner-a", lease_seconds=LEASE)
    assert row(app, training_id).status == "queued"


# Cancellation and shutdown -----------------------------------------------------------------


def test_a_cancelled_run_can_no_longer_record_anything(app, client, auth):
    training_id, now = claim_one(app, client, auth, owner="owner-a")
    with db.database(app).session() as session:
        cancelled = queue.cancel_training(session, training_id, now=now)
    assert cancelled.status == "cancelled"
    assert cancelled.lease_owner is None

    with db.database(app).session() as session:
        assert not queue.heartbeat(session, training_id, "owner-a", lease_seconds=LEASE)
        assert not queue.finish(
            session, training_id, "owner-a", results={"accuracy": 0.9, "binary_path": "x/m.bin"}
        )
        assert not queue.fail(session, training_id, "owner-a", "boom")
        assert not queue.requeue(session, training_id, "owner-a")
        assert (
            queue.retry_or_fail(
                session, training_id, 1, "owner-a", "boom", policy=RetryPolicy(3, 1)
            )
            is None
        )
    training = row(app, training_id)
    assert training.status == "cancelled"
    assert training.accuracy is None
    assert training.binary_path is None
    assert training.error is None
    assert training.finished_at == now
    assert claim(app, "owner-b", now + timedelta(days=1)) is None


def test_finish_and_fail_record_the_outcome_for_the_owner(app, client, auth):
    done, now = claim_one(app, client, auth, owner="owner-a")
    with db.database(app).session() as session:
        assert not queue.finish(session, done, "owner-b", results={"accuracy": 0.5})
        assert queue.finish(
            session,
            done,
            "owner-a",
            results={"accuracy": 0.5, "metrics": {"auc": 0.6}, "unknown": 1},
            now=now,
        )
    training = row(app, done)
    assert (training.status, training.accuracy, training.progress) == ("succeeded", 0.5, 1.0)
    assert training.metrics == '{"auc": 0.6}'
    assert training.finished_at == now
    assert training.lease_owner is None

    failed, now = claim_one(app, client, auth, owner="owner-c")
    with db.database(app).session() as session:
        assert queue.fail(session, failed, "owner-c", "it broke", now=now)
        # Once failed, it is no one's any more.
        assert not queue.fail(session, failed, "owner-c", "again")
    training = row(app, failed)
    assert (training.status, training.error, training.finished_at) == ("failed", "it broke", now)


def test_requeue_on_shutdown_refunds_the_attempt(app, client, auth):
    training_id, now = claim_one(app, client, auth, owner="owner-a")
    with db.database(app).session() as session:
        queue.retry_or_fail(
            session, training_id, 1, "owner-a", "boom", policy=RetryPolicy(3, 10), now=now
        )
    later = now + timedelta(seconds=10)
    assert claim(app, "owner-b", later).attempts == 2
    with db.database(app).session() as session:
        queue.heartbeat(
            session, training_id, "owner-b", lease_seconds=LEASE, now=later, started_at=later
        )
        assert not queue.requeue(session, training_id, "owner-c")
        assert queue.requeue(session, training_id, "owner-b", now=later, log="partial log")

    training = row(app, training_id)
    assert training.status == "queued"
    assert training.attempts == 1
    assert training.lease_owner is None
    assert training.lease_expires_at is None
    assert training.due_at == later  # due again at once
    assert training.started_at is None
    assert training.log == "partial log"
    # No back-off: it may run again at once.
    assert claim(app, "owner-d", later).attempts == 2


# The HTTP view -----------------------------------------------------------------------------


def cancel(client, headers, training_id, alias=False):
    path = f"/trainings/cancel/{training_id}" if alias else f"/trainings/{training_id}/cancel"
    return client.post(path, headers=headers)


@pytest.mark.parametrize("alias", [False, True], ids=["cancel-suffix", "cancel-prefix"])
@pytest.mark.parametrize("scheduled", [False, True], ids=["queued", "scheduled"])
def test_cancel_a_pending_training(app, client, auth, alias, scheduled):
    fields = {"scheduled_at": "2999-01-01T00:00:00.000Z"} if scheduled else {}
    training_id = create(client, auth, **fields)

    response = cancel(client, auth, training_id, alias=alias)

    assert response.status_code == 200, response.json
    assert response.json["id"] == str(training_id)
    assert response.json["status"] == "cancelled"
    assert response.json["finished_at"] is not None
    assert client.get(f"/trainings/{training_id}", headers=auth).json["status"] == "cancelled"
    with db.database(app).session() as session:
        assert queue.promote_due(session, now=utcnow() + timedelta(days=400_000)) == 0
    assert claim(app, "owner-a", utcnow()) is None


def test_cancel_a_running_training(app, client, auth):
    training_id, _ = claim_one(app, client, auth)

    response = cancel(client, auth, training_id)

    assert response.status_code == 200
    assert response.json["status"] == "cancelled"
    assert row(app, training_id).lease_owner is None


@pytest.mark.parametrize("outcome", ["succeeded", "failed", "cancelled"])
def test_cancel_a_finished_training_is_409(app, client, auth, outcome):
    training_id, _ = claim_one(app, client, auth, owner="owner-a")
    with db.database(app).session() as session:
        if outcome == "succeeded":
            assert queue.finish(session, training_id, "owner-a", results={})
        elif outcome == "failed":
            assert queue.fail(session, training_id, "owner-a", "boom")
        else:
            queue.cancel_training(session, training_id)
    before = client.get(f"/trainings/{training_id}", headers=auth).json

    for alias in (False, True):
        response = cancel(client, auth, training_id, alias=alias)
        assert response.status_code == 409
        assert set(response.json) == {"code", "message"}
        assert response.json["code"] == 409
        assert outcome in response.json["message"]
    assert client.get(f"/trainings/{training_id}", headers=auth).json == before


@pytest.mark.parametrize("alias", [False, True], ids=["cancel-suffix", "cancel-prefix"])
@pytest.mark.parametrize("training_id", ["999", "abc", "0"])
def test_cancel_an_unknown_training_is_404(client, auth, alias, training_id):
    response = cancel(client, auth, training_id, alias=alias)
    assert response.status_code == 404
    assert response.json == {"code": 404, "message": "the resource was not found"}


@pytest.mark.parametrize("alias", [False, True], ids=["cancel-suffix", "cancel-prefix"])
def test_cancel_needs_a_write_token(app, client, auth, read_token, alias):
    training_id = create(client, auth)

    for headers in (bearer(read_token), {}):
        response = cancel(client, headers, training_id, alias=alias)
        assert response.status_code == 403
        assert response.json["code"] == 403
    assert row(app, training_id).status == "queued"


def test_cancel_is_one_conditional_update(app, client, auth):
    """Only one of two cancellations of the same training wins."""
    training_id = create(client, auth)
    assert cancel(client, auth, training_id).status_code == 200
    assert cancel(client, auth, training_id).status_code == 409
    with db.database(app).session() as session:
        assert session.get(Training, training_id).status == "cancelled"


def test_reaping_skips_a_running_training_that_no_run_claimed(app, client, auth):
    training_id = create(client, auth)
    now = utcnow()
    set_columns(
        app, training_id, status="running", lease_owner=None, lease_expires_at=now
    )  # edited by hand: running, but no run's claim
    with db.database(app).session() as session:
        assert (
            queue.reap_expired(session, policy=RetryPolicy(3, 5), now=now + timedelta(seconds=1))
            == 0
        )
    assert row(app, training_id).status == "running"
