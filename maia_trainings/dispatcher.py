"""The server's dispatcher: the claim loop, turned by a wake-up event and timed wake-ups.

A training that is queued sets the event at once, in this process or (on PostgreSQL, through
LISTEN/NOTIFY) on any node; APScheduler sets the timed wake-ups (every ``POLL_INTERVAL``, and at
the next ``scheduled_at``, back-off end or schedule's fire), computing and keeping only the
times. One dispatcher per process: :func:`start` is idempotent; nothing starts on import.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from datetime import UTC, datetime

from apscheduler.executors.pool import ThreadPoolExecutor as SchedulerPool
from apscheduler.schedulers.background import BackgroundScheduler
from flask import Flask
from werkzeug.serving import is_running_from_reloader

from . import queue, schedules
from .claim_loop import ClaimLoop, Clock, RunFunction
from .db import Announcement
from .models import Schedule, Status, Training, utcnow
from .runner import Shutdown

log = logging.getLogger(__name__)


class Dispatcher:
    """A process's claim loop, turned by a wake-up event; APScheduler sets the timed ones."""

    def __init__(
        self, app: Flask, *, run: RunFunction | None = None, clock: Clock = utcnow
    ) -> None:
        self.pid = os.getpid()
        self.poll_interval = float(app.config["POLL_INTERVAL"])
        self.grace = float(app.config["SHUTDOWN_GRACE"])
        self.shutdown_signal = Shutdown()
        self.loop = ClaimLoop.for_app(
            app,
            workers=int(app.config["WORKERS"]),
            shutdown=self.shutdown_signal,
            run=run,
            clock=clock,
            # A free slot is worth a turn; a retry left waiting out a back-off needs a timed
            # look at its end, which a housekeeping turn sets.
            on_slot_free=lambda retried: self.wake(housekeeping=retried),
        )
        self._woken = threading.Event()
        self._housekeeping = False
        self._flag_lock = threading.Lock()
        self._thread = threading.Thread(target=self._serve, name="maia-dispatcher", daemon=True)
        # When the "next-due" wake-up is set for; None when none is.
        self._next_due: datetime | None = None
        self._next_due_lock = threading.Lock()
        self.scheduler = BackgroundScheduler(
            executors={"default": SchedulerPool(1)},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
            timezone=UTC,
        )

    @property
    def stopping(self) -> bool:
        return self.shutdown_signal.requested.is_set()

    def start(self) -> None:
        self._thread.start()
        # Other nodes' new work wakes this one at once (PostgreSQL's LISTEN; SQLite polls).
        self.loop.database.listen(self._heard, self.shutdown_signal.requested)
        self.scheduler.start()
        self.scheduler.add_job(
            self.wake,
            "interval",
            kwargs={"housekeeping": True},
            seconds=self.poll_interval,
            id="poll",
            next_run_time=utcnow(),
        )
        log.info(
            "dispatcher started: %d workers, polling every %gs",
            self.loop.workers,
            self.poll_interval,
        )

    def wake(self, *, housekeeping: bool = False) -> None:
        """Turn the claim loop now (a training was queued, or a slot is free).

        With ``housekeeping``, the turn also queues the scheduled trainings whose time has
        come, recovers dead runs and sets the next timed look, as the timed looks always do.
        """
        if housekeeping:
            with self._flag_lock:
                self._housekeeping = True
        self._woken.set()

    def _heard(self, announcement: Announcement) -> None:
        self.wake(housekeeping=announcement is Announcement.LOOK)

    def due_at(self, moment: datetime, *, replace: bool = False) -> None:
        """Look for due work at ``moment`` (unless an earlier look is already set)."""
        with self._next_due_lock:
            current = self._next_due
            if self.stopping:
                return
            if not replace and current is not None and utcnow() < current <= moment:
                return  # a look at or before then is already set
            self._next_due = moment
            self.scheduler.add_job(
                self.wake,
                "date",
                kwargs={"housekeeping": True},
                run_date=moment,
                id="next-due",
                replace_existing=True,
            )

    def notify(self, training: Training) -> None:
        """A training was created or changed: a queued one is work now, a scheduled one needs
        a look at its time (which saves a turn and its queries per request)."""
        if training.status == Status.SCHEDULED and training.scheduled_at is not None:
            self.due_at(training.scheduled_at)
        elif training.status == Status.QUEUED:
            self.wake()

    def _serve(self) -> None:
        while True:
            self._woken.wait()
            # Cleared before looking at the shutdown: a shutdown asks, then sets the event,
            # so checking after the clear cannot miss it.
            self._woken.clear()
            if self.stopping:
                return
            with self._flag_lock:
                housekeeping, self._housekeeping = self._housekeeping, False
            try:
                self.loop.turn(housekeeping=housekeeping)
                if housekeeping:
                    with self.loop.database.session() as session:
                        moments = (queue.next_due_at(session), schedules.next_fire_at(session))
                    next_due = min((m for m in moments if m is not None), default=None)
                    if next_due is not None:
                        self.due_at(next_due, replace=True)
            except Exception:
                log.exception("dispatch failed; the next poll tries again")

    def shutdown(self, grace: float | None = None) -> None:
        """Stop claiming; running trainings get ``grace`` seconds, then go back to the queue."""
        if self.stopping and grace is None:
            return
        self.shutdown_signal.request(self.grace if grace is None else grace)
        self._woken.set()
        self.loop.stop()
        if self._thread.is_alive():
            self._thread.join()
        if self.scheduler.running:
            self.scheduler.shutdown(wait=True)
        log.info("dispatcher stopped")


# This process's dispatcher, once started: one per process, whatever the number of apps.
_started: Dispatcher | None = None
_start_lock = threading.Lock()


def start(app: Flask, *, worker: bool = False) -> Dispatcher | None:
    """Start this process's dispatcher for ``app`` (once); None where none should run.

    A server runs one unless SCHEDULER_ENABLED is off (an API-only node); a ``worker`` node
    runs one whatever it says.
    """
    global _started
    if not (worker or app.config["SCHEDULER_ENABLED"]):
        return None
    if app.debug and not worker and not is_running_from_reloader():
        # The reloader's watching parent serves nothing; its serving child runs the dispatcher.
        return None
    with _start_lock:
        if _started is None or _started.pid != os.getpid():
            _started = Dispatcher(app)
            _started.start()
            atexit.register(_started.shutdown)
        return _started


def running() -> Dispatcher | None:
    """This process's dispatcher, if it started one."""
    started = _started
    return started if started is not None and started.pid == os.getpid() else None


def notify(training: Training) -> None:
    """Tell this process's dispatcher, if it runs, about a training created or changed."""
    started = running()
    if started is not None:
        started.notify(training)


def notify_schedule(schedule: Schedule) -> None:
    """Tell this process's dispatcher, if it runs, about a schedule created or changed: a look
    at its next fire."""
    started = running()
    if started is not None and schedule.next_fire_at is not None:
        started.due_at(schedule.next_fire_at)


def shutdown(grace: float | None = None) -> None:
    """Stop this process's dispatcher; see :meth:`Dispatcher.shutdown`."""
    started = running()
    if started is not None:
        started.shutdown(grace)
