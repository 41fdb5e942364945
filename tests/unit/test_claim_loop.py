"""The one claim loop, in-process: a fake runner and an injectable clock, no child processes.

The end-to-end behaviour (real children, real servers) is in tests/integration; these pin
down what the loop itself decides: what it claims, when, how many at once, and what it does
with each outcome.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime, timedelta

import helpers
import pytest

from maia_trainings import claim_loop, db, dispatcher, queue
from maia_trainings.fields import format_timestamp
from maia_trainings.models import Status, Training, utcnow
from maia_trainings.retry import Ending
from maia_trainings.runner import Outcome, RunSettings, Shutdown


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or utcnow()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


class FakeRunner:
    """Runs a claimed training by recording it and ending it as ``ending`` says."""

    def __init__(self, app, ending: Ending = Ending.SUCCEEDED) -> None:
        self.database = db.database(app)
        self.settings = RunSettings.from_app(app)
        self.ending = ending
        self.ran: list[tuple[int, str]] = []
        self.release = threading.Event()
        self.release.set()
        self.lock = threading.Lock()

    def __call__(self, training: Training, owner: str) -> Outcome:
        assert self.release.wait(10)
        with self.lock:
            self.ran.append((training.id, owner))
        with self.database.session() as session:
            if self.ending is Ending.SUCCEEDED:
                done = queue.finish(session, training.id, owner, results={})
                return Outcome(self.ending, Status.SUCCEEDED if done else None)
            status = queue.retry_or_fail(
                session, training.id, training.attempts, owner, "flaky", policy=self.settings.retry
            )
            return Outcome(self.ending, status)

    def ids(self) -> list[int]:
        with self.lock:
            return [training_id for training_id, _ in self.ran]


def create(client, auth, **fields) -> int:
    """POST a training (asserting 200); its id as the loop sees it."""
    return int(helpers.create(client, auth, **fields)["id"])


def status_of(client, auth, training_id: int) -> str:
    return helpers.fetch(client, auth, training_id)["status"]


def make_loop(app, run, *, workers=2, clock=None, **options) -> claim_loop.ClaimLoop:
    return claim_loop.ClaimLoop(
        db.database(app),
        workers=workers,
        settings=RunSettings.from_app(app),
        run=run,
        shutdown=options.pop("shutdown", None) or Shutdown(),
        clock=clock or utcnow,
        **options,
    )


def wait_idle(loop: claim_loop.ClaimLoop, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while (busy := loop.busy) and time.monotonic() < deadline:
        loop.wait_for_a_slot(busy, 0.1)
    assert loop.busy == 0


@pytest.fixture
def fake(app) -> FakeRunner:
    return FakeRunner(app)


def test_a_turn_claims_the_oldest_due_training_and_runs_it(app, client, auth, fake):
    first, second = create(client, auth), create(client, auth)
    loop = make_loop(app, fake, workers=1)
    assert loop.turn() == 1
    wait_idle(loop)
    loop.stop()
    # One turn, one slot: the worker claimed the second itself when the first was done.
    assert fake.ids() == [first, second]
    assert {status_of(client, auth, t) for t in (first, second)} == {"succeeded"}
    owners = [owner for _, owner in fake.ran]
    assert len(set(owners)) == 2  # each attempt has its own claim


def test_never_claims_past_the_free_slots(app, client, auth, fake):
    ids = [create(client, auth) for _ in range(5)]
    fake.release.clear()  # runs wait until released
    loop = make_loop(app, fake, workers=2)
    assert loop.turn() == 2
    assert loop.turn() == 0  # both slots are busy
    assert [status_of(client, auth, t) for t in ids].count("running") == 2
    fake.release.set()
    wait_idle(loop)
    loop.stop()
    assert sorted(fake.ids()) == ids
    assert [status_of(client, auth, t) for t in ids] == ["succeeded"] * 5


def test_a_scheduled_training_is_claimed_when_the_clock_reaches_its_time(app, client, auth, fake):
    clock = Clock()
    at = clock.now + timedelta(hours=1)
    training_id = create(client, auth, scheduled_at=format_timestamp(at))
    loop = make_loop(app, fake, clock=clock)
    assert loop.turn() == 0
    clock.advance(minutes=59, seconds=59)
    assert loop.turn() == 0
    assert status_of(client, auth, training_id) == "scheduled"
    clock.advance(seconds=1)
    assert loop.turn() == 1
    wait_idle(loop)
    loop.stop()
    assert fake.ids() == [training_id]


def test_a_turn_without_housekeeping_leaves_scheduled_trainings_alone(app, client, auth, fake):
    clock = Clock()
    create(client, auth, scheduled_at=format_timestamp(clock.now + timedelta(seconds=1)))
    clock.advance(seconds=2)
    loop = make_loop(app, fake, clock=clock)
    assert loop.turn(housekeeping=False) == 0  # a wake-up for queued work only claims
    assert loop.turn(housekeeping=True) == 1
    wait_idle(loop)
    loop.stop()


def test_an_expired_lease_is_recovered_and_run_again_after_its_back_off(app, client, auth, fake):
    training_id = create(client, auth)
    clock = Clock()  # after the create: a training is due from when it was queued
    settings = RunSettings.from_app(app)
    with db.database(app).session() as session:  # a run that died holding its claim
        assert queue.claim_next(session, "dead-host:1:x", lease_seconds=30, now=clock.now)
    loop = make_loop(app, fake, clock=clock)
    assert loop.turn() == 0  # its lease still holds
    clock.advance(seconds=31)
    assert loop.turn() == 0  # recovered, and waiting out its back-off
    assert status_of(client, auth, training_id) == "queued"
    clock.advance(seconds=settings.retry.base_delay)
    assert loop.turn() == 1
    wait_idle(loop)
    loop.stop()
    body = client.get(f"/trainings/{training_id}", headers=auth).json
    assert (body["status"], body["attempts"]) == ("succeeded", 2)


def test_after_a_shutdown_request_nothing_more_is_claimed(app, client, auth, fake):
    first, second = create(client, auth), create(client, auth)
    shutdown = Shutdown()
    fake.release.clear()
    loop = make_loop(app, fake, workers=1, shutdown=shutdown)
    assert loop.turn() == 1
    shutdown.request(30)
    fake.release.set()
    wait_idle(loop)
    assert loop.turn() == 0
    loop.stop()
    assert fake.ids() == [first]  # the worker did not go on with the next one
    assert status_of(client, auth, second) == "queued"


def test_the_dispatcher_runs_a_queued_training_when_woken(app, client, auth, fake, monkeypatch):
    # The poll is far away: only the wake-up from the create can start the run in time.
    app.config.update(POLL_INTERVAL=3600)
    started = dispatcher.Dispatcher(app, run=fake)
    monkeypatch.setattr(dispatcher, "_started", started)
    started.start()
    try:
        time.sleep(0.2)  # the first poll's turn, which finds nothing
        training_id = create(client, auth)
        deadline = time.monotonic() + 5
        while training_id not in fake.ids() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert fake.ids() == [training_id]
    finally:
        started.shutdown(0)
    assert status_of(client, auth, training_id) == "succeeded"


def test_run_pending_runs_everything_due_and_waits_for_its_own_retries(app, client, auth):
    app.config.update(RETRY_DELAY=0.05, MAX_ATTEMPTS=2)
    flaky = FakeRunner(app, ending=Ending.RETRY)
    ids = [create(client, auth) for _ in range(3)]
    outcomes = claim_loop.run_pending(app, workers=2, run=flaky)
    # Each was retried once after its back-off, then failed for good: six runs in all.
    assert sorted(flaky.ids()) == sorted(ids * 2)
    assert {o.status for o in outcomes.values()} == {Status.FAILED}
    assert [status_of(client, auth, t) for t in ids] == ["failed"] * 3


def test_run_pending_with_a_limit_takes_only_that_many(app, client, auth, fake):
    ids = [create(client, auth) for _ in range(3)]
    outcomes = claim_loop.run_pending(app, workers=2, limit=2, run=fake)
    assert sorted(outcomes) == ids[:2]
    assert [status_of(client, auth, t) for t in ids] == ["succeeded", "succeeded", "queued"]


def test_run_pending_waits_for_trainings_scheduled_within_its_horizon(app, client, auth, fake):
    clock = Clock()
    soon = create(client, auth, scheduled_at=format_timestamp(clock.now + timedelta(seconds=5)))
    create(client, auth, scheduled_at=format_timestamp(clock.now + timedelta(hours=1)))
    ticking = threading.Thread(target=lambda: (time.sleep(0.2), clock.advance(seconds=6)))
    ticking.start()
    outcomes = claim_loop.run_pending(app, workers=1, horizon=10, run=fake, clock=clock)
    ticking.join()
    assert list(outcomes) == [soon]
