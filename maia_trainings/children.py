"""The child processes trainings run in: the fork server, children started ahead, the child's side.

Each training runs in its own child, started from multiprocessing's fork server (a preloaded
template process, so a start costs milliseconds and a CPU-heavy trainer never holds the
server's GIL). :class:`Children`, owned by a dispatcher, keeps one child started ahead per
run at once and lets the waiting ones go when it is closed.
"""

from __future__ import annotations

import contextlib
import logging
import multiprocessing
import multiprocessing.connection
import multiprocessing.context
import os
import resource
import signal
import sys
import threading
import traceback
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from .errors import Retry
from .models import utcnow
from .retry import Ending
from .trainers import TrainingContext, check_result, load_trainer

log = logging.getLogger(__name__)

# Seconds a child gets to exit (once it said how its run ended, or was let go) before it is
# killed.
EXIT_GRACE = 5.0


class Report(StrEnum):
    """What a child tells its supervisor before its last word (an Ending and its value)."""

    STARTED = "started"
    PROGRESS = "progress"


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


def _redirect_output(log_path: str) -> logging.Logger:
    """Send this process's stdout, stderr and logging to the run's log file."""
    log_file = open(log_path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
    os.dup2(log_file.fileno(), 1)
    os.dup2(log_file.fileno(), 2)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(line_buffering=True)
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        force=True,
    )
    return logging.getLogger("maia_trainings.trainer")


def child_main(
    conn: multiprocessing.connection.Connection,
    alive: multiprocessing.connection.Connection,
    orders: multiprocessing.connection.Connection,
) -> None:
    """Entry point of the child: wait for a training, run its trainer, send back what happened.

    A child is started ahead of the training it will run and runs just that one; a supervisor
    that closes ``orders`` without sending one lets it exit.
    """
    _die_with_supervisor(alive)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor decides when a run stops
    try:
        payload = orders.recv()
    except (EOFError, OSError):
        return  # not needed after all (the service is stopping)
    orders.close()
    trainer_log = _redirect_output(payload["log_path"])
    conn.send((Report.STARTED, utcnow()))
    last_word: tuple[Ending, Any]
    try:
        trainer = load_trainer(payload["trainer"])
        context = TrainingContext(
            params=payload["params"],
            training=payload["training"],
            output_path=Path(payload["output_path"]),
            settings=payload["settings"],
            _progress=lambda fraction: conn.send((Report.PROGRESS, fraction)),
            _log=trainer_log.info,
            champion=payload.get("champion"),
        )
        last_word = (Ending.SUCCEEDED, check_result(trainer(context)))
    except Retry as exc:
        last_word = (Ending.RETRY, str(exc) or "the trainer asked for another attempt")
    except MemoryError:
        last_word = (Ending.RETRY, "the training ran out of memory")
    except Exception as exc:
        traceback.print_exc()
        last_word = (Ending.ERROR, f"{type(exc).__name__}: {exc}")
    usage = resource.getrusage(resource.RUSAGE_SELF)
    trainer_log.info(
        "peak memory %.1f MB, CPU %.2f s",
        usage.ru_maxrss / 1024,  # kilobytes on Linux
        usage.ru_utime + usage.ru_stime,
    )
    # The last word: the supervisor records the outcome while this process exits.
    conn.send(last_word)
    conn.close()


# The supervisor's side ---------------------------------------------------------------------

# The fork server is one per process (multiprocessing's), so what it preloads is too.
_preload_lock = threading.Lock()
_preloaded: set[str] = set()


def _process_context(trainer_spec: str) -> multiprocessing.context.ForkServerContext:
    """The fork-server context, with this module and the trainer preloaded into its template."""
    context = multiprocessing.get_context("forkserver")
    assert isinstance(context, multiprocessing.context.ForkServerContext)
    with _preload_lock:
        if trainer_spec not in _preloaded:
            # Takes effect when the fork server starts, i.e. on the first run of this process.
            _preloaded.add(trainer_spec)
            modules = {__name__, trainer_spec.partition(":")[0]}
            context.set_forkserver_preload(sorted(modules))
    return context


@dataclass
class Child:
    """A started child waiting for its training, and this side's ends of its pipes."""

    process: multiprocessing.process.BaseProcess
    receiver: multiprocessing.connection.Connection
    alive_here: multiprocessing.connection.Connection
    orders: multiprocessing.connection.Connection

    def close(self) -> None:
        for end in (self.receiver, self.alive_here, self.orders):
            end.close()

    def end(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for the process to exit, then kill it; close the pipes."""
        self.process.join(grace)
        if self.process.is_alive():
            self.process.kill()
        self.process.join()
        self.close()


class Children:
    """Children started ahead of the trainings they will run, kept ready per trainer.

    Starting a child through the fork server and hearing from it takes a few milliseconds, a
    third of a short training's whole cycle (measured 2026-11-28). A run takes the ready
    child, hands it the training, and starts the next one while its own child works, so the
    next run does not wait for the start; there are as many ready children as runs have been
    at once. Each child still runs exactly one training: nothing a trainer leaves behind
    reaches the next.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ready: dict[str, list[Child]] = {}

    def take(self, trainer_spec: str) -> Child:
        """A started child for ``trainer_spec``: a ready one if there is one alive."""
        with self._lock:
            ready = self._ready.get(trainer_spec) or []
            child = ready.pop() if ready else None
        if child is not None and child.process.is_alive():
            return child
        if child is not None:
            child.end(0)
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
            child.orders.close()
            child.end(EXIT_GRACE)

    @staticmethod
    def _start(trainer_spec: str) -> Child:
        context = _process_context(trainer_spec)
        receiver, sender = context.Pipe(duplex=False)
        # Nothing is ever sent on this one: its closing, when this process dies, is the message.
        alive_in_child, alive_here = context.Pipe(duplex=False)
        orders_in_child, orders = context.Pipe(duplex=False)
        process = context.Process(target=child_main, args=(sender, alive_in_child, orders_in_child))
        process.start()
        for end in (sender, alive_in_child, orders_in_child):
            end.close()
        return Child(process, receiver, alive_here, orders)
