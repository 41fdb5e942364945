"""The in-process executor: APScheduler wakes a dispatcher that claims due trainings and runs them.

The database is the queue; APScheduler only decides when to look (at once when a training is
created, at the next ``scheduled_at``, and every ``POLL_INTERVAL`` for work other processes
wrote and for runs whose process died) and runs each claimed training in its thread pool.
One dispatcher per process: :func:`start` is idempotent.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import ThreadPoolExecutor as FuturesPool
from concurrent.futures import wait as futures_wait
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from werkzeug.serving import is_running_from_reloader

from . import db, runner, store
from .models import QUEUED, RUNNING, SCHEDULED, Training, utcnow

log = logging.getLogger(__name__)


class Dispatcher:
    """Claims due trainings while a worker is free and hands each to a pool thread."""

    def __init__(self, app: Flask) -> None:
        self.app = app
        self.pid = os.getpid()
        self.settings = runner.RunSettings.from_app(app)
        self.database = db.database(app)
        self.workers = int(app.config["WORKERS"])
        self.poll_interval = float(app.config["POLL_INTERVAL"])
        self.grace = float(app.config["SHUTDOWN_GRACE"])
        self.shutdown_signal = runner.Shutdown()
        self._busy = 0
        self._busy_changed = threading.Condition()
        # When the "next-due" wake-up is set for; None when none is.
        self._next_due: datetime | None = None
        self._next_due_lock = threading.Lock()
        # Dispatches take turns, so that two wake-ups never claim past the free workers.
        self._dispatch_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={
                "default": ThreadPoolExecutor(2),
                "runs": ThreadPoolExecutor(self.workers),
            },
            job_defaults={"coalesce": True, "max_instances": 8, "misfire_grace_time": None},
            timezone=UTC,
        )

    @property
    def stopping(self) -> bool:
        return self.shutdown_signal.requested.is_set()

    def start(self) -> None:
        self.scheduler.start()
        self.scheduler.add_job(
            self.dispatch,
            "interval",
            seconds=self.poll_interval,
            id="poll",
            next_run_time=utcnow(),
        )
        log.info(
            "dispatcher started: %d workers, polling every %gs", self.workers, self.poll_interval
        )

    def wake(self, *, housekeeping: bool = False) -> None:
        """Claim due work now (a training was queued, or a worker is free).

        With ``housekeeping``, also queue the scheduled trainings whose time has come, recover
        dead runs and set the next timed look, as the poll and the timed looks always do.
        """
        if not self.stopping:
            self.scheduler.add_job(
                self.dispatch,
                kwargs={"housekeeping": housekeeping},
                id="wake-full" if housekeeping else "wake",
                replace_existing=True,
            )

    def due_at(self, moment: datetime, *, replace: bool = False) -> None:
        """Look for due work at ``moment`` (unless an earlier look is already set)."""
        with self._next_due_lock:
            pending = self._next_due is not None and self._next_due > utcnow()
            if self.stopping or (not replace and pending and self._next_due <= moment):
                return  # a look at or before then is already set
            self._next_due = moment
            self.scheduler.add_job(
                self.dispatch, "date", run_date=moment, id="next-due", replace_existing=True
            )

    def dispatch(self, housekeeping: bool = True) -> None:
        with self._dispatch_lock:
            if self.stopping:
                return
            try:
                self._claim_while_free(housekeeping)
            except Exception:
                log.exception("dispatch failed; the next poll tries again")

    def _claim_while_free(self, housekeeping: bool) -> None:
        settings = self.settings
        with self.database.session() as session:
            if housekeeping:
                store.promote_due(session)
                store.reap_expired(
                    session, max_attempts=settings.max_attempts, base_delay=settings.retry_delay
                )
            while self._busy < self.workers:
                owner = runner.new_owner()
                training = store.claim_next(session, owner, lease_seconds=settings.lease_seconds)
                if training is None:
                    break
                with self._busy_changed:
                    self._busy += 1
                self.scheduler.add_job(self._run, args=[training, owner], executor="runs")
            next_due = store.next_due_at(session) if housekeeping else None
        if next_due is not None:
            self.due_at(next_due, replace=True)

    def _run(self, training: Training, owner: str) -> None:
        """Run ``training``, then go on with the next due one while there is one.

        A worker that finishes claims its next training itself, in its own thread: going back
        through a wake-up (an APScheduler job, then a dispatch) cost a few milliseconds between
        trainings, a fifth of a no-op training's whole cycle.
        """
        retried = False
        next_up: tuple[Training, str] | None = (training, owner)
        try:
            while next_up is not None:
                training, owner = next_up
                status = runner.run_claimed(self.app, training, owner, self.shutdown_signal)
                log.info(
                    "training %s: %s", training.id, status or "stopped (cancelled or taken over)"
                )
                retried = retried or status == QUEUED
                next_up = self._claim_for_this_worker()
        except Exception:
            log.exception("a worker failed between trainings; the next poll goes on")
        finally:
            with self._busy_changed:
                self._busy -= 1
                self._busy_changed.notify_all()
            # A training back in the queue waits out a back-off: its time needs a timed look.
            self.wake(housekeeping=retried)

    def _claim_for_this_worker(self) -> tuple[Training, str] | None:
        # No dispatch lock: this worker stays busy, so it cannot claim past the free workers,
        # and a shutdown holds that lock while it waits for the workers to end.
        if self.stopping:
            return None
        owner = runner.new_owner()
        with self.database.session() as session:
            training = store.claim_next(session, owner, lease_seconds=self.settings.lease_seconds)
        return None if training is None else (training, owner)

    def shutdown(self, grace: float | None = None) -> None:
        """Stop claiming; running trainings get ``grace`` seconds, then go back to the queue."""
        if self.stopping and grace is None:
            return
        self.shutdown_signal.request(self.grace if grace is None else grace)
        # APScheduler's shutdown(wait=True) holds its job store lock while it joins the pool,
        # so a job that adds a job then would deadlock it. Nothing adds jobs once a dispatch
        # in flight has ended and the runs (which end by the grace deadline) are over.
        with self._dispatch_lock, self._busy_changed:
            self._busy_changed.wait_for(lambda: self._busy == 0)
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        log.info("dispatcher stopped")


_dispatcher: Dispatcher | None = None
_lock = threading.Lock()


def start(app: Flask) -> Dispatcher | None:
    """Start this process's dispatcher for ``app`` (once); None where none should run."""
    global _dispatcher
    if not app.config["SCHEDULER_ENABLED"]:
        return None
    if app.debug and not is_running_from_reloader():
        # The reloader's watching parent serves nothing; its serving child runs the dispatcher.
        return None
    with _lock:
        if _dispatcher is None or _dispatcher.pid != os.getpid():
            _dispatcher = Dispatcher(app)
            _dispatcher.start()
            atexit.register(_dispatcher.shutdown)
        return _dispatcher


def notify(training: Training) -> None:
    """Tell this process's dispatcher, if it runs, about a training created or changed.

    A queued one means work now; a scheduled one only needs a look at its time, which saves a
    dispatch (and its queries) per request when clients schedule ahead.
    """
    dispatcher = _dispatcher
    if dispatcher is None or dispatcher.pid != os.getpid():
        return
    if training.status == SCHEDULED and training.scheduled_at is not None:
        dispatcher.due_at(training.scheduled_at)
    elif training.status == QUEUED:
        dispatcher.wake()


def wake() -> None:
    """Tell this process's dispatcher, if it runs, that there may be work."""
    dispatcher = _dispatcher
    if dispatcher is not None and dispatcher.pid == os.getpid():
        dispatcher.wake()


def shutdown(grace: float | None = None) -> None:
    """Stop this process's dispatcher; see :meth:`Dispatcher.shutdown`."""
    dispatcher = _dispatcher
    if dispatcher is not None and dispatcher.pid == os.getpid():
        dispatcher.shutdown(grace)


def run_pending(
    app: Flask,
    *,
    workers: int,
    limit: int | None = None,
    horizon: float = 0.0,
    shutdown: runner.Shutdown | None = None,
    on_finished: Callable[[Training, str], None] | None = None,
) -> dict[int, str]:
    """Claim and run due trainings in the foreground until none is left; the CLI's run-pending.

    Trainings this call ran that were queued again for a retry are waited for and run again;
    with ``horizon`` seconds, trainings scheduled within that time are waited for too.
    Returns each training's last status ("" for one cancelled while it ran).
    """
    settings = runner.RunSettings.from_app(app)
    database = db.database(app)
    shutdown = shutdown or runner.Shutdown()
    horizon_end = utcnow() + timedelta(seconds=horizon)
    outcomes: dict[int, str] = {}
    running: dict[Future[str], Training] = {}

    def retrying() -> list[int]:
        return [tid for tid, status in outcomes.items() if status == QUEUED]

    with database.session() as session, FuturesPool(max_workers=workers) as pool:
        while True:
            while len(running) < workers and not shutdown.requested.is_set():
                # Past the limit, only this call's own retries are taken up again.
                among = retrying() if limit is not None and len(outcomes) >= limit else None
                if among == []:
                    break
                store.promote_due(session)
                store.reap_expired(
                    session, max_attempts=settings.max_attempts, base_delay=settings.retry_delay
                )
                owner = runner.new_owner()
                training = store.claim_next(
                    session, owner, lease_seconds=settings.lease_seconds, among=among
                )
                if training is None:
                    break
                outcomes[training.id] = RUNNING
                running[pool.submit(runner.run_claimed, app, training, owner, shutdown)] = training
            if running:
                done, _ = futures_wait(running, timeout=1.0, return_when=FIRST_COMPLETED)
                for future in done:
                    training = running.pop(future)
                    outcomes[training.id] = status = future.result()
                    if on_finished is not None and status != QUEUED:
                        on_finished(training, status)
                continue
            if shutdown.requested.is_set():
                break
            room = limit is None or len(outcomes) < limit
            wanted = store.earliest_wanted(
                session,
                queued_ids=retrying(),
                scheduled_before=horizon_end if horizon > 0 and room else None,
            )
            if wanted is None:
                break
            # Sleep towards it in short steps, so that a signal is answered promptly.
            pause = min(max((wanted - utcnow()).total_seconds(), 0.0), 1.0)
            shutdown.requested.wait(pause)
    return outcomes
