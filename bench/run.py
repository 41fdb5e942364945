"""The benchmark suite (``make bench``): creates, dispatch, reads at scale and training overhead.

    python bench/run.py                  # BENCH=quick (the default): a few minutes
    BENCH=full python bench/run.py       # longer runs, 1,000,000 rows everywhere, 60 s idle

Every server runs in its own subprocess on 127.0.0.1 with a fresh instance folder in a temporary
directory (removed at the end; ``BENCH_KEEP=1`` keeps it): ``flask --app maia_trainings
trainings serve --port P --threads 8`` with a write token made by ``trainings token create``.
Load comes from ``bench/loadgen.py``, a separate process (wrk with a Lua script when wrk is
installed, else Python threads; ``BENCH_ENGINE=python|wrk`` chooses). Every figure is the median
of ``REPS`` (3) repetitions, shown with their spread as ``median (min-max)``; every target is a
ratio between two things measured in this run, or a bound.

1. Creates: ``POST /trainings`` with the documented body (a fresh uuid each, ``scheduled_at``
   an hour ahead so nothing runs) at 16 and 64 connections, and the same against
   ``bench/baseline_app.py`` (bare Flask on waitress, same threads) in alternation. Afterwards
   the stored rows (``GET /trainings/count``) are compared with the 2xx answers: "lost".
2. Dispatch: with ``bench/noop_trainer.py``, trainings created one at a time (each waited for):
   ``started_at - created_at``; the same after an idle pause; and the no-op throughput of N
   trainings created at once with WORKERS=2. Beside it, huey's ``SqliteHuey`` with a
   ``huey_consumer`` of 2 thread workers: enqueue-to-start latency, after idle, tasks/s.
3. Reads: a fresh database filled with rows inserted directly (sqlite3, one transaction), then
   sequential list, filtered list, count by status and get-by-id requests.
4. Training: the built-in scoring trainer on a generated portfolio through the service, against
   ``bench/plain_training.py`` doing the same work as a plain subprocess.

It writes ``bench/RESULTS.md`` and the summary table of README.md between the markers
``<!-- bench:start -->`` and ``<!-- bench:end -->`` (printed instead when they are missing).
``BENCH_ONLY=create,dispatch,reads,training`` runs a part and only prints its results.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import http.client
import importlib
import importlib.metadata
import json
import math
import os
import platform
import random
import re
import shutil
import signal
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
PYTHON = sys.executable
FLASK = [PYTHON, "-m", "flask", "--app", "maia_trainings"]
RESULTS = BENCH / "RESULTS.md"
README = ROOT / "README.md"
MARK_START = "<!-- bench:start -->"
MARK_END = "<!-- bench:end -->"
REPS = 3
THREADS = 8
FINAL = ("succeeded", "failed", "cancelled")
PEAK_MEMORY = re.compile(r"peak memory ([0-9.]+) MB")
SECTIONS = ("create", "dispatch", "reads", "training")
DASH = "\u2013"  # en dash, for spreads: 1.0 (0.9\u20131.1)
TIMES = "\u00d7"  # multiplication sign, for ratios


@dataclass(frozen=True)
class Mode:
    name: str
    create_seconds: float  # one load run
    dispatch_samples: int  # trainings created one at a time, per repetition
    idle_seconds: float
    queue_n: int  # trainings (and huey tasks) for the throughput
    read_rows: int
    read_requests: int  # per endpoint and repetition
    read_seconds: float  # a cap per endpoint and repetition
    train_rows: int


QUICK = Mode("quick", 5, 50, 10, 200, 200_000, 200, 8, 200_000)
FULL = Mode("full", 15, 200, 60, 500, 1_000_000, 1000, 30, 1_000_000)


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


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)
    return ordered[min(max(rank, 1), len(ordered)) - 1]


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an API timestamp (``2026-01-02T03:04:05.678Z``)."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def iso(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + (
        f"{moment.microsecond // 1000:03d}Z"
    )


# Processes ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Processes:
    """Every long-running process the suite starts, each in its own session, stopped at the end."""

    def __init__(self) -> None:
        self.running: list[subprocess.Popen[bytes]] = []

    def start(
        self, command: list[str], *, env: dict[str, str], log_path: Path, cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        with log_path.open("ab") as output:
            process = subprocess.Popen(
                command,
                env=env,
                cwd=cwd,
                stdout=output,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
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


class Client:
    """One persistent HTTP connection to a server on 127.0.0.1, for the suite's own requests."""

    def __init__(self, port: int, token: str | None = None) -> None:
        self.port = port
        self.token = token
        self.conn: http.client.HTTPConnection | None = None

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
            self.conn = None

    def request(self, method: str, path: str, body: Any = None) -> tuple[int, bytes]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        for attempt in range(3):
            try:
                if self.conn is None:
                    self.conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=120)
                self.conn.request(method, path, body=data, headers=headers)
                response = self.conn.getresponse()
                payload = response.read()
                if response.will_close:
                    self.close()
                return response.status, payload
            except (OSError, http.client.HTTPException):
                self.close()
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


@dataclass
class Service:
    name: str
    instance: Path
    port: int
    token: str
    process: subprocess.Popen[bytes]
    client: Client

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (from /proc; 0 where that is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # utime, stime


def wait_until_up(url: str, process: subprocess.Popen[bytes], log_path: Path) -> None:
    port = int(url.rsplit(":", 1)[1])
    deadline = time.monotonic() + 60
    while True:
        with contextlib.suppress(OSError, http.client.HTTPException):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            try:
                conn.request("GET", "/healthz")
                if conn.getresponse().status == 200:
                    return
            finally:
                conn.close()
        if process.poll() is not None or time.monotonic() > deadline:
            tail = log_path.read_text(errors="replace")[-2000:] if log_path.exists() else ""
            raise BenchError(f"the server at {url} did not come up:\n{tail}")
        time.sleep(0.1)


class Suite:
    def __init__(self, mode: Mode, workdir: Path, engine: str) -> None:
        self.mode = mode
        self.workdir = workdir
        self.engine = engine
        self.processes = Processes()
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        self.code = code_state()

    # Environment and commands ----------------------------------------------------------------

    def env(self, instance: Path | None = None, **settings: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MAIA_", "BENCH_"))}
        if instance is not None:
            env["MAIA_INSTANCE_PATH"] = str(instance)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(BENCH), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        env.update({f"MAIA_{key}": value for key, value in settings.items()})
        return env

    def flask(self, env: dict[str, str], *args: str, timeout: float = 600) -> str:
        completed = subprocess.run(
            [*FLASK, *args],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if completed.returncode != 0:
            raise BenchError(f"flask {' '.join(args)} failed: {completed.stderr[-2000:]}")
        return completed.stdout

    def start_service(
        self,
        name: str,
        *,
        prepare: Callable[[Path, dict[str, str]], None] | None = None,
        **settings: str,
    ) -> Service:
        """A fresh instance, its schema and a write token, then ``trainings serve``."""
        instance = self.workdir / name
        instance.mkdir(parents=True)
        env = self.env(instance, **settings)
        self.flask(env, "trainings", "init-db")
        token = self.flask(env, "trainings", "token", "create", "bench").strip().splitlines()[-1]
        if prepare is not None:
            prepare(instance, env)
        port = free_port()
        log_path = instance / "server.log"
        process = self.processes.start(
            [*FLASK, "trainings", "serve", "--port", str(port), "--threads", str(THREADS)],
            env=env,
            log_path=log_path,
            cwd=instance,
        )
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, process, log_path)
        return Service(name, instance, port, token, process, Client(port, token))

    def stop_service(self, service: Service) -> None:
        service.client.close()
        self.processes.stop(service.process)

    def loadgen(
        self,
        url: str,
        *,
        method: str = "GET",
        path: str,
        headers: dict[str, str] | None = None,
        body: str | None = None,
        connections: int = 1,
        duration: float | None = None,
        requests: int | None = None,
        engine: str | None = None,
    ) -> dict[str, Any]:
        command = [PYTHON, str(BENCH / "loadgen.py"), "--url", url, "--method", method]
        command += ["--path", path, "--connections", str(connections)]
        command += ["--engine", engine or self.engine]
        for name, value in (headers or {}).items():
            command += ["-H", f"{name}: {value}"]
        if body is not None:
            command += ["--body", body]
        if duration is not None:
            command += ["--duration", str(duration)]
        if requests is not None:
            command += ["--requests", str(requests)]
        limit = (duration or 0) + (600 if requests else 0) + 120
        completed = subprocess.run(
            command, capture_output=True, text=True, timeout=limit, check=False, env=self.env()
        )
        if completed.returncode != 0:
            raise BenchError(f"loadgen failed: {completed.stderr[-2000:]}")
        return json.loads(completed.stdout.strip().splitlines()[-1])

    # 1. Creates ------------------------------------------------------------------------------

    def bench_create(self) -> None:
        mode = self.mode
        log(f"creates: service and baseline, {mode.create_seconds:g} s per run, {REPS} reps")
        service = self.start_service("create")
        port = free_port()
        baseline_log = self.workdir / "baseline.log"
        baseline = self.processes.start(
            [
                PYTHON,
                str(BENCH / "baseline_app.py"),
                "--port",
                str(port),
                "--threads",
                str(THREADS),
            ],
            env=self.env(),
            log_path=baseline_log,
        )
        baseline_url = f"http://127.0.0.1:{port}"
        wait_until_up(baseline_url, baseline, baseline_log)
        later = iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
        body = (
            '{"uuid":"{uuid}","accuracy":0,"precission":0,"mae":0,"rmse":0,'
            '"binaryPath":"string","version":"string","meta":"string",'
            f'"scheduled_at":"{later}"' + "}"
        )
        headers = {"Authorization": f"Bearer {service.token}", "Content-Type": "application/json"}
        targets = {
            "service": (service.url, headers, service.process.pid),
            "baseline": (baseline_url, {"Content-Type": "application/json"}, baseline.pid),
        }
        runs: dict[int, dict[str, list[dict[str, Any]]]] = {}
        for connections in (16, 64):
            runs[connections] = {"service": [], "baseline": []}
            for url, hdrs, _pid in targets.values():  # warm-up, not counted
                self.loadgen(
                    url,
                    method="POST",
                    path="/trainings",
                    headers=hdrs,
                    body=body,
                    connections=connections,
                    duration=1,
                )
            time.sleep(1)
            for rep in range(REPS):
                order = ["service", "baseline"] if rep % 2 == 0 else ["baseline", "service"]
                for name in order:
                    url, hdrs, pid = targets[name]
                    before = service.count() if name == "service" else 0
                    cpu_before = process_cpu_seconds(pid)
                    result = self.loadgen(
                        url,
                        method="POST",
                        path="/trainings",
                        headers=hdrs,
                        body=body,
                        connections=connections,
                        duration=mode.create_seconds,
                    )
                    result["cpu_s"] = process_cpu_seconds(pid) - cpu_before
                    if name == "service":
                        # Requests wrk dropped at its deadline may still commit: wait for the
                        # count to settle.
                        result["stored"] = service.settled_count() - before
                    runs[connections][name].append(result)
                    log(
                        f"  {connections} conn {name} rep {rep + 1}: {result['rps']:.0f} req/s, "
                        f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                        f"status {result['status']}, errors {result['errors']}"
                    )
                    time.sleep(0.5)
        server_log = (service.instance / "server.log").read_text(errors="replace")
        self.results["create"] = {
            "runs": runs,
            "tracebacks": server_log.count("Traceback"),
            "queue_warnings": server_log.count("Task queue depth"),
        }
        self.stop_service(service)
        self.processes.stop(baseline)

    # 2. Dispatch -----------------------------------------------------------------------------

    def bench_dispatch(self) -> None:
        mode = self.mode
        log(f"dispatch: no-op trainer, {mode.dispatch_samples} one at a time x {REPS}")
        service = self.start_service("dispatch", TRAINER="noop_trainer:train", WORKERS="2")
        client = service.client
        out: dict[str, Any] = {}

        def one_training() -> dict[str, Any]:
            created = client.json("POST", "/trainings", {"uuid": str(uuid.uuid4())})
            finished = wait_final(client, created["id"], timeout=60, interval=0.01)
            if finished["status"] != "succeeded":
                raise BenchError(f"no-op training {finished['id']}: {finished['status']}")
            return finished

        def latency_ms(training: dict[str, Any]) -> float:
            return (parse_time(training["started_at"]) - parse_time(training["created_at"])) * 1e3

        cold = one_training()  # the first run starts the fork server
        out["cold_ms"] = latency_ms(cold)
        for _ in range(3):
            one_training()
        p50s, p99s, e2e50 = [], [], []
        for rep in range(REPS):
            samples = [one_training() for _ in range(mode.dispatch_samples)]
            latencies = [latency_ms(t) for t in samples]
            whole = [
                (parse_time(t["finished_at"]) - parse_time(t["created_at"])) * 1e3 for t in samples
            ]
            p50s.append(percentile(latencies, 0.5))
            p99s.append(percentile(latencies, 0.99))
            e2e50.append(percentile(whole, 0.5))
            log(f"  service rep {rep + 1}: p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms")
        out["service"] = {"p50": p50s, "p99": p99s, "e2e_p50": e2e50}

        huey = HueyBench(self) if module_available("huey") else None
        if huey is not None:
            try:
                huey.start()
                out["huey"] = huey.sequential(mode.dispatch_samples)
            except Exception as exc:  # the comparison is reported missing, the rest goes on
                log(f"  huey failed: {exc!r}")
                self.notes.append(f"huey could not be measured: {exc!r}")
                huey.stop()
                huey = None
        else:
            self.notes.append("huey is not installed (`pip install huey`): its columns are n/a.")

        log(f"  after {mode.idle_seconds:g} s idle x {REPS} (service, then huey)")
        idle_service, idle_huey = [], []
        for _ in range(REPS):
            time.sleep(mode.idle_seconds)
            idle_service.append(latency_ms(one_training()))
            if huey is not None:
                idle_huey.append(huey.one() * 1e3)
        out["idle"] = {"service": idle_service, "huey": idle_huey}

        log(f"  no-op throughput: {mode.queue_n} trainings at once, WORKERS=2, x {REPS}")
        rates, failed_total = [], 0
        headers = {"Authorization": f"Bearer {service.token}", "Content-Type": "application/json"}
        for rep in range(REPS):
            last = client.json("GET", "/trainings?_sort=id:DESC&_limit=1")
            last_id = int(last[0]["id"]) if last else 0
            self.loadgen(
                service.url,
                method="POST",
                path="/trainings",
                headers=headers,
                body='{"uuid":"{uuid}"}',
                connections=4,
                requests=mode.queue_n,
                engine="python",
            )
            query = f"?id_gt={last_id}&status_in=succeeded&status_in=failed&status_in=cancelled"
            deadline = time.monotonic() + 60 + mode.queue_n / 2
            while service.count(query) < mode.queue_n:
                if time.monotonic() > deadline:
                    raise BenchError("the no-op trainings did not all finish in time")
                time.sleep(0.1)
            batch = client.json("GET", f"/trainings?id_gt={last_id}&_limit=-1")
            failed_total += sum(1 for t in batch if t["status"] != "succeeded")
            first = min(parse_time(t["created_at"]) for t in batch)
            end = max(parse_time(t["finished_at"]) for t in batch)
            rates.append(len(batch) / (end - first))
            log(f"  service rep {rep + 1}: {rates[-1]:.1f} trainings/s")
        out["throughput"] = {"service": rates, "service_not_succeeded": failed_total}
        if huey is not None:
            out["throughput"]["huey"] = [huey.burst(mode.queue_n) for _ in range(REPS)]
            huey.stop()
        server_log = (service.instance / "server.log").read_text(errors="replace")
        out["tracebacks"] = server_log.count("Traceback")
        self.results["dispatch"] = out
        self.stop_service(service)

    # 3. Reads --------------------------------------------------------------------------------

    def bench_reads(self) -> None:
        mode = self.mode
        rows = mode.read_rows
        log(f"reads: {rows:,} rows inserted directly, then sequential requests")
        info: dict[str, Any] = {"rows": rows}

        def fill(instance: Path, _env: dict[str, str]) -> None:
            began = time.monotonic()
            counts = insert_trainings(instance / "trainings.sqlite3", rows)
            info["insert_s"] = time.monotonic() - began
            info["statuses"] = counts
            log(f"  inserted {rows:,} rows in {info['insert_s']:.1f} s: {counts}")

        service = self.start_service("reads", prepare=fill)
        database = service.instance / "trainings.sqlite3"
        info["db_mb"] = sum(
            p.stat().st_size for p in database.parent.glob("trainings.sqlite3*")
        ) / (1024 * 1024)
        headers = {"Authorization": f"Bearer {service.token}"}
        endpoints = {
            "list": "/trainings?_limit=100&_sort=id:DESC",
            "list_queued": "/trainings?status=queued&_limit=100",
            "count_succeeded": "/trainings/count?status=succeeded",
            "get": f"/trainings/{{int:1:{rows}}}",
        }
        figures: dict[str, dict[str, list[float]]] = {}
        for name, path in endpoints.items():
            self.loadgen(service.url, path=path, headers=headers, requests=20, engine="python")
            figures[name] = {"p50": [], "p99": [], "requests": [], "non_200": []}
            for _rep in range(REPS):
                result = self.loadgen(
                    service.url,
                    path=path,
                    headers=headers,
                    connections=1,
                    requests=mode.read_requests,
                    duration=mode.read_seconds,
                    engine="python",
                )
                figures[name]["p50"].append(result["p50_ms"])
                figures[name]["p99"].append(result["p99_ms"])
                figures[name]["requests"].append(result["requests"])
                figures[name]["non_200"].append(
                    sum(v for k, v in result["status"].items() if k != "200") + result["errors"]
                )
            log(
                f"  {name}: p50 {Stat(figures[name]['p50']).show(2)} ms, "
                f"p99 {Stat(figures[name]['p99']).show(2)} ms"
            )
        info["endpoints"] = figures
        info["paths"] = endpoints
        self.results["reads"] = info
        self.stop_service(service)

    # 4. Training -----------------------------------------------------------------------------

    def bench_training(self) -> None:
        mode = self.mode
        rows = mode.train_rows
        log(f"training: scoring trainer on {rows:,} rows, service vs plain script, x {REPS}")
        info: dict[str, Any] = {"rows": rows}

        def portfolio(instance: Path, env: dict[str, str]) -> None:
            (instance / "datasets").mkdir()
            csv = instance / "datasets" / "loans.csv"
            began = time.monotonic()
            self.flask(env, "trainings", "demo-data", "--rows", str(rows), str(csv))
            info["csv_mb"] = csv.stat().st_size / (1024 * 1024)
            log(f"  demo-data: {info['csv_mb']:.0f} MB in {time.monotonic() - began:.1f} s")

        service = self.start_service("training", prepare=portfolio)
        csv = service.instance / "datasets" / "loans.csv"
        service_runs: list[dict[str, Any]] = []
        plain_runs: list[dict[str, Any]] = []
        for rep in range(REPS):
            created = service.client.json(
                "POST", "/trainings", {"uuid": str(uuid.uuid4()), "meta": {"dataset": "loans.csv"}}
            )
            done = wait_final(service.client, created["id"], timeout=1800, interval=0.25)
            if done["status"] != "succeeded":
                raise BenchError(f"the scoring training failed: {done['error']}")
            text = service.client.text(f"/trainings/{done['id']}/log")
            peak = PEAK_MEMORY.search(text)
            run = {
                "wall_s": parse_time(done["finished_at"]) - parse_time(done["started_at"]),
                "queue_s": parse_time(done["started_at"]) - parse_time(done["created_at"]),
                "peak_mb": float(peak.group(1)) if peak else None,
                "accuracy": done["accuracy"],
                "roc_auc": metric(done, "roc_auc"),
            }
            service_runs.append(run)
            out = self.workdir / f"plain-{rep}.skops"
            completed = subprocess.run(
                [PYTHON, str(BENCH / "plain_training.py"), "--measure", str(csv), str(out)],
                capture_output=True,
                text=True,
                timeout=3600,
                check=False,
                env=self.env(),
            )
            if completed.returncode != 0:
                raise BenchError(f"plain_training.py failed: {completed.stderr[-2000:]}")
            plain = json.loads(completed.stdout.strip().splitlines()[-1])
            plain_runs.append(plain)
            peak_text = f"{run['peak_mb']:.0f} MB" if run["peak_mb"] is not None else "n/a"
            log(
                f"  rep {rep + 1}: service {run['wall_s']:.2f} s, {peak_text}; plain "
                f"{plain['wall_s']:.2f} s (work {plain['work_s']:.2f} s), {plain['peak_mb']:.0f} MB"
            )
        info["service"] = service_runs
        info["plain"] = plain_runs
        self.results["training"] = info
        self.stop_service(service)


def metric(training: dict[str, Any], name: str) -> Any:
    metrics = training.get("metrics") or {}
    if isinstance(metrics, str):
        metrics = json.loads(metrics)
    return metrics.get(name)


def module_available(name: str) -> bool:
    try:
        importlib.import_module(name)
    except ImportError:
        return False
    return True


def wait_final(client: Client, training_id: str, *, timeout: float, interval: float) -> Any:
    """Poll a training until it is finished; bounded by ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        training = client.json("GET", f"/trainings/{training_id}")
        if training["status"] in FINAL:
            return training
        if time.monotonic() > deadline:
            raise BenchError(f"training {training_id} still {training['status']} after {timeout}s")
        time.sleep(interval)


class HueyBench:
    """huey's SqliteHuey in a temporary folder and a ``huey_consumer`` with 2 thread workers."""

    def __init__(self, suite: Suite) -> None:
        self.suite = suite
        self.folder = suite.workdir / "huey"
        self.folder.mkdir()
        self.database = self.folder / "huey.db"
        self.process: subprocess.Popen[bytes] | None = None
        os.environ["BENCH_HUEY_DB"] = str(self.database)
        sys.modules.pop("huey_tasks", None)
        self.tasks = importlib.import_module("huey_tasks")

    def start(self) -> None:
        env = self.suite.env()
        env["BENCH_HUEY_DB"] = str(self.database)
        consumer = shutil.which("huey_consumer", path=str(Path(PYTHON).parent)) or shutil.which(
            "huey_consumer"
        )
        command = [consumer] if consumer else [PYTHON, "-m", "huey.bin.huey_consumer"]
        self.process = self.suite.processes.start(
            [*command, "huey_tasks.huey", "--workers", "2", "--worker-type", "thread"],
            env=env,
            log_path=self.folder / "consumer.log",
            cwd=BENCH,
        )
        for _ in range(3):  # warm-up; also proves the consumer runs
            self.one(timeout=30)

    def one(self, timeout: float = 60) -> float:
        """Enqueue one no-op task and wait for it; its enqueue-to-start latency in seconds."""
        enqueued = time.time()
        result = self.tasks.noop(enqueued)
        _, started, _ = result.get(blocking=True, timeout=timeout)
        return started - enqueued

    def sequential(self, samples: int) -> dict[str, list[float]]:
        p50s, p99s = [], []
        for rep in range(REPS):
            latencies = [self.one() * 1e3 for _ in range(samples)]
            p50s.append(percentile(latencies, 0.5))
            p99s.append(percentile(latencies, 0.99))
            log(f"  huey rep {rep + 1}: p50 {p50s[-1]:.1f} ms, p99 {p99s[-1]:.1f} ms")
        return {"p50": p50s, "p99": p99s}

    def burst(self, count: int) -> float:
        """Enqueue ``count`` tasks at once and wait for all: tasks per second."""
        results = [self.tasks.noop(time.time()) for _ in range(count)]
        times = [result.get(blocking=True, timeout=120) for result in results]
        first = min(t[0] for t in times)
        last = max(t[2] for t in times)
        rate = count / (last - first)
        log(f"  huey burst: {rate:.1f} tasks/s")
        return rate

    def stop(self) -> None:
        if self.process is not None:
            self.suite.processes.stop(self.process)
            self.process = None


# Rows for the read benchmark ----------------------------------------------------------------

LOG_TEMPLATE = (
    "{t} INFO maia_trainings.trainer: loaded 50000 rows and 16 feature columns from the CSV "
    "file loans.csv; 7473 defaults (14.9%, defaulted = '1')\n"
    "{t} INFO maia_trainings.trainer: loading in 0.41 s\n"
    "{t} INFO maia_trainings.trainer: fitting logistic_regression on 40000 rows in 1.93 s\n"
    "{t} INFO maia_trainings.trainer: evaluating on 10000 rows (ROC AUC 0.812) in 0.05 s\n"
    "{t} INFO maia_trainings.trainer: saving the model (10234 bytes) in 0.03 s\n"
    "{t} INFO maia_trainings.trainer: peak memory 312.4 MB, CPU 3.10 s\n"
)
METRICS = (
    '{{"roc_auc": {auc:.4f}, "gini": {gini:.4f}, "ks": 0.4812, "recall": 0.3121, '
    '"f1": 0.4012, "brier": 0.1034, "n_train": 40000, "n_test": 10000, "positive_rate": 0.1495}}'
)
META = '{"dataset": "loans.csv", "model": "logistic_regression"}'


def _db_time(moment: dt.datetime) -> str:
    """How the models' UTCDateTime stores a time in SQLite (naive UTC, microseconds)."""
    return moment.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def insert_trainings(path: Path, rows: int, seed: int = 7) -> dict[str, int]:
    """Fill ``path``'s trainings table with ``rows`` trainings in one transaction; mixed statuses:
    mostly finished, some queued (waiting out a retry back-off, so none is due) and scheduled
    (in the future), none running. Returns the count by status."""
    from maia_trainings.models import Training

    columns = [c.name for c in Training.__table__.columns if c.name != "id"]
    rng = random.Random(seed)
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    begin = now - dt.timedelta(days=365)
    step = dt.timedelta(days=364) / rows
    statuses = ["succeeded", "failed", "cancelled", "queued", "scheduled"]
    weights = [0.85, 0.08, 0.045, 0.015, 0.01]
    counts = dict.fromkeys(statuses, 0)
    auto_version = 0

    def generate() -> Iterator[tuple[Any, ...]]:
        nonlocal auto_version
        for i in range(rows):
            status = rng.choices(statuses, weights)[0]
            counts[status] += 1
            created = begin + step * i
            created = created.replace(microsecond=created.microsecond // 1000 * 1000)
            row: dict[str, Any] = dict.fromkeys(columns)
            uid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
            row.update(
                uuid=uid,
                status=status,
                meta=META,
                created_at=_db_time(created),
                updated_at=_db_time(created),
                created_by="bench",
                updated_by="bench",
                attempts=0,
                request_fingerprint=f"{rng.getrandbits(256):064x}",
            )
            if status in ("succeeded", "failed"):
                started = created + dt.timedelta(milliseconds=rng.randint(5, 2000))
                finished = started + dt.timedelta(milliseconds=rng.randint(2000, 60000))
                stamp = started.strftime("%Y-%m-%d %H:%M:%S,000")
                row.update(
                    started_at=_db_time(started),
                    finished_at=_db_time(finished),
                    updated_at=_db_time(finished),
                    attempts=1,
                    progress=1.0,
                    log=LOG_TEMPLATE.format(t=stamp),
                )
                if status == "succeeded":
                    auto_version += 1
                    auc = 0.78 + rng.random() * 0.05
                    row.update(
                        accuracy=0.85 + rng.random() * 0.05,
                        precission=0.6 + rng.random() * 0.1,
                        mae=0.2 + rng.random() * 0.05,
                        rmse=0.3 + rng.random() * 0.05,
                        version=str(auto_version),
                        auto_version=auto_version,
                        metrics=METRICS.format(auc=auc, gini=2 * auc - 1),
                        binary_path=f"{uid}/model.skops",
                        binary_sha256=f"{rng.getrandbits(256):064x}",
                        binary_size=rng.randint(8000, 12000),
                        published_at=_db_time(finished),
                    )
                else:
                    row.update(error="ValueError: the target must have two values, it has 1: 0")
            elif status == "cancelled":
                row.update(finished_at=_db_time(created + dt.timedelta(seconds=30)))
            elif status == "queued":
                row.update(
                    attempts=1,
                    error="the run stopped answering (its process died or hung)",
                    not_before=_db_time(now + dt.timedelta(days=1)),
                )
            else:
                row["scheduled_at"] = _db_time(now + dt.timedelta(days=rng.randint(1, 30)))
            yield tuple(row[c] for c in columns)

    connection = sqlite3.connect(path)
    try:
        connection.execute("PRAGMA synchronous=OFF")
        placeholders = ", ".join("?" for _ in columns)
        with connection:
            connection.executemany(
                f"INSERT INTO trainings ({', '.join(columns)}) VALUES ({placeholders})",
                generate(),
            )
        connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        connection.close()
    return counts


# The report --------------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    measured: str
    bound: str
    reached: bool | None  # None: could not be measured


@dataclass
class Report:
    suite: Suite
    began: dt.datetime
    seconds: float
    targets: list[Target] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    def build(self) -> str:
        results = self.suite.results
        mode = self.suite.mode
        add = self.lines.append
        add("# Benchmark results")
        add("")
        add(
            f"`BENCH={mode.name} python bench/run.py` on {self.began:%Y-%m-%d %H:%M} UTC; "
            f"the suite took {self.seconds / 60:.1f} min. Every figure is the median of "
            f"{REPS} repetitions with their spread: `median (min{DASH}max)`."
        )
        add("")
        add("## Machine")
        add("")
        add("| | |")
        add("| --- | --- |")
        for key, value in machine(self.suite.code).items():
            add(f"| {key} | {value} |")
        add(f"| load generator | {engine_description(self.suite.engine)} |")
        add("")
        sections = [
            ("create", self.create),
            ("dispatch", self.dispatch),
            ("reads", self.reads),
            ("training", self.training),
        ]
        body: list[str] = []
        for name, render in sections:
            if name in results:
                body += render(results[name])
        add("## Targets")
        add("")
        add(self.targets_table())
        add("")
        self.lines += body
        if self.suite.notes:
            add("## Notes")
            add("")
            self.lines += [f"- {note}" for note in self.suite.notes]
            add("")
        return "\n".join(self.lines).rstrip() + "\n"

    def targets_table(self) -> str:
        rows = ["| target | measured | reached |", "| --- | --- | --- |"]
        for target in self.targets:
            verdict = {True: "reached", False: "**NOT reached**", None: "n/a"}[target.reached]
            rows.append(f"| {target.name}: {target.bound} | {target.measured} | {verdict} |")
        return "\n".join(rows)

    def target(self, name: str, measured: str, bound: str, reached: bool | None) -> None:
        self.targets.append(Target(name, measured, bound, reached))

    # Sections ------------------------------------------------------------------------------

    def create(self, data: dict[str, Any]) -> list[str]:
        mode = self.suite.mode
        out = [
            "## 1. Create throughput and latency",
            "",
            f"`POST /trainings` with the documented body, a fresh uuid each and `scheduled_at` "
            f"an hour ahead (nothing runs; the scheduler is on), {mode.create_seconds:g} s per "
            f"run, service and baseline in alternation; waitress with {THREADS} threads for "
            "both. *Lost* = 2xx answers minus the rows the count grew by (never below 0); "
            "*unanswered* = rows stored for requests the load generator dropped at its deadline. "
            "*CPU/req* is the server process's user+system CPU per answered request.",
            "",
            "| conn | app | req/s | p50 ms | p99 ms | 2xx | 5xx | other | errors | lost "
            "| unanswered | CPU/req ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        ratios: dict[int, dict[str, Stat]] = {}
        for connections, apps in data["runs"].items():
            stats = {}
            for app, runs in apps.items():
                ok = [sum(v for k, v in r["status"].items() if k.startswith("2")) for r in runs]
                bad = [sum(v for k, v in r["status"].items() if k.startswith("5")) for r in runs]
                other = [
                    sum(v for k, v in r["status"].items() if not k.startswith(("2", "5")))
                    for r in runs
                ]
                lost = unanswered = "—"
                if app == "service":
                    lost_n = sum(max(0, o - r["stored"]) for o, r in zip(ok, runs, strict=True))
                    extra = sum(max(0, r["stored"] - o) for o, r in zip(ok, runs, strict=True))
                    lost, unanswered = str(lost_n), str(extra)
                    stats["lost"] = lost_n
                    stats["5xx"] = sum(bad) + sum(r["errors"] for r in runs)
                cpu = Stat([r["cpu_s"] * 1e3 / max(r["requests"], 1) for r in runs])
                stats[app] = {
                    "rps": Stat([r["rps"] for r in runs]),
                    "p50": Stat([r["p50_ms"] for r in runs]),
                    "p99": Stat([r["p99_ms"] for r in runs]),
                }
                out.append(
                    f"| {connections} | {app} | {stats[app]['rps'].show(0)} "
                    f"| {stats[app]['p50'].show(1)} | {stats[app]['p99'].show(1)} "
                    f"| {sum(ok):,} | {sum(bad)} | {sum(other)} "
                    f"| {sum(r['errors'] for r in runs)} | {lost} | {unanswered} | {cpu.show(2)} |"
                )
            ratios[connections] = stats
        out.append("")
        out.append("| conn | req/s service ÷ baseline | p99 service ÷ baseline |")
        out.append("| --- | --- | --- |")
        for connections, stats in ratios.items():
            rps = ratio_stat(stats["service"]["rps"], stats["baseline"]["rps"])
            p99 = ratio_stat(stats["service"]["p99"], stats["baseline"]["p99"])
            out.append(f"| {connections} | {rps.show(2)} | {p99.show(2)} |")
            stats["rps_ratio"] = rps
            stats["p99_ratio"] = p99
        out.append("")
        out.append(
            f"Ratios are per repetition (each service run against the baseline run beside it). "
            f"Server log: {data['tracebacks']} tracebacks, {data['queue_warnings']:,} waitress "
            "`Task queue depth` warnings (one per request that waits for a thread)."
        )
        out.append("")
        s16, s64 = ratios.get(16), ratios.get(64)
        if s16:
            self.target(
                "create, 16 conn",
                f"{s16['rps_ratio'].show(2)}{TIMES} baseline req/s",
                f"≥ 0.5{TIMES} baseline req/s",
                s16["rps_ratio"].median >= 0.5,
            )
        if s64:
            self.target(
                "create, 64 conn",
                f"{s64['rps_ratio'].show(2)}{TIMES} baseline req/s",
                f"≥ 0.5{TIMES} baseline req/s",
                s64["rps_ratio"].median >= 0.5,
            )
            self.target(
                "create, 64 conn",
                f"p99 {s64['service']['p99'].show(1, 'ms')} = {s64['p99_ratio'].show(2)}{TIMES} "
                f"baseline {s64['baseline']['p99'].show(1, 'ms')}",
                f"p99 ≤ 2{TIMES} baseline p99",
                s64["p99_ratio"].median <= 2,
            )
            self.target(
                "create, 64 conn",
                f"{s64['5xx']} 5xx or failed requests",
                "zero 5xx",
                s64["5xx"] == 0,
            )
        lost = sum(s["lost"] for s in ratios.values())
        self.target(
            "create, 16 + 64 conn", f"{lost} lost", "zero lost (rows = 2xx answers)", lost == 0
        )
        return out

    def dispatch(self, data: dict[str, Any]) -> list[str]:
        mode = self.suite.mode
        service, huey = data["service"], data.get("huey")
        idle_note = "" if mode.name == "full" else " (quick mode: 10 s, not 60 s)"
        out = [
            "## 2. Dispatch latency and queue throughput",
            "",
            f"The no-op trainer (`MAIA_TRAINER=noop_trainer:train`), WORKERS=2. Latency: "
            f"{mode.dispatch_samples} trainings created one at a time, each waited for, per "
            f"repetition; `started_at - created_at` from the API (the child process has started "
            f"and reported; ms timestamps). huey: `SqliteHuey` (a file in a temporary folder), "
            f"`huey_consumer -w 2 -k thread` as its own process with huey's default polling "
            f"(0.1 s, {TIMES}1.15 per empty poll, at most 10 s); enqueue-to-start of a no-op task "
            f"(`time.time()` before enqueueing and at the task's start). After idle: "
            f"{mode.idle_seconds:g} s without work{idle_note}, then one. Throughput: "
            f"{mode.queue_n} created at once (4 connections), N ÷ (last finished - first "
            f"created).",
            "",
            "| figure | service | huey |",
            "| --- | --- | --- |",
        ]
        huey_p50 = Stat(huey["p50"]) if huey else Stat([])
        huey_p99 = Stat(huey["p99"]) if huey else Stat([])
        p50, p99 = Stat(service["p50"]), Stat(service["p99"])
        idle_s, idle_h = Stat(data["idle"]["service"]), Stat(data["idle"]["huey"])
        rate = Stat(data["throughput"]["service"])
        rate_h = Stat(data["throughput"].get("huey", []))
        out += [
            f"| start latency p50 | {p50.show(1, 'ms')} | {huey_p50.show(1, 'ms')} |",
            f"| start latency p99 | {p99.show(1, 'ms')} | {huey_p99.show(1, 'ms')} |",
            f"| created → finished p50 | {Stat(service['e2e_p50']).show(1, 'ms')} | — |",
            f"| after {mode.idle_seconds:g} s idle | {idle_s.show(1, 'ms')} "
            f"| {idle_h.show(1, 'ms')} |",
            f"| first run (starts the fork server; one run) | {data['cold_ms']:.0f} ms | — |",
            f"| no-op throughput, N={mode.queue_n} | {rate.show(1, '/s')} "
            f"| {rate_h.show(1, '/s')} |",
            "",
            f"Not succeeded in the throughput batches: "
            f"{data['throughput']['service_not_succeeded']}; server log tracebacks: "
            f"{data['tracebacks']}. A training runs in a child process started from a fork "
            "server; a huey task runs in a consumer thread.",
            "",
        ]
        self.target("dispatch", f"p50 {p50.show(1, 'ms')}", "p50 ≤ 20 ms", p50.median <= 20)
        self.target(
            "dispatch",
            f"p99 {p99.show(1, 'ms')}, huey {huey_p99.show(1, 'ms')}",
            "p99 ≤ huey's p99",
            p99.median <= huey_p99.median if huey else None,
        )
        self.target(
            f"dispatch after {mode.idle_seconds:g} s idle{idle_note}",
            idle_s.show(1, "ms"),
            "≤ 20 ms",
            idle_s.median <= 20,
        )
        self.target(
            "no-op queue throughput, WORKERS=2",
            rate.show(1, "/s"),
            "≥ 100 trainings/s",
            rate.median >= 100,
        )
        return out

    def reads(self, data: dict[str, Any]) -> list[str]:
        rows = data["rows"]
        scale = "" if rows >= 1_000_000 else f" (quick mode: {rows:,} rows, not 1,000,000)"
        mode = self.suite.mode
        statuses = ", ".join(f"{k} {v:,}" for k, v in data["statuses"].items())
        out = [
            "## 3. Reads at scale",
            "",
            f"{rows:,} trainings{scale} inserted with `sqlite3` `executemany` in one "
            f"transaction ({data['insert_s']:.1f} s) after `trainings init-db`: {statuses} "
            f"(queued ones wait out a retry back-off, so nothing runs). Database file "
            f"{data['db_mb']:,.0f} MB. One connection, requests one after another "
            f"({mode.read_requests} per repetition, at most {mode.read_seconds:g} s), after 20 "
            "warm-up requests; the file is in the page cache.",
            "",
            "| request | p50 ms | p99 ms | requests | not 200 |",
            "| --- | --- | --- | --- | --- |",
        ]
        figures = data["endpoints"]
        for name, path in data["paths"].items():
            f = figures[name]
            shown = path.replace(f"{{int:1:{rows}}}", "{random id}")
            out.append(
                f"| `GET {shown}` | {Stat(f['p50']).show(2)} | {Stat(f['p99']).show(2)} "
                f"| {sum(f['requests']):,} | {sum(f['non_200'])} |"
            )
        out.append("")
        at = f"at {rows:,} rows"
        for name, label in (("list", "list"), ("list_queued", "list queued"), ("get", "get")):
            p50, p99 = Stat(figures[name]["p50"]), Stat(figures[name]["p99"])
            self.target(
                f"{label} {at}",
                f"p50 {p50.show(2, 'ms')}, p99 {p99.show(2, 'ms')}",
                "p50 ≤ 10 ms, p99 ≤ 50 ms",
                p50.median <= 10 and p99.median <= 50,
            )
        count = Stat(figures["count_succeeded"]["p50"])
        self.target(
            f"count by status {at}",
            f"p50 {count.show(1, 'ms')}",
            "p50 ≤ 50 ms",
            count.median <= 50,
        )
        return out

    def training(self, data: dict[str, Any]) -> list[str]:
        rows = data["rows"]
        scale = "" if rows >= 1_000_000 else f" (quick mode: {rows:,} rows, not 1,000,000)"
        service, plain = data["service"], data["plain"]
        wall = Stat([r["wall_s"] for r in service])
        queue = Stat([r["queue_s"] * 1e3 for r in service])
        peaks = [r["peak_mb"] for r in service if r["peak_mb"] is not None]
        peak = Stat(peaks) if len(peaks) == len(service) else Stat([])
        plain_wall = Stat([r["wall_s"] for r in plain])
        plain_work = Stat([r["work_s"] for r in plain])
        plain_import = Stat([r["import_s"] for r in plain])
        plain_peak = Stat([r["peak_mb"] for r in plain])
        wall_ratio = ratio_stat(wall, plain_wall)
        work_ratio = ratio_stat(wall, plain_work)
        peak_ratio = ratio_stat(peak, plain_peak) if peak.values else Stat([])
        auc = Stat([r["roc_auc"] for r in service if r["roc_auc"] is not None])
        plain_auc = Stat([r["roc_auc"] for r in plain])
        out = [
            "## 4. Training overhead",
            "",
            f"The built-in scoring trainer (logistic regression) on `demo-data --rows {rows}`"
            f"{scale}, {data.get('csv_mb', 0):.0f} MB of CSV, through the service (created "
            'with meta `{"dataset": "loans.csv"}`, polled until succeeded; wall = '
            "`finished_at - started_at`, peak memory from the run's log line `peak memory … MB`, "
            "the child's `ru_maxrss`), against `bench/plain_training.py` doing the same work as "
            "a subprocess (wall time of the whole process; peak from "
            "`getrusage(RUSAGE_CHILDREN).ru_maxrss`). Runs alternate.",
            "",
            "| figure | service | plain script | ratio |",
            "| --- | --- | --- | --- |",
            f"| wall | {wall.show(2, 's')} | {plain_wall.show(2, 's')} | {wall_ratio.show(2)} |",
            f"| — the script without interpreter start and imports | | "
            f"{plain_work.show(2, 's')} (imports {plain_import.show(2, 's')}) "
            f"| {work_ratio.show(2)} |",
            f"| peak memory | {peak.show(0, 'MB')} | {plain_peak.show(0, 'MB')} "
            f"| {peak_ratio.show(2)} |",
            f"| ROC AUC | {auc.show(4)} | {plain_auc.show(4)} | |",
            f"| created → started | {queue.show(0, 'ms')} | | |",
            "",
            "The service's child is forked from a fork server that has already imported the "
            "trainer (scikit-learn, pandas), so its wall has no interpreter start or imports; "
            "the second row compares like with like.",
            "",
        ]
        self.target(
            "training wall",
            f"{wall.show(2, 's')} = {wall_ratio.show(2)}{TIMES} the plain script's "
            f"{plain_wall.show(2, 's')}",
            f"≤ 1.2{TIMES} plain script",
            wall_ratio.median <= 1.2,
        )
        self.target(
            "training wall, like for like",
            f"{work_ratio.show(2)}{TIMES} the script's own work "
            f"{plain_work.show(2, 's')} (no interpreter start, no imports)",
            f"≤ 1.2{TIMES} (a stricter reading of the target above)",
            work_ratio.median <= 1.2,
        )
        self.target(
            "training peak memory",
            f"{peak.show(0, 'MB')} = {peak_ratio.show(2)}{TIMES} the plain script's "
            f"{plain_peak.show(0, 'MB')}"
            if peak.values
            else "n/a (no `peak memory` line in the log)",
            f"≤ 1.5{TIMES} plain script",
            peak_ratio.median <= 1.5 if peak.values else None,
        )
        return out


def ratio_stat(top: Stat, bottom: Stat) -> Stat:
    """Per-repetition ratios (the runs were made side by side)."""
    return Stat([a / b for a, b in zip(top.values, bottom.values, strict=False) if b])


def machine(code: tuple[str, str]) -> dict[str, str]:
    cpu = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    memory = "unknown"
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory = f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    versions = {}
    for package in ("Flask", "waitress", "SQLAlchemy", "huey", "scikit-learn", "pandas"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return {
        "code": code_version(code),
        "CPU": f"{cpu}, {os.cpu_count()} cores",
        "memory": memory,
        "OS": f"{platform.system()} {platform.release()}",
        "Python": platform.python_version(),
        **versions,
        "SQLite": sqlite3.sqlite_version,
    }


def code_state() -> tuple[str, str]:
    """The commit checked out, and a digest of the uncommitted changes to the service ("")."""

    def git(*args: str) -> str:
        completed = subprocess.run(
            ["git", *args], cwd=ROOT, capture_output=True, text=True, check=False, timeout=30
        )
        return completed.stdout if completed.returncode == 0 else ""

    commit = git("rev-parse", "--short", "HEAD").strip()
    diff = git("diff", "HEAD", "--", "maia_trainings", "setup.cfg", "pyproject.toml")
    return commit, hashlib.sha256(diff.encode()).hexdigest()[:12] if diff else ""


def code_version(at_start: tuple[str, str]) -> str:
    """The code measured: the commit, uncommitted changes, and whether it changed meanwhile."""
    commit, changes = at_start
    if not commit:
        return "unknown (not a git checkout)"
    text = f"git {commit}" + (
        f" with uncommitted changes to the service ({changes})" if changes else ""
    )
    if code_state() != at_start:
        text += "; **the service's code changed during the run**: figures may mix versions"
    return text


def engine_description(engine: str) -> str:
    if engine == "wrk":
        version = subprocess.run(
            ["wrk", "--version"], capture_output=True, text=True, check=False, timeout=10
        )
        first = (version.stdout or version.stderr).splitlines()[:1]
        name = first[0].split(" [")[0] if first else "wrk"
        return (
            f"{name}, 1 thread, Lua script (`bench/loadgen.py`) for creates; Python threads "
            "with persistent connections for counted runs"
        )
    return "`bench/loadgen.py`: Python threads, one persistent connection each"


def summary_table(report: Report) -> str:
    rows = ["| target | measured | reached |", "| --- | --- | --- |"]
    for target in report.targets:
        verdict = {True: "yes", False: "**no**", None: "n/a"}[target.reached]
        rows.append(f"| {target.name}: {target.bound} | {target.measured} | {verdict} |")
    mode = report.suite.mode.name
    return (
        f"Measured with `BENCH={mode} make bench` on {report.began:%Y-%m-%d} "
        f"({os.cpu_count()} cores); details in [bench/RESULTS.md](bench/RESULTS.md).\n\n"
        + "\n".join(rows)
    )


def update_readme(table: str) -> bool:
    """Replace the README's summary between the markers; False when they are missing."""
    text = README.read_text()
    start, end = text.find(MARK_START), text.find(MARK_END)
    if start < 0 or end < start:
        return False
    updated = text[: start + len(MARK_START)] + "\n" + table + "\n" + text[end:]
    README.write_text(updated)
    return True


# Main --------------------------------------------------------------------------------------


def main() -> int:
    mode_name = os.environ.get("BENCH", "quick").strip().lower() or "quick"
    if mode_name not in ("quick", "full"):
        print(f"BENCH must be quick or full, not {mode_name!r}", file=sys.stderr)
        return 2
    mode = QUICK if mode_name == "quick" else FULL
    engine = os.environ.get("BENCH_ENGINE", "auto")
    if engine == "auto":
        engine = "wrk" if shutil.which("wrk") else "python"
    if engine == "wrk" and not shutil.which("wrk"):
        print("BENCH_ENGINE=wrk but wrk is not installed", file=sys.stderr)
        return 2
    only = [s.strip() for s in os.environ.get("BENCH_ONLY", "").split(",") if s.strip()]
    unknown = set(only) - set(SECTIONS)
    if unknown:
        print(f"BENCH_ONLY: unknown {sorted(unknown)}; use {','.join(SECTIONS)}", file=sys.stderr)
        return 2
    sections = only or list(SECTIONS)

    def interrupted(signum: int, _frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, interrupted)
    began = dt.datetime.now(dt.UTC)
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="maia-bench-"))
    suite = Suite(mode, workdir, engine)
    log(f"BENCH={mode.name}, load generator {engine}, work folder {workdir}")
    ok = False
    try:
        for section in sections:
            getattr(suite, f"bench_{section}")()
        ok = True
    finally:
        suite.processes.stop_all()
        if os.environ.get("BENCH_KEEP") or not ok:
            log(f"kept the work folder {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = Report(suite, began, time.monotonic() - started)
    text = report.build()
    table = summary_table(report)
    if only:
        print(text)
        log("BENCH_ONLY given: RESULTS.md and README.md left as they were")
        return 0
    RESULTS.write_text(text)
    log(f"wrote {RESULTS.relative_to(ROOT)} ({report.seconds / 60:.1f} min)")
    if update_readme(table):
        log("updated the summary table in README.md")
    else:
        print(table)
        log(
            f"README.md has no {MARK_START} … {MARK_END} markers: the summary table is printed "
            "above; add the markers and it will be kept there"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
