"""Running one claimed training: the trainer in a supervised child process, its outcome recorded.

The supervising thread starts the child from a fork server (a preloaded template process, so a
start costs milliseconds and a CPU-heavy trainer never holds the server's GIL), renews the
lease with a heartbeat that also carries progress and the log, and records how the run ended.
It never raises: whatever goes wrong is written on the training and logged.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import logging
import math
import multiprocessing
import multiprocessing.connection
import os
import resource
import signal
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from flask import Flask

from . import db, store
from .models import FAILED, QUEUED, SUCCEEDED, Training, utcnow
from .paths import resolve_inside
from .schemas import dump_training
from .trainers import (
    Retry,
    TrainingContext,
    binary_name,
    check_result,
    load_trainer,
    params_from_meta,
    trainer_settings,
)

log = logging.getLogger(__name__)

CANCELLED_OR_TAKEN = ""  # the run lost its claim: cancelled, or taken over after a stall
# Seconds a child that sent its outcome gets to exit before it is killed.
EXIT_GRACE = 5.0


@dataclass(frozen=True)
class RunSettings:
    """The settings a run needs, read once from the app's config."""

    trainer: str
    models_dir: Path
    runs_dir: Path
    lease_seconds: float
    heartbeat_interval: float
    max_attempts: int
    retry_delay: float
    max_runtime: float
    log_limit: int

    @classmethod
    def from_app(cls, app: Flask) -> RunSettings:
        config = app.config
        return cls(
            trainer=config["TRAINER"],
            models_dir=Path(config["MODELS_DIR"]),
            runs_dir=Path(app.instance_path) / "runs",
            lease_seconds=float(config["LEASE_SECONDS"]),
            heartbeat_interval=float(config["HEARTBEAT_INTERVAL"]),
            max_attempts=int(config["MAX_ATTEMPTS"]),
            retry_delay=float(config["RETRY_DELAY"]),
            max_runtime=float(config["MAX_RUNTIME"]),
            log_limit=int(config["LOG_LIMIT"]),
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


def new_owner() -> str:
    """A name for one attempt's claim, unique across processes and hosts."""
    return f"{os.uname().nodename[:24]}:{os.getpid()}:{uuid.uuid4().hex[:12]}"


# The child process -------------------------------------------------------------------------


def _die_with_supervisor(alive: multiprocessing.connection.Connection) -> None:
    """Kill this child as soon as its supervisor's end of ``alive`` closes (it died).

    A restarted service runs the training again, and two runs must never overlap. The fork
    server cannot be relied on for this: it outlives its parent while any child runs.
    """

    def watch() -> None:
        with contextlib.suppress(EOFError, OSError):
            alive.recv()
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="supervisor-watch", daemon=True).start()


def _child_main(
    conn: multiprocessing.connection.Connection,
    alive: multiprocessing.connection.Connection,
    orders: multiprocessing.connection.Connection,
) -> None:
    """Entry point of the child: wait for a training, run its trainer, send back what happened.

    A child is started ahead of the training it will run (see :class:`_Spares`) and runs just
    that one; a supervisor that closes ``orders`` without sending one lets it exit.
    """
    _die_with_supervisor(alive)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when a run stops
    try:
        payload = orders.recv()
    except (EOFError, OSError):
        return  # not needed after all (the service is stopping)
    orders.close()
    log_file = open(payload["log_path"], "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    sys.stdout.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    sys.stderr.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    trainer_log = logging.getLogger("maia_trainings.trainer")
    conn.send(("started", utcnow()))
    try:
        trainer = load_trainer(payload["trainer"])
        context = TrainingContext(
            params=payload["params"],
            training=payload["training"],
            output_path=Path(payload["output_path"]),
            settings=payload["settings"],
            _progress=lambda fraction: conn.send(("progress", fraction)),
            _log=trainer_log.info,
        )
        outcome: tuple[str, Any] = ("result", check_result(trainer(context)))
    except Retry as exc:
        outcome = ("retry", str(exc) or "the trainer asked for another attempt")
    except MemoryError:
        outcome = ("retry", "the training ran out of memory")
    except Exception as exc:
        traceback.print_exc()
        outcome = ("error", f"{type(exc).__name__}: {exc}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    trainer_log.info(
        "peak memory %.1f MB, CPU %.2f s",
        usage.ru_maxrss / 1024,  # kilobytes on Linux
        usage.ru_utime + usage.ru_stime,
    )
    # The last word: the supervisor records the outcome while this process exits.
    conn.send(outcome)
    conn.close()


# The supervisor ----------------------------------------------------------------------------

_context_lock = threading.Lock()
_preloaded: set[str] = set()


def _process_context(trainer_spec: str) -> multiprocessing.context.BaseContext:
    """The fork-server context, with this module and the trainer preloaded into its template."""
    context = multiprocessing.get_context("forkserver")
    with _context_lock:
        if trainer_spec not in _preloaded:
            # Takes effect when the fork server starts, i.e. on the first run of this process.
            _preloaded.add(trainer_spec)
            modules = {__name__, trainer_spec.partition(":")[0]}
            context.set_forkserver_preload(sorted(modules))  # type: ignore[attr-defined]
    return context


@dataclass
class _Child:
    """A started child waiting for its training, and this side's ends of its pipes."""

    process: Any
    receiver: multiprocessing.connection.Connection
    alive_here: multiprocessing.connection.Connection
    orders: multiprocessing.connection.Connection

    def close(self) -> None:
        for end in (self.receiver, self.alive_here, self.orders):
            end.close()


class _Spares:
    """Children started ahead of the trainings they will run, kept ready per trainer.

    Starting a child through the fork server and hearing from it takes a few milliseconds, a
    third of a short training's whole cycle. A run takes the ready child, hands it the
    training, and starts the next one while its own child works, so the next run does not wait
    for the start; there are as many ready children as runs have been at once. Each
    child still runs exactly one training: nothing a trainer leaves behind reaches the next.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, list[_Child]] = {}

    def take(self, trainer_spec: str) -> _Child:
        """A started child for ``trainer_spec``: a ready one if there is one alive."""
        with self._lock:
            ready = self._ready.get(trainer_spec) or []
            child = ready.pop() if ready else None
        if child is not None and child.process.is_alive():
            return child
        if child is not None:
            child.close()
            child.process.join()
        return self._start(trainer_spec)

    def replenish(self, trainer_spec: str) -> None:
        """Start a child for the next run of ``trainer_spec`` (after taking one); never raises.

        A child that cannot be started now is the next run's to start (and to fail on).
        """
        try:
            spare = self._start(trainer_spec)
        except Exception:
            log.warning("could not start a child ahead of the next training", exc_info=True)
            return
        with self._lock:
            self._ready.setdefault(trainer_spec, []).append(spare)

    def close(self) -> None:
        """Let every waiting child go (each exits when its orders pipe closes)."""
        with self._lock:
            waiting = [child for children in self._ready.values() for child in children]
            self._ready.clear()
        for child in waiting:
            child.close()
            child.process.join(EXIT_GRACE)
            if child.process.is_alive():
                child.process.kill()
                child.process.join()

    @staticmethod
    def _start(trainer_spec: str) -> _Child:
        context = _process_context(trainer_spec)
        receiver, sender = context.Pipe(duplex=False)
        # Nothing is ever sent on this one: its closing, when this process dies, is the message.
        alive_in_child, alive_here = context.Pipe(duplex=False)
        orders_in_child, orders = context.Pipe(duplex=False)
        process = context.Process(  # type: ignore[attr-defined]
            target=_child_main, args=(sender, alive_in_child, orders_in_child)
        )
        process.start()
        for end in (sender, alive_in_child, orders_in_child):
            end.close()
        return _Child(process, receiver, alive_here, orders)


spares = _Spares()
# Before multiprocessing's own exit handler (registered earlier, so run later), which would
# wait forever for children that still wait for their orders.
atexit.register(spares.close)


def read_log(path: Path, limit: int) -> str:
    """The log file's text, keeping its beginning and its end when it is longer than ``limit``."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            if size <= limit:
                data = file.read()
            else:
                head = file.read(limit // 4)
                file.seek(size - (limit - limit // 4))
                tail = file.read()
                omitted = size - len(head) - len(tail)
                data = head + f"\n[… {omitted} bytes omitted …]\n".encode() + tail
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", "replace")


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


class _Run:
    """One attempt of one training, from the child's start to the recorded outcome."""

    def __init__(
        self, app: Flask, training: Training, owner: str, shutdown: Shutdown | None
    ) -> None:
        self.app = app
        self.settings = RunSettings.from_app(app)
        self.database = db.database(app)
        self.training = training
        self.owner = owner
        self.claimed = time.monotonic()  # near enough: runs start right after their claim
        self.shutdown = shutdown or Shutdown()
        self.params = params_from_meta(training.meta)
        self.progress: float | None = 0.0
        self.started_at = None
        self.start_recorded = False  # whether started_at is written yet
        self.last_log_size = -1
        self.settings.runs_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = self.settings.runs_dir / f"{training.id}-{owner.rsplit(':', 1)[1]}.log"

    def execute(self) -> str:
        relative = self.training.binary_path or (
            f"{self.training.uuid}/{binary_name(load_trainer(self.settings.trainer))}"
        )
        final_path = resolve_inside(self.settings.models_dir, relative)
        final_path.parent.mkdir(parents=True, exist_ok=True)
        partial = final_path.with_name(f".{final_path.name}.{self.owner.rsplit(':', 1)[1]}.partial")
        try:
            return self._run_child(partial, final_path, relative)
        finally:
            partial.unlink(missing_ok=True)
            self.log_path.unlink(missing_ok=True)

    def _run_child(self, partial: Path, final_path: Path, relative: str) -> str:
        payload = {
            "trainer": self.settings.trainer,
            "params": self.params,
            "training": dump_training(self.training),
            "output_path": str(partial),
            "settings": trainer_settings(self.app.config),
            "log_path": str(self.log_path),
        }
        child = spares.take(self.settings.trainer)
        process, receiver = child.process, child.receiver
        ending = ""
        try:
            try:
                child.orders.send(payload)
            except OSError:  # the child died before it got the work (BrokenPipeError)
                process.join()
            spares.replenish(self.settings.trainer)  # while this child works
            # The lease ran from the claim; starting the child (a cold fork server takes a
            # second or two) must not let it expire before the first heartbeat.
            renewed = time.monotonic() - self.claimed < self.settings.lease_seconds / 3
            ending, message, result = (
                self._supervise(process, receiver)
                if renewed or self._beat()
                else ("lost", "", None)
            )
            return self._record_ending(
                ending, message, result, process, partial, final_path, relative
            )
        finally:
            # A child that said how it ended is exiting: it gets a moment, recorded meanwhile.
            said = ending in ("result", "error", "retry")
            process.join(EXIT_GRACE if said else 0)
            if process.is_alive():
                process.kill()
            process.join()
            child.close()

    def _record_ending(
        self,
        ending: str,
        message: str,
        result: dict[str, Any] | None,
        process: Any,
        partial: Path,
        final_path: Path,
        relative: str,
    ) -> str:
        if ending != "result":
            self._record_start()
        if ending == "result" and result is not None:
            return self._succeed(result, partial, final_path, relative)
        if ending in ("error", "timeout"):
            return self._record(store.fail, message)
        if ending == "interrupted":
            with self.database.session() as session:
                requeued = store.requeue(session, self.training.id, self.owner, log=self._log())
            return QUEUED if requeued else CANCELLED_OR_TAKEN
        if ending == "lost":
            return CANCELLED_OR_TAKEN
        # A retry the trainer asked for, or a child that died without saying how it ended.
        if ending != "retry":
            process.join()  # it died: its exit status says how
        reason = message if ending == "retry" else _exit_reason(process.exitcode)
        with self.database.session() as session:
            return store.retry_or_fail(
                session,
                self.training.id,
                self.training.attempts,
                self.owner,
                reason,
                max_attempts=self.settings.max_attempts,
                base_delay=self.settings.retry_delay,
                log=self._log(),
            )

    def _supervise(
        self, process: Any, receiver: multiprocessing.connection.Connection
    ) -> tuple[str, str, dict[str, Any] | None]:
        """Wait for the child's messages and end; returns (ending, message, result)."""
        max_runtime = _max_runtime(self.params, self.settings.max_runtime)
        deadline = time.monotonic() + max_runtime
        next_beat = time.monotonic() + self.settings.heartbeat_interval
        waiting_on: list[Any] = [receiver, process.sentinel]
        ending: tuple[str, str, dict[str, Any] | None] = ("died", "", None)
        while True:
            wake_at = min(next_beat, deadline, self.shutdown.deadline)
            ready = multiprocessing.connection.wait(
                waiting_on, timeout=max(wake_at - time.monotonic(), 0)
            )
            if receiver in ready:
                try:
                    kind, value = receiver.recv()
                except (EOFError, OSError):
                    waiting_on.remove(receiver)
                    continue
                if kind == "started":
                    self.started_at = value
                    if receiver.poll():
                        continue  # a short run that said more: its start goes with its outcome
                    if not self._beat(started_at=value):
                        return ("lost", "", None)
                    self.start_recorded = True
                elif kind == "progress":
                    self.progress = value
                else:  # "result", "error" or "retry": the child's last word
                    return ("result", "", value) if kind == "result" else (kind, value, None)
                continue
            if process.sentinel in ready and receiver not in waiting_on:
                return ending
            if process.sentinel in ready and not receiver.poll():
                return ending
            now = time.monotonic()
            if now >= deadline:
                return ("timeout", f"timed out after {max_runtime:g} s", None)
            if now >= self.shutdown.deadline:
                return ("interrupted", "", None)
            if now >= next_beat:
                next_beat = now + self.settings.heartbeat_interval
                if not self._beat(progress=self.progress, log=self._log(changed_only=True)):
                    return ("lost", "", None)

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
        with self.database.session() as session:
            return store.heartbeat(
                session,
                self.training.id,
                self.owner,
                lease_seconds=self.settings.lease_seconds,
                **values,
            )

    def _record(self, outcome: Any, error: str) -> str:
        with self.database.session() as session:
            if outcome(session, self.training.id, self.owner, error, log=self._log()):
                return FAILED
        return CANCELLED_OR_TAKEN

    def _succeed(
        self, result: dict[str, Any], partial: Path, final_path: Path, relative: str
    ) -> str:
        published = partial.exists()
        results = {**result, "log": self._log()}
        if not self.start_recorded:
            results["started_at"] = self.started_at
        if published:
            digest, size = _publish(partial, final_path)
            results.update(
                binary_path=relative,
                binary_sha256=digest,
                binary_size=size,
                published_at=utcnow(),
            )
        with self.database.session() as session:
            if store.finish(session, self.training.id, self.owner, results=results):
                return SUCCEEDED
        # Cancelled while it finished: the model is not published after all.
        if published:
            final_path.unlink(missing_ok=True)
        return CANCELLED_OR_TAKEN


def _publish(partial: Path, final_path: Path) -> tuple[str, int]:
    """Move the finished file into place atomically and durably; its SHA-256 and size."""
    digest = hashlib.sha256()
    with partial.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
        size = file.tell()
        os.fsync(file.fileno())
    os.replace(partial, final_path)
    directory = os.open(final_path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return digest.hexdigest(), size


def run_claimed(
    app: Flask, training: Training, owner: str, shutdown: Shutdown | None = None
) -> str:
    """Run a training claimed by ``owner`` to its end; returns the status it was left in.

    Returns "" when the run lost its claim (the training was cancelled, or taken over after
    its lease expired). Never raises.
    """
    try:
        return _Run(app, training, owner, shutdown).execute()
    except Exception as exc:
        log.exception("training %s: the run failed outside the trainer", training.id)
        try:
            with db.database(app).session() as session:
                failed = store.fail(
                    session, training.id, owner, f"the service could not run it: {exc}"
                )
            return FAILED if failed else CANCELLED_OR_TAKEN
        except Exception:
            log.exception("training %s: could not record the failure", training.id)
            return FAILED
