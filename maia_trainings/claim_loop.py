"""The one claim loop (the server's, run-pending's, the worker node's) and run-pending's drive.

The database is the queue. :class:`ClaimLoop` is how work is taken from it, everywhere (the
server's dispatcher, run-pending, and the worker node to come): create the trainings of the
schedules' due fires, queue the scheduled trainings whose time has come, recover runs whose
lease expired, claim while a slot is free, run each claimed training in a pool thread, and let
that thread claim the next one when it is done.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

from flask import Flask
from sqlalchemy.orm import Session

from . import db, metrics, queue, schedules
from .children import Children
from .config import MISFIRE_GRACE
from .models import Status, Training, utcnow
from .runner import Outcome, Runner, RunSettings, Shutdown, new_owner

log = logging.getLogger(__name__)

# Runs a claimed training (the training, its claim's owner) to its end; never raises.
RunFunction = Callable[[Training, str], Outcome]
Clock = Callable[[], datetime]


class ClaimLoop:
    """Claims due trainings while a slot is free and runs each in a pool thread.

    ``run`` runs one claimed training (a :class:`~maia_trainings.runner.Runner`'s, or a fake
    in tests); ``clock`` is the time the queue is looked at (injectable, so that tests make
    schedules come due without sleeping). ``among`` may narrow what is claimed (run-pending's
    ``--limit``); ``on_claimed`` hears of every claim, ``on_finished`` of every run's outcome
    (in the thread that ran it), and ``on_slot_free`` that a slot is free again, and whether
    its runs left a retry waiting out a back-off. ``misfire_grace`` is how old (seconds) a
    schedule's missed fire may be and still make its training. ``figures`` counts the runs
    started and how they ended (see ``metrics``).
    """

    def __init__(
        self,
        database: db.Database,
        *,
        workers: int,
        settings: RunSettings,
        run: RunFunction,
        shutdown: Shutdown,
        clock: Clock = utcnow,
        among: Callable[[], list[int] | None] | None = None,
        on_claimed: Callable[[Training], None] | None = None,
        on_finished: Callable[[Training, Outcome], None] | None = None,
        on_slot_free: Callable[[bool], None] | None = None,
        children: Children | None = None,
        misfire_grace: float = MISFIRE_GRACE,
        figures: metrics.Metrics | None = None,
    ) -> None:
        self.database = database
        self.workers = workers
        self.settings = settings
        self.run = run
        self.shutdown = shutdown
        self.clock = clock
        self.among = among
        self.on_claimed = on_claimed
        self.on_finished = on_finished
        self.on_slot_free = on_slot_free
        self.children = children
        self.misfire_grace = misfire_grace
        self.figures = figures
        self._busy = 0
        self._busy_changed = threading.Condition()
        self._running: set[int] = set()  # the trainings this loop's workers run now
        # Turns take turns, so that two wake-ups never claim past the free slots.
        self._turn_lock = threading.Lock()
        self._claim_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="maia-run")

    @classmethod
    def for_app(
        cls,
        app: Flask,
        *,
        workers: int,
        shutdown: Shutdown,
        run: RunFunction | None = None,
        **options: Any,
    ) -> ClaimLoop:
        """The loop of ``app``, its trainings run by a Runner in children this loop owns (and
        lets go when it stops); ``run`` replaces the Runner (a fake, in tests)."""
        settings, database, children = RunSettings.from_app(app), db.database(app), None
        figures = metrics.of(app)
        if run is None:
            children = Children()
            run = Runner(settings, database, children, shutdown, figures=figures).run
        return cls(
            database,
            workers=workers,
            settings=settings,
            run=run,
            shutdown=shutdown,
            children=children,
            misfire_grace=float(app.config["MISFIRE_GRACE"]),
            figures=figures,
            **options,
        )

    @property
    def busy(self) -> int:
        return self._busy

    def running(self) -> list[int]:
        """The ids of the trainings this loop runs now."""
        with self._busy_changed:
            return sorted(self._running)

    def turn(self, *, housekeeping: bool = True) -> int:
        """Claim due trainings while a slot is free; returns how many were claimed.

        With ``housekeeping``, first create the trainings of the schedules' due fires, queue
        the scheduled trainings whose time has come and recover the runs whose lease expired.
        """
        claimed = 0
        with self._turn_lock, self.database.session() as session:
            if self.shutdown.requested.is_set():
                return 0
            if housekeeping:
                schedules.fire_due(session, now=self.clock(), grace=self.misfire_grace)
                queue.promote_due(session, now=self.clock())
                queue.reap_expired(
                    session, policy=self.settings.retry, now=self.clock(), sparing=self.running()
                )
            while self._busy < self.workers:
                training = self._claim(session)
                if training is None:
                    break
                with self._busy_changed:
                    self._busy += 1
                try:
                    self._pool.submit(self._work, training)
                except RuntimeError:  # the interpreter is shutting down: its lease will lapse
                    self._slot_freed()
                    raise
                claimed += 1
        return claimed

    def _claim(self, session: Session) -> Training | None:
        # With ``among``, one claim at a time: what it allows depends on the claims before it
        # (run-pending's limit), which a worker claiming its next training would race.
        with self._claim_lock if self.among is not None else contextlib.nullcontext():
            among = self.among() if self.among is not None else None
            if among == []:
                return None
            training = queue.claim_next(
                session,
                new_owner(self.settings.node_name),
                lease_seconds=self.settings.lease_seconds,
                among=among,
                now=self.clock(),
            )
            if training is not None and self.on_claimed is not None:
                self.on_claimed(training)
        return training

    def _work(self, training: Training | None) -> None:
        """Run ``training``, then claim and run the next due one while there is one.

        A worker that finishes claims its next training itself, in its own thread: going back
        through a wake-up cost a few milliseconds between trainings, a fifth of a no-op
        training's whole cycle (measured 2026-11-28).
        """
        retried = False
        try:
            while training is not None:
                assert training.lease_owner is not None
                with self._busy_changed:
                    self._running.add(training.id)
                if self.figures is not None:
                    self.figures.run_started()
                began = time.monotonic()
                try:
                    outcome = self.run(training, training.lease_owner)
                finally:
                    with self._busy_changed:
                        self._running.discard(training.id)
                if self.figures is not None:
                    self.figures.run_ended(outcome.ending, outcome.status, time.monotonic() - began)
                left = outcome.status or "stopped (cancelled or taken over)"
                log.info("training %s: %s (%s)", training.id, left, outcome.ending)
                retried = retried or outcome.status is Status.QUEUED
                if self.on_finished is not None:
                    self.on_finished(training, outcome)
                if self.shutdown.requested.is_set():
                    break
                # No turn lock: this slot stays busy, so it cannot claim past the free slots,
                # and a shutdown holds that lock while it waits for the slots to empty.
                with self.database.session() as session:
                    training = self._claim(session)
        except Exception:
            log.exception("a worker failed between trainings; the next poll goes on")
        finally:
            self._slot_freed()
            if self.on_slot_free is not None:
                self.on_slot_free(retried)

    def _slot_freed(self) -> None:
        with self._busy_changed:
            self._busy -= 1
            self._busy_changed.notify_all()

    def wait_for_a_slot(self, busy: int, timeout: float) -> None:
        """Wait until fewer than ``busy`` slots are busy (or ``timeout`` seconds)."""
        with self._busy_changed:
            self._busy_changed.wait_for(lambda: self._busy < busy, timeout)

    def stop(self) -> None:
        """Claim nothing more; wait for the running trainings (they end by the shutdown's
        deadline), then let the pool's threads and the waiting children go."""
        with self._turn_lock, self._busy_changed:
            self._busy_changed.wait_for(lambda: self._busy == 0)
        self._pool.shutdown(wait=True)
        if self.children is not None:
            self.children.close()


def run_pending(
    app: Flask,
    *,
    workers: int,
    limit: int | None = None,
    horizon: float = 0.0,
    shutdown: Shutdown | None = None,
    on_finished: Callable[[Training, Outcome], None] | None = None,
    run: RunFunction | None = None,
    clock: Clock = utcnow,
) -> dict[int, Outcome | None]:
    """Claim and run due trainings in the foreground until none is left; the CLI's run-pending.

    Trainings this call ran that were queued again for a retry are waited for and run again;
    with ``horizon`` seconds, trainings scheduled within that time are waited for too. Past
    ``limit`` trainings, only this call's own retries are taken up again. Returns each
    training's last outcome.
    """
    shutdown = shutdown or Shutdown()
    database = db.database(app)
    horizon_end = clock() + timedelta(seconds=horizon)
    outcomes: dict[int, Outcome | None] = {}  # None while it runs
    outcomes_lock = threading.Lock()

    def retrying() -> list[int]:
        with outcomes_lock:
            return [
                tid for tid, o in outcomes.items() if o is not None and o.status is Status.QUEUED
            ]

    def among() -> list[int] | None:
        return retrying() if limit is not None and len(outcomes) >= limit else None

    def finished(training: Training, outcome: Outcome) -> None:
        with outcomes_lock:
            outcomes[training.id] = outcome
        if on_finished is not None and outcome.status is not Status.QUEUED:
            on_finished(training, outcome)

    def claimed(training: Training) -> None:
        with outcomes_lock:
            outcomes[training.id] = None

    loop = ClaimLoop.for_app(
        app,
        workers=workers,
        shutdown=shutdown,
        run=run,
        clock=clock,
        among=among,
        on_claimed=claimed,
        on_finished=finished,
    )
    try:
        while not shutdown.requested.is_set():
            if loop.busy < workers:
                loop.turn()
            busy = loop.busy  # read once: a run that ends from now on ends the wait
            if busy:
                loop.wait_for_a_slot(busy, timeout=1.0)
                continue
            room = limit is None or len(outcomes) < limit
            with database.session() as session:
                wanted = queue.earliest_wanted(
                    session,
                    queued_ids=retrying(),
                    scheduled_before=horizon_end if horizon > 0 and room else None,
                    now=clock(),
                )
            if wanted is None:
                break
            # Sleep towards it in short steps, so that a signal is answered promptly.
            pause = min(max((wanted - clock()).total_seconds(), 0.0), 1.0)
            shutdown.requested.wait(pause)
    finally:
        loop.stop()
    return outcomes
