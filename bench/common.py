"""What the bench scripts share: ports, figures, the HTTP client, child processes, servers."""

from __future__ import annotations

import contextlib
import datetime as dt
import http.client
import json
import math
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
HOST = "127.0.0.1"
DASH = "\u2013"  # en dash, for spreads: 1.0 (0.9\u20131.1)


class BenchError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# Figures -----------------------------------------------------------------------------------


@dataclass
class Stat:
    """Repetitions of one figure: their median and spread."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def low(self) -> float:
        return min(self.values) if self.values else float("nan")

    @property
    def high(self) -> float:
        return max(self.values) if self.values else float("nan")

    def show(self, digits: int = 1, unit: str = "") -> str:
        if not self.values:
            return "n/a"
        unit = f" {unit}" if unit else ""
        median = f"{self.median:,.{digits}f}"
        return f"{median}{unit} ({self.low:,.{digits}f}{DASH}{self.high:,.{digits}f})"


def percentile(values: Sequence[float], fraction: float) -> float:
    """Nearest-rank percentile (nan when empty)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def iso(moment: dt.datetime) -> str:
    """An API timestamp: UTC, milliseconds (``2026-01-02T03:04:05.678Z``)."""
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


# HTTP --------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return sock.getsockname()[1]


class Connection:
    """One persistent HTTP connection to a server on 127.0.0.1, reopened when the server closed
    it or a request failed."""

    def __init__(self, port: int, timeout: float) -> None:
        self.port = port  # may change between requests; a reconnection uses the new one
        self.timeout = timeout
        self.conn: http.client.HTTPConnection | None = None

    def open(self) -> None:
        """Connect now unless connected (an OSError when the server does not accept)."""
        if self.conn is not None and self.conn.sock is not None:
            return
        self.close()
        conn = http.client.HTTPConnection(HOST, self.port, timeout=self.timeout)
        conn.connect()
        self.conn = conn

    def send(
        self,
        method: str,
        path: str,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One request and its whole answer: (status, body). A request without an answer
        raises (OSError or HTTPException) and closes the connection."""
        try:
            self.open()
            assert self.conn is not None
            self.conn.request(method, path, body=body, headers=headers or {})
            response = self.conn.getresponse()
            payload = response.read()
        except (OSError, http.client.HTTPException):
            self.close()
            raise
        if response.will_close:
            self.close()
        return response.status, payload

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None


def json_request(token: str | None, body: Any = None) -> tuple[dict[str, str], bytes | None]:
    """The headers and body of a request with ``token`` (unless None) and ``body`` as JSON
    (unless None)."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    data = None
    if body is not None:
        data = json.dumps(body).encode()
        headers["Content-Type"] = "application/json"
    return headers, data


def http_get(port: int, path: str, token: str | None = None, timeout: float = 5) -> tuple[int, Any]:
    """GET ``path`` on a connection of its own: (status, decoded JSON body or None)."""
    connection = Connection(port, timeout)
    headers, _ = json_request(token)
    try:
        status, payload = connection.send("GET", path, headers=headers)
    finally:
        connection.close()
    try:
        return status, json.loads(payload)
    except ValueError:
        return status, None


class Client:
    """JSON requests on one persistent connection, retried twice when the connection fails."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.connection = Connection(port, timeout=120)

    def close(self) -> None:
        self.connection.close()

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers, data = json_request(self.token, body)
        headers = {"Accept": "application/json", **headers}
        for attempt in range(3):
            try:
                return self.connection.send(method, path, data, headers)
            except (OSError, http.client.HTTPException):
                if attempt == 2:
                    raise
                time.sleep(0.2)
        raise AssertionError("unreachable")

    def json(self, method: str, path: str, body: Any = None) -> Any:
        status, payload = self.request(method, path, body)
        if status != 200:
            raise BenchError(f"{method} {path}: {status} {payload[:300]!r}")
        return json.loads(payload)

    def text(self, path: str) -> str:
        status, payload = self.request("GET", path)
        if status != 200:
            raise BenchError(f"GET {path}: {status} {payload[:300]!r}")
        return payload.decode("utf-8", "replace")


# Processes ---------------------------------------------------------------------------------


def _proc_stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/PID/stat`` after the command name, the state first (None: gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text.rsplit(")", 1)[1].split()


def pid_alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not reaped, does not)."""
    fields = _proc_stat(pid)
    return fields is not None and fields[0] not in ("Z", "X")


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc; 0 where that is missing)."""
    fields = _proc_stat(pid)
    if fields is None:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def spawn(
    command: list[str],
    *,
    env: dict[str, str],
    log_path: Path,
    cwd: Path | None = None,
    new_session: bool = True,
) -> subprocess.Popen[bytes]:
    """Start ``command`` with its output appended to ``log_path``; in a session of its own
    unless ``new_session`` is False (then it gets the caller's signals, as its child would)."""
    with log_path.open("ab") as output:
        return subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=new_session,
        )


class Processes:
    """Every long-running process a run starts, each in its own session, stopped at the end."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, command: list[str], *, env: dict[str, str], log_path: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        process = spawn(command, env=env, log_path=log_path, cwd=cwd)
        self.running.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 45) -> None:
        """SIGTERM (a graceful stop), then SIGKILL to what is left of its process group."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=10)
        # Its children (a fork server, training processes) are in the group it leads.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        if process in self.running:
            self.running.remove(process)

    def stop_all(self) -> None:
        for process in list(reversed(self.running)):
            self.stop(process, timeout=20)


# The service -------------------------------------------------------------------------------


def child_env(
    instance: Path | None = None,
    *,
    python_path: Sequence[Path] = (),
    settings: Mapping[str, str] | None = None,
    drop: tuple[str, ...] = ("MAIA_",),
) -> dict[str, str]:
    """This process's environment for a child: without the variables named ``drop*``, with the
    instance folder, ``python_path`` ahead on PYTHONPATH and ``settings`` as MAIA_ variables."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop)}
    if instance is not None:
        env["MAIA_INSTANCE_PATH"] = str(instance)
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [*map(str, python_path), env.get("PYTHONPATH")])
    )
    env.update({f"MAIA_{key}": value for key, value in (settings or {}).items()})
    return env


def flask_command(*args: str) -> list[str]:
    return [PYTHON, "-m", "flask", "--app", "maia_trainings", *args]


def flask(env: dict[str, str], *args: str, cwd: Path = ROOT, timeout: float = 600) -> str:
    """Run a ``flask --app maia_trainings`` command; its stdout."""
    completed = subprocess.run(
        flask_command(*args),
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if completed.returncode != 0:
        raise BenchError(f"flask {' '.join(args)} failed: {completed.stderr[-2000:]}")
    return completed.stdout


def create_token(env: dict[str, str], name: str, *, cwd: Path = ROOT, timeout: float = 600) -> str:
    """A write token made with ``trainings token create``."""
    out = flask(env, "trainings", "token", "create", name, cwd=cwd, timeout=timeout)
    return out.strip().splitlines()[-1]


def wait_until_up(
    port: int, process: subprocess.Popen[bytes], *, timeout: float = 60, interval: float = 0.1
) -> bool:
    """Poll ``GET /healthz`` until it answers 200 (True), or ``process`` ends or ``timeout``
    seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while process.poll() is None:
        with contextlib.suppress(OSError, http.client.HTTPException):
            if http_get(port, "/healthz", timeout=2)[0] == 200:
                return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return False


def ensure_up(port: int, process: subprocess.Popen[bytes], log_path: Path) -> None:
    """Wait until the server answers; a BenchError with the tail of its log when it does not."""
    if not wait_until_up(port, process):
        tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
        raise BenchError(f"the server at http://{HOST}:{port} did not come up:\n{tail}")


@dataclass
class Service:
    """A ``trainings serve`` started for the suite, with a write token and a client."""

    name: str
    instance: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    client: Client

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def count(self, query: str = "") -> int:
        return int(self.client.json("GET", f"/trainings/count{query}"))

    def settled_count(self, query: str = "") -> int:
        """The count once it stays the same for half a second (at most about 15 s)."""
        count = self.count(query)
        for _ in range(30):
            time.sleep(0.5)
            again = self.count(query)
            if again == count:
                break
            count = again
        return count


def start_service(
    processes: Processes,
    name: str,
    instance: Path,
    env: dict[str, str],
    *,
    threads: int,
    prepare: Callable[[Path, dict[str, str]], None] | None = None,
) -> Service:
    """In ``instance`` (a fresh folder): the schema, a write token, ``prepare`` if given, then
    ``trainings serve`` with ``threads`` threads on a free port, waited for."""
    flask(env, "trainings", "init-db")
    token = create_token(env, "bench")
    if prepare is not None:
        prepare(instance, env)
    port = free_port()
    log_path = instance / "server.log"
    process = processes.start(
        flask_command("trainings", "serve", "--port", str(port), "--threads", str(threads)),
        env=env,
        log_path=log_path,
        cwd=instance,
    )
    ensure_up(port, process, log_path)
    return Service(name, instance, port, token, process, Client(port, token))


def start_worker(
    processes: Processes, instance: Path, env: dict[str, str], *, timeout: float = 60
) -> subprocess.Popen[bytes]:
    """``trainings worker`` (a worker node) on ``instance``'s settings, logging to
    ``worker.log`` there, waited for until it says it runs (a BenchError if it does not)."""
    log_path = instance / "worker.log"
    process = processes.start(
        flask_command("trainings", "worker"), env=env, log_path=log_path, cwd=instance
    )
    deadline = time.monotonic() + timeout
    while "Worker node" not in log_path.read_text(errors="replace"):
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:]
            raise BenchError(f"the worker node did not start:\n{tail}")
        time.sleep(0.1)
    return process
