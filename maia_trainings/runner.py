"""One supervised run of a claimed training, and the :class:`Outcome` recorded on it.

The supervising thread hands the training to a child process (see ``children``), renews the
lease with a heartbeat that also carries progress and the log, stops the child at its
``MAX_RUNTIME`` or at shutdown, and records how the run ended. It never raises: whatever goes
wrong is written on the training and logged.
"""

from __future__ import annotations

import logging
import math
import multiprocessing.connection
import os
import signal
import socket
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Flask

from . import db, metrics, queue, reports
from .artifacts import publish, read_log
from .children import EXIT_GRACE, Child, Children, Report
from .fields import represent
from .models import Status, Training
from .paths import resolve_inside
from .publishing import PublishPolicy
from .retry import Ending, RetryPolicy
from .trainers import binary_name, load_trainer, params_from_meta, trainer_settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Outcome:
    """How a run ended, and the status it left its training in (None: it no longer owned it)."""

    ending: Ending
    status: Status | None


@dataclass(frozen=True)
class RunSettings:
    """The settings a run needs, read once from the app's config."""

    trainer: str
    models_dir: Path
    runs_dir: Path
    lease_seconds: float
    heartbeat_interval: float
    retry: RetryPolicy
    max_runtime: float
    log_limit: int
    trainer_settings: Mapping[str, Any]
    node_name: str = field(default_factory=socket.gethostname)
    publish_policy: PublishPolicy = field(default_factory=PublishPolicy)

    @classmethod
    def from_app(cls, app: Flask) -> RunSettings:
        config = app.config
        return cls(
            trainer=config["TRAINER"],
            models_dir=Path(config["MODELS_DIR"]),
            runs_dir=Path(app.instance_path) / "runs",
            lease_seconds=float(config["LEASE_SECONDS"]),
            heartbeat_interval=float(config["HEARTBEAT_INTERVAL"]),
            retry=RetryPolicy(int(config["MAX_ATTEMPTS"]), float(config["RETRY_DELAY"])),
            max_runtime=float(config["MAX_RUNTIME"]),
            log_limit=int(config["LOG_LIMIT"]),
            trainer_settings=trainer_settings(config),
            node_name=config["NODE_NAME"],
            publish_policy=PublishPolicy.from_config(config),
        )


class Shutdown:
    """Asked once, on SIGTERM or SIGINT: runs get ``grace`` seconds, then are stopped."""

    def __init__(self) -> None:
        self.requested = threading.Event()
        self.deadline = math.inf

    def request(self, grace: float) -> None:
        """Ask runs to end within ``grace`` seconds; asking again can only shorten that."""
        self.deadline = min(self.deadline, time.monotonic() + grace)
        self.requested.set()


def new_owner(node_name: str) -> str:
    """A name for one attempt's claim, unique across processes and nodes: the node's name
    first, so that an operator reading the database sees which node runs what."""
    return f"{node_name[:24]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


def _exit_reason(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        name = signal.Signals(-exitcode).name
        hint = " (out of memory, or stopped from outside)" if -exitcode == signal.SIGKILL else ""
        return f"the training process was killed by {name}{hint}"
    return f"the training process exited with status {exitcode} without a result"


def _max_runtime(params: Mapping[str, Any], ceiling: float) -> float:
    asked = params.get("max_runtime")
    if isinstance(asked, int | float) and not isinstance(asked, bool) and 0 < asked < ceiling:
        return float(asked)
    return ceiling


@dataclass
class _Ended:
    """What supervision saw: how the run ended, the child's message and its results."""

    ending: Ending
    message: str = ""
    result: dict[str, Any] | None = None


class Runner:
    """Runs claimed trainings, each in a child from ``children``; owned by a dispatcher.
    ``figures`` hears of each trainer's start (its dispatch latency)."""

    def __init__(
        self,
        settings: RunSettings,
        database: db.Database,
        children: Children,
        shutdown: Shutdown,
        *,
        figures: metrics.Metrics | None = None,
    ) -> None:
        self.settings = settings
        self.database = database
        self.children = children
        self.shutdown = shutdown
        self.figures = figures

    def run(self, training: Training, owner: str) -> Outcome:
        """Run ``training``, claimed by ``owner``, to its end and record how it ended.

        Never raises: a failure of the service itself fails the training with its reason.
        """
        try:
            return _Run(self, training, owner).execute()
        except Exception as exc:
            log.exception("training %s: the run failed outside the trainer", training.id)
            try:
                failed = self.transition(
                    queue.fail, training.id, owner, f"the service could not run it: {exc}"
                )
            except Exception:
                log.exception("training %s: could not record the failure", training.id)
                failed = True
            return Outcome(Ending.BROKEN, Status.FAILED if failed else None)

    def transition(self, change: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Apply one of the queue's transitions in a session of its own (it is one transaction)."""
        with self.database.session() as session:
            return change(session, *args, **kwargs)


class _Run:
    """One attempt of one training, from the child's start to the recorded outcome."""

    def __init__(self, runner: Runner, training: Training, owner: str) -> None:
        self.runner = runner
        self.settings = settings = runner.settings
        self.training = training
        self.owner = owner
        self.claimed = time.monotonic()  # near enough: runs start right after their claim
        self.params = params_from_meta(training.meta)
        self.progress: float | None = 0.0
        self.started_at: datetime | None = None
        self.start_recorded = False  # whether started_at is written yet
        self.last_log_size = -1
        attempt = owner.rsplit(":", 1)[1]
        settings.runs_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = settings.runs_dir / f"{training.id}-{attempt}.log"
        self.relative = training.binary_path or (
            f"{training.uuid}/{binary_name(load_trainer(settings.trainer))}"
        )
        self.final_path = resolve_inside(settings.models_dir, self.relative)
        self.partial = self.final_path.with_name(f".{self.final_path.name}.{attempt}.partial")

    def execute(self) -> Outcome:
        self.final_path.parent.mkdir(parents=True, exist_ok=True)
        try:
            return self._run_child()
        finally:
            self.partial.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)

    def _run_child(self) -> Outcome:
        payload = {
            "trainer": self.settings.trainer,
            "params": self.params,
            "training": represent(self.training),
            "output_path": str(self.partial),
            "settings": self.settings.trainer_settings,
            "log_path": str(self.log_path),
            "champion": self._champion(),
        }
        children = self.runner.children
        child = children.take(self.settings.trainer)
        ended = _Ended(Ending.DIED)
        try:
            try:
                child.orders.send(payload)
            except OSError:  # the child died before it got the work (BrokenPipeError)
                child.process.join()
            children.replenish(self.settings.trainer)  # while this child works
            # The lease ran from the claim; starting the child (a cold fork server takes a
            # second or two) must not let it expire before the first heartbeat.
            renewed = time.monotonic() - self.claimed < self.settings.lease_seconds / 3
            ended = self._supervise(child) if renewed or self._beat() else _Ended(Ending.LOST)
            return self._record(ended, child)
        finally:
            # A child that said how it ended is exiting: it gets a moment, recorded meanwhile.
            said = ended.ending in (Ending.SUCCEEDED, Ending.ERROR, Ending.RETRY)
            child.end(EXIT_GRACE if said else 0)

    def _champion(self) -> dict[str, Any] | None:
        """The model's champion as the trainer is told of it (ctx.champion); None when it
        cannot be read now: the run goes on, its pack without a stability index."""
        try:
            with self.runner.database.session() as session:
                return reports.champion_baseline(session, self.training.model_name)
        except Exception:
            log.warning("training %s: its model's champion could not be read", self.training.id)
            return None

    def _record(self, ended: _Ended, child: Child) -> Outcome:
        """Write how the run ended on the training; the Outcome says what it was left as."""
        ending = ended.ending
        if ending is Ending.SUCCEEDED and ended.result is not None:
            return self._succeed(ended.result)
        self._record_start()
        if ending is Ending.LOST:
            return Outcome(ending, None)
        if ending is Ending.INTERRUPTED:
            requeued = self.runner.transition(
                queue.requeue, self.training.id, self.owner, log=self._log()
            )
            return Outcome(ending, Status.QUEUED if requeued else None)
        if not self.settings.retry.retries(ending):  # the trainer's error, or a timeout
            failed = self.runner.transition(
                queue.fail, self.training.id, self.owner, ended.message, log=self._log()
            )
            return Outcome(ending, Status.FAILED if failed else None)
        if ending is Ending.DIED:
            child.process.join()  # its exit status says how
        reason = _exit_reason(child.process.exitcode) if ending is Ending.DIED else ended.message
        status = self.runner.transition(
            queue.retry_or_fail,
            self.training.id,
            self.training.attempts,
            self.owner,
            reason,
            policy=self.settings.retry,
            log=self._log(),
        )
        return Outcome(ending, status)

    def _supervise(self, child: Child) -> _Ended:
        """Wait for the child's reports and its end; heartbeat, and stop it when it must."""
        process, receiver = child.process, child.receiver
        max_runtime = _max_runtime(self.params, self.settings.max_runtime)
        deadline = time.monotonic() + max_runtime
        next_beat = time.monotonic() + self.settings.heartbeat_interval
        waiting_on: list[Any] = [receiver, process.sentinel]
        shutdown = self.runner.shutdown
        while True:
            wake_at = min(next_beat, deadline, shutdown.deadline)
            ready = multiprocessing.connection.wait(
                waiting_on, timeout=max(wake_at - time.monotonic(), 0)
            )
            if receiver in ready:
                try:
                    kind, value = receiver.recv()
                except (EOFError, OSError):
                    waiting_on.remove(receiver)
                    continue
                if kind == Report.STARTED:
                    self.started_at = value
                    if self.runner.figures is not None:
                        self.runner.figures.run_began(self.training.due_at, value)
                    if receiver.poll():
                        continue  # a short run that said more: its start goes with its outcome
                    if not self._beat(started_at=value):
                        return _Ended(Ending.LOST)
                    self.start_recorded = True
                elif kind == Report.PROGRESS:
                    self.progress = value
                elif kind is Ending.SUCCEEDED:  # the child's last word
                    return _Ended(kind, result=value)
                else:
                    return _Ended(Ending(kind), message=value)
                continue
            if process.sentinel in ready and (receiver not in waiting_on or not receiver.poll()):
                return _Ended(Ending.DIED)
            now = time.monotonic()
            if now >= deadline:
                return _Ended(Ending.TIMEOUT, f"timed out after {max_runtime:g} s")
            if now >= shutdown.deadline:
                return _Ended(Ending.INTERRUPTED)
            if now >= next_beat:
                next_beat = now + self.settings.heartbeat_interval
                if not self._beat(progress=self.progress, log=self._log(changed_only=True)):
                    return _Ended(Ending.LOST)

    def _record_start(self) -> None:
        """Write the start a short run's outcome would have carried (see _supervise)."""
        if self.started_at is not None and not self.start_recorded:
            self.start_recorded = True
            self._beat(started_at=self.started_at)

    def _log(self, *, changed_only: bool = False) -> str | None:
        try:
            size = self.log_path.stat().st_size
        except FileNotFoundError:
            size = 0
        if changed_only and size == self.last_log_size:
            return None
        self.last_log_size = size
        return read_log(self.log_path, self.settings.log_limit)

    def _beat(self, **values: Any) -> bool:
        values = {name: value for name, value in values.items() if value is not None}
        return bool(
            self.runner.transition(
                queue.heartbeat,
                self.training.id,
                self.owner,
                lease_seconds=self.settings.lease_seconds,
                **values,
            )
        )

    def _succeed(self, result: dict[str, Any]) -> Outcome:
        results = {**result, "log": self._log()}
        if result.get("report") is not None:
            # Drawn now, as the run ends: the page shows the charts this run saw.
            results["report_charts"] = reports.draw(result["report"])
        if not self.start_recorded:
            results["started_at"] = self.started_at
        published = None
        if self.partial.exists():
            # The heartbeat just before the move renews the lease for the move and the finish:
            # a run taken over while it hashed must not replace the new run's file (found on
            # a loaded machine: a stalled run-pending's run, taken over, woke and published).
            published = publish(self.partial, self.final_path, still_owned=self._beat)
            if published is None:
                return Outcome(Ending.SUCCEEDED, None)
            results.update(
                binary_path=self.relative,
                binary_sha256=published.sha256,
                binary_size=published.size,
            )
        # The file is in place whatever the policy: a challenger can be published later.
        finished = self.runner.transition(
            queue.finish,
            self.training.id,
            self.owner,
            results=results,
            policy=self.settings.publish_policy,
        )
        if finished:
            return Outcome(Ending.SUCCEEDED, Status.SUCCEEDED)
        # Cancelled while it finished: the model is not published after all (unless another
        # run has published its own file there since).
        if published is not None:
            published.remove_if_still_there(self.final_path)
        return Outcome(Ending.SUCCEEDED, None)
