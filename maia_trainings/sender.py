"""The webhook sender: claims due deliveries from the outbox and POSTs them, signed, with retries.

Every node runs one (``serve`` with or without SCHEDULER_ENABLED, ``worker``, ``wsgi``), in
threads of its own: one that claims and a small pool that sends, so a slow receiver never
holds a training worker or an HTTP thread. It is woken at once when this process commits
deliveries, and otherwise looks once a second (one indexed read), which is how it finds what
other processes wrote, retries coming due, and deliveries whose sender died mid-send (their
lease ran out). Each attempt is one request: to the address checked against
WEBHOOK_ALLOWED_HOSTS just before (allowed_hosts), within WEBHOOK_TIMEOUT seconds in all,
resolving the name included (a watchdog shuts the connection down at the deadline), no
redirect followed and no retry of urllib3's own; a 2xx answer delivers, anything else is
retried with back-off up to WEBHOOK_MAX_ATTEMPTS, never more (outbox.claim_delivery).
``run-pending`` makes one pass instead (:func:`deliver_due`).
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import hmac
import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime

from flask import Flask
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.exceptions import (
    ConnectTimeoutError,
    NewConnectionError,
    ReadTimeoutError,
    SSLError,
)

from . import db, outbox, runner
from .allowed_hosts import AllowedHosts, HostRefused, Target
from .models import utcnow
from .outbox import AttemptResult, Claimed

log = logging.getLogger(__name__)

USER_AGENT = "maia-trainings-webhooks/1"
# Threads sending at once per node; the claiming thread never claims more than are free.
SENDING_THREADS = 4
# Seconds between looks for deliveries this process was not told of.
POLL_SECONDS = 1.0
# A claim outlives the longest attempt (WEBHOOK_TIMEOUT, resolving included: a hard deadline)
# by this much before another sender may take it: time to record the attempt.
LEASE_MARGIN = 10.0
# webhook_attempts.node is String(64).
NODE_LENGTH = 64

Clock = Callable[[], datetime]


@dataclass(frozen=True)
class SendSettings:
    """The WEBHOOK_* settings, read once."""

    allowed: AllowedHosts
    max_attempts: int
    retry_delay: float
    timeout: float
    callback_secret: str | None = field(repr=False)
    node: str

    @classmethod
    def from_app(cls, app: Flask) -> SendSettings:
        config = app.config
        return cls(
            allowed=AllowedHosts.parse(config["WEBHOOK_ALLOWED_HOSTS"]),
            max_attempts=int(config["WEBHOOK_MAX_ATTEMPTS"]),
            retry_delay=float(config["WEBHOOK_RETRY_DELAY"]),
            timeout=float(config["WEBHOOK_TIMEOUT"]),
            callback_secret=config["WEBHOOK_CALLBACK_SECRET"] or None,
            node=str(config["NODE_NAME"])[:NODE_LENGTH],
        )

    @property
    def lease_seconds(self) -> float:
        return self.timeout + LEASE_MARGIN


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """The X-Maia-Signature value: ``t=<timestamp>,v1=<hex HMAC-SHA256 of "<t>.<body>">``,
    keyed with the secret's text as shown to the subscriber."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def _describe(exc: BaseException, timeout: float) -> str:
    """An error as recorded on the attempt: what went wrong (the caller removes any secret)."""
    # Before the timeouts: urllib3's NewConnectionError is a ConnectTimeoutError.
    if isinstance(exc, NewConnectionError) and not isinstance(exc.__cause__, TimeoutError):
        reason = exc.__cause__ or exc.__context__
        return f"could not connect: {reason if reason is not None else exc}"
    if isinstance(exc, TimeoutError | ConnectTimeoutError | ReadTimeoutError):
        return f"no answer within {timeout:g} s"
    if isinstance(exc, SSLError | ssl.SSLError):
        return f"TLS failed: {exc}"
    return f"the request failed: {type(exc).__name__}: {exc}"


def send(
    settings: SendSettings, claimed: Claimed, *, clock: Callable[[], float] = time.time
) -> AttemptResult:
    """One attempt at ``claimed``: check the host, resolve it, POST the signed body to the
    checked address, all within WEBHOOK_TIMEOUT. Never raises: a refusal or a failure,
    whatever it is, is the result's error."""
    secret = claimed.secret if claimed.webhook_id is not None else settings.callback_secret
    if secret is None:
        reason = (
            "the subscription was deleted"
            if claimed.webhook_id is not None
            else "WEBHOOK_CALLBACK_SECRET is not set"
        )
        return AttemptResult(None, f"not sent: {reason}", None)
    started = time.monotonic()
    deadline = started + settings.timeout
    try:
        target, address = settings.allowed.resolve(claimed.url, timeout=settings.timeout)
        body = claimed.payload.encode()
        headers = {
            "Host": target.host_header,
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Maia-Event": claimed.event,
            "X-Maia-Delivery": claimed.delivery_uuid,
            "X-Maia-Signature": signature(secret, int(clock()), body),
        }
        status = _post(target, address, body, headers, deadline)
    except HostRefused as exc:
        return AttemptResult(None, f"not sent: {exc}", None)
    except Exception as exc:
        error = _describe(exc, settings.timeout)
        for kept in (secret, settings.callback_secret):
            if kept:
                error = error.replace(kept, "[secret]")
        return AttemptResult(None, error, _since(started))
    duration = _since(started)
    if 200 <= status < 300:
        return AttemptResult(status, None, duration)
    if 300 <= status < 400:
        return AttemptResult(status, f"answered {status}; redirects are not followed", duration)
    return AttemptResult(status, f"answered {status}", duration)


def _post(
    target: Target, address: str, body: bytes, headers: dict[str, str], deadline: float
) -> int:
    """POST to ``address`` (checked) and return the answer's status, by ``deadline`` (time's
    monotonic clock): TimeoutError once it passes, however slowly the receiver answers."""
    left = deadline - time.monotonic()
    if left <= 0:
        raise TimeoutError("resolving took the attempt's time")
    connection: HTTPConnection
    # Connected to the checked address; the name goes only in the Host header and TLS (SNI,
    # certificate check), so a second DNS answer cannot send the request elsewhere.
    if target.scheme == "https":
        named = target.literal is None
        connection = HTTPSConnection(
            address,
            target.port,
            timeout=left,
            server_hostname=target.host if named else None,
            assert_hostname=target.host if named else None,
        )
    else:
        connection = HTTPConnection(address, target.port, timeout=left)
    # The socket timeout bounds each step (connecting, each read), not their sum: a receiver
    # sending a byte now and then would hold the attempt for ever. The watchdog cuts it.
    watchdog = _Watchdog(connection, left)
    try:
        connection.connect()
        connection.request("POST", target.path, body=body, headers=headers, preload_content=False)
        status = connection.getresponse().status
    except Exception as exc:
        if watchdog.finish():
            raise TimeoutError("cut at the deadline") from exc
        raise
    finally:
        watchdog.finish()
        connection.close()
    # A head cut short ends like a complete one (http.client reads the end of the stream as
    # the end of the headers): an answer is one only if it came in time.
    if watchdog.fired:
        raise TimeoutError("cut at the deadline")
    return status


class _Watchdog:
    """Shuts a connection's socket down when its time is up, so whatever reads or writes it
    (the request, TLS, the answer's head) stops at once."""

    def __init__(self, connection: HTTPConnection, seconds: float) -> None:
        self.fired = False
        self._connection = connection
        self._finished = False
        self._lock = threading.Lock()
        self._timer = threading.Timer(seconds, self._cut)
        self._timer.daemon = True
        self._timer.name = "maia-send-deadline"
        self._timer.start()

    def _cut(self) -> None:
        with self._lock:
            if self._finished:
                return
            self.fired = True
            sock = self._connection.sock
            if sock is not None:  # still connecting: the connect timeout ends it
                with contextlib.suppress(OSError):  # closed meanwhile
                    sock.shutdown(socket.SHUT_RDWR)

    def finish(self) -> bool:
        """Stand down (the connection is done with); whether it fired first."""
        with self._lock:
            self._finished = True
        self._timer.cancel()
        return self.fired


def _since(started: float) -> float:
    return round((time.monotonic() - started) * 1000, 1)


class Sender:
    """A node's sender: a claiming thread and a pool of sending threads (see the module).

    Made, it starts nothing: :meth:`start` starts its threads, :func:`deliver_due` uses it
    for one pass in the foreground.
    """

    def __init__(
        self, app: Flask, *, threads: int = SENDING_THREADS, clock: Clock = utcnow
    ) -> None:
        self.pid = os.getpid()
        self.settings = SendSettings.from_app(app)
        self.database = db.database(app)
        self.clock = clock
        self.threads = threads
        self.owner = runner.new_owner(self.settings.node)
        self._slots = threading.BoundedSemaphore(threads)
        self._pool: ThreadPoolExecutor | None = None
        self._woken = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="maia-sender", daemon=True)
        # The earliest retry this sender set, so it looks then rather than at the next poll.
        self._next_retry: datetime | None = None
        self._next_retry_lock = threading.Lock()

    def start(self) -> None:
        self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="maia-send")
        outbox.listen(self.wake)
        self._thread.start()
        log.info("webhook sender started: %d threads", self.threads)

    def wake(self) -> None:
        """Look for due deliveries now (this process committed some)."""
        self._woken.set()

    def claim(self, *, due_by: datetime | None = None) -> Claimed | None:
        with self.database.session() as session:
            return outbox.claim_delivery(
                session,
                self.owner,
                lease_seconds=self.settings.lease_seconds,
                max_attempts=self.settings.max_attempts,
                due_by=due_by,
                now=self.clock(),
            )

    def deliver(self, claimed: Claimed) -> AttemptResult:
        """Send ``claimed`` once and record how it went; never raises."""
        try:
            result = send(self.settings, claimed)
            with self.database.session() as session:
                due_again = outbox.record_attempt(
                    session,
                    claimed,
                    self.owner,
                    result,
                    max_attempts=self.settings.max_attempts,
                    retry_delay=self.settings.retry_delay,
                    node=self.settings.node,
                    now=self.clock(),
                )
        except Exception as exc:  # its lease runs out and it is tried again
            log.exception("webhook delivery %s could not be recorded", claimed.id)
            return AttemptResult(None, type(exc).__name__, None)
        if due_again is not None:
            with self._next_retry_lock:
                if self._next_retry is None or due_again < self._next_retry:
                    self._next_retry = due_again
            self.wake()  # the claiming thread may be waiting out a whole poll: time it anew
        if not result.delivered:
            log.info(
                "webhook delivery %s (%s) attempt %d: %s",
                claimed.id,
                claimed.event,
                claimed.attempts,
                result.error,
            )
        return result

    def _deliver_in_slot(self, claimed: Claimed) -> None:
        try:
            self.deliver(claimed)
        finally:
            self._slots.release()

    def _pause(self) -> float:
        """Seconds until the next look: the next poll, or sooner a retry this sender set."""
        with self._next_retry_lock:
            retry = self._next_retry
            if retry is None:
                return POLL_SECONDS
            wait = (retry - self.clock()).total_seconds()
            if wait <= POLL_SECONDS:
                self._next_retry = None  # this look is the one it wanted
        return min(max(wait, 0.0), POLL_SECONDS)

    def _serve(self) -> None:
        assert self._pool is not None
        while not self._stopping.is_set():
            if not self._slots.acquire(timeout=POLL_SECONDS):
                continue  # every thread is sending
            try:
                claimed = None if self._stopping.is_set() else self.claim()
            except Exception:
                log.exception("looking for webhook deliveries failed; the next poll tries again")
                claimed = None
            if claimed is None:
                self._slots.release()
                self._woken.wait(self._pause())
                self._woken.clear()
                continue
            try:
                self._pool.submit(self._deliver_in_slot, claimed)
            except RuntimeError:  # shutting down: its lease runs out, another sender takes it
                self._slots.release()
                return

    def stop(self) -> None:
        """Claim nothing more; let the sends in flight end (each within WEBHOOK_TIMEOUT)."""
        outbox.forget(self.wake)
        self._stopping.set()
        self._woken.set()
        if self._thread.is_alive():
            self._thread.join()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            log.info("webhook sender stopped")


@dataclass(frozen=True)
class Pass:
    """What one pass of :func:`deliver_due` did."""

    attempted: int
    delivered: int


def deliver_due(app: Flask, *, threads: int = SENDING_THREADS) -> Pass:
    """One pass, for ``run-pending``: attempt every delivery due now once, ``threads`` at a
    time, each within WEBHOOK_TIMEOUT; failures wait for their next attempt (the next pass,
    or a node's sender)."""
    sender = Sender(app, threads=threads)
    # Due by the pass's start: a retry it sets is due later, so each is attempted once.
    pass_start = sender.clock()
    slots = threading.BoundedSemaphore(threads)
    results = []
    seen: set[int] = set()
    with ThreadPoolExecutor(threads, thread_name_prefix="maia-send") as pool:
        while True:
            slots.acquire()
            claimed = sender.claim(due_by=pass_start)
            if claimed is None or claimed.id in seen:
                slots.release()
                break
            seen.add(claimed.id)
            results.append(pool.submit(sender.deliver, claimed))
            results[-1].add_done_callback(lambda _done: slots.release())
    return Pass(attempted=len(results), delivered=sum(1 for r in results if r.result().delivered))


# This process's sender, once started: one per process.
_started: Sender | None = None
_start_lock = threading.Lock()


def start(app: Flask) -> Sender:
    """Start this process's sender for ``app`` (once per process)."""
    global _started
    with _start_lock:
        if _started is None or _started.pid != os.getpid():
            _started = Sender(app)
            _started.start()
            atexit.register(_started.stop)
        return _started


def stop() -> None:
    """Stop this process's sender, if it started one."""
    started = _started
    if started is not None and started.pid == os.getpid():
        started.stop()
