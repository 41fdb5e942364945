"""The measurements of ``make bench``: the suite's modes, servers and load, and its parts
(the sixth, scoring, in ``scoring.py``)."""

from __future__ import annotations

import datetime as dt
import json
import re
import subprocess
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import huey_bench
from common import (
    BENCH,
    PYTHON,
    BenchError,
    Client,
    Processes,
    Service,
    Stat,
    child_env,
    ensure_up,
    flask,
    free_port,
    iso,
    log,
    percentile,
    process_cpu_seconds,
    start_service,
    start_worker,
)
from postgres import PostgresDatabases
from rows import insert_trainings
from sqlalchemy.exc import SQLAlchemyError

REPS = 3
THREADS = 8
FINAL = ("succeeded", "failed", "cancelled")
PEAK_MEMORY = re.compile(r"peak memory ([0-9.]+) MB")
SECTIONS = ("create", "dispatch", "reads", "training", "nodes", "score")


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
    node_samples: int  # trainings created one at a time per setup and repetition (nodes)
    claims: int  # timed claims per database and repetition
    backlog: int  # queued trainings not yet due beside the claims


QUICK = Mode("quick", 5, 50, 10, 200, 200_000, 200, 8, 200_000, 40, 200, 100_000)
FULL = Mode("full", 15, 200, 60, 500, 1_000_000, 1000, 30, 1_000_000, 200, 1000, 100_000)


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an API timestamp (``2026-01-02T03:04:05.678Z``)."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def create_body() -> str:
    """The documented create body for loadgen: a fresh uuid each, and ``scheduled_at`` an hour
    ahead, so nothing runs while the creates are measured."""
    later = iso(dt.datetime.now(dt.UTC) + dt.timedelta(hours=1))
    return (
        '{"uuid":"{uuid}","accuracy":0,"precission":0,"mae":0,"rmse":0,'
        '"binaryPath":"string","version":"string","meta":"string",'
        f'"scheduled_at":"{later}"' + "}"
    )


@dataclass(frozen=True)
class CreateTarget:
    """A server the creates go to; a ``service``'s stored rows are counted against its 2xx."""

    url: str
    headers: dict[str, str]
    pid: int
    service: Service | None = None

    @classmethod
    def of(cls, service: Service) -> CreateTarget:
        headers = {"Authorization": f"Bearer {service.token}", "Content-Type": "application/json"}
        return cls(service.url, headers, service.process.pid, service)


class Suite:
    """One run of the suite: its mode, work folder and processes, and what each part measured."""

    def __init__(self, mode: Mode, workdir: Path, engine: str) -> None:
        self.mode = mode
        self.workdir = workdir
        self.engine = engine
        self.processes = Processes()
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []
        # The PostgreSQL databases of the nodes part, dropped by close() even after a failure.
        self.postgres: PostgresDatabases | None = None

    def close(self) -> None:
        """Stop every process, then drop the PostgreSQL databases made (their servers gone)."""
        self.processes.stop_all()
        if self.postgres is not None:
            try:
                self.postgres.drop_all()
            except SQLAlchemyError as exc:  # reported, not raised over the run's own error
                log(f"could not drop the bench's PostgreSQL databases {self.postgres.made}: {exc}")

    # Environment and commands ----------------------------------------------------------------

    def env(self, instance: Path | None = None, **settings: str) -> dict[str, str]:
        env = child_env(instance, python_path=[BENCH], settings=settings, drop=("MAIA_", "BENCH_"))
        env["PYTHONUNBUFFERED"] = "1"
        return env

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
        return start_service(self.processes, name, instance, env, threads=THREADS, prepare=prepare)

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

    def create_runs(
        self, targets: dict[str, CreateTarget], connections: int
    ) -> dict[str, list[dict[str, Any]]]:
        """``POST /trainings`` with the documented body at ``connections`` connections against
        each target, REPS times in alternating order after a warm-up; each run's loadgen
        figures with the server's CPU seconds and, for a service, the rows it stored."""
        body = create_body()

        def post(target: CreateTarget, duration: float) -> dict[str, Any]:
            return self.loadgen(
                target.url,
                method="POST",
                path="/trainings",
                headers=target.headers,
                body=body,
                connections=connections,
                duration=duration,
            )

        for target in targets.values():  # warm-up, not counted
            post(target, 1)
        time.sleep(1)
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for rep in range(REPS):
            order = list(targets) if rep % 2 == 0 else list(reversed(targets))
            for name in order:
                target = targets[name]
                before = target.service.count() if target.service else 0
                cpu_before = process_cpu_seconds(target.pid)
                result = post(target, self.mode.create_seconds)
                result["cpu_s"] = process_cpu_seconds(target.pid) - cpu_before
                if target.service:
                    # Requests wrk dropped at its deadline may still commit: wait for the
                    # count to settle.
                    result["stored"] = target.service.settled_count() - before
                runs[name].append(result)
                log(
                    f"  {connections} conn {name} rep {rep + 1}: {result['rps']:.0f} req/s, "
                    f"p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
                    f"status {result['status']}, errors {result['errors']}"
                )
                time.sleep(0.5)
        return runs

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
        ensure_up(port, baseline, baseline_log)
        targets = {
            "service": CreateTarget.of(service),
            "baseline": CreateTarget(
                f"http://127.0.0.1:{port}", {"Content-Type": "application/json"}, baseline.pid
            ),
        }
        runs = {connections: self.create_runs(targets, connections) for connections in (16, 64)}
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
        out: dict[str, Any] = {"cold_ms": warm_up(client)}
        figures: dict[str, list[float]] = {"p50": [], "p99": [], "e2e_p50": []}
        for rep in range(REPS):
            for name, value in one_at_a_time(client, mode.dispatch_samples).items():
                figures[name].append(value)
            log(
                f"  service rep {rep + 1}: p50 {figures['p50'][-1]:.1f} ms, "
                f"p99 {figures['p99'][-1]:.1f} ms"
            )
        out["service"] = figures

        huey = (
            huey_bench.HueyBench(self.workdir, self.processes, self.env())
            if huey_bench.available()
            else None
        )
        if huey is not None:
            try:
                huey.start()
                out["huey"] = huey.sequential(mode.dispatch_samples, REPS)
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
            idle_service.append(start_latency_ms(noop_training(client)))
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
            flask(env, "trainings", "demo-data", "--rows", str(rows), str(csv))
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

    # 5. Nodes: SQLite and PostgreSQL ---------------------------------------------------------

    def bench_nodes(self) -> None:
        mode = self.mode
        postgres = PostgresDatabases()
        try:
            version = postgres.version()
        except SQLAlchemyError as exc:
            reason = f"PostgreSQL at {postgres.server.render_as_string()} cannot be reached"
            log(f"nodes: {reason} ({type(exc).__name__}); the part is skipped")
            self.notes.append(
                f"Nodes: {reason}: set BENCH_POSTGRES_URL to a server the bench may make "
                "databases on."
            )
            self.results["nodes"] = {"skipped": reason}
            return
        self.postgres = postgres
        log(f"nodes: SQLite and PostgreSQL {version} side by side, {REPS} reps")
        out: dict[str, Any] = {"postgres": version, "server": postgres.server.render_as_string()}
        out["create"] = self.nodes_create(postgres)
        out["dispatch"] = self.nodes_dispatch(postgres)
        log(f"  claims: {mode.claims} per database and rep, 0 and {mode.backlog:,} waiting")
        out["claims"] = {
            "sqlite": self.nodes_claims("sqlite", None),
            "postgresql": self.nodes_claims("postgresql", postgres),
        }
        self.results["nodes"] = out
        postgres.drop_all()

    def nodes_create(self, postgres: PostgresDatabases) -> dict[str, Any]:
        """Creates at 16 connections on one server per database, in alternation."""
        log(f"  creates at 16 conn: SQLite and PostgreSQL, {self.mode.create_seconds:g} s per run")
        services = {
            "sqlite": self.start_service("nodes-create-sqlite"),
            "postgresql": self.start_service(
                "nodes-create-postgresql", DATABASE_URL=postgres.create("create")
            ),
        }
        targets = {name: CreateTarget.of(service) for name, service in services.items()}
        out: dict[str, Any] = {"runs": self.create_runs(targets, 16), "tracebacks": 0}
        for service in services.values():
            out["tracebacks"] += (
                (service.instance / "server.log").read_text(errors="replace").count("Traceback")
            )
            self.stop_service(service)
        return out

    def nodes_dispatch(self, postgres: PostgresDatabases) -> dict[str, Any]:
        """The no-op trainer's start latency on PostgreSQL: from an API node to a worker node
        that polls only every minute (a fast start is NOTIFY's doing), and on one node that
        serves and runs; trainings created one at a time, setups in alternation."""
        samples = self.mode.node_samples
        log(f"  dispatch on PostgreSQL: API node → worker node, and one node; {samples} x {REPS}")
        url = postgres.create("dispatch_nodes")
        api = self.start_service("nodes-api", DATABASE_URL=url, SCHEDULER_ENABLED="false")
        worker_env = self.env(
            api.instance,
            DATABASE_URL=url,
            TRAINER="noop_trainer:train",
            WORKERS="2",
            POLL_INTERVAL="60",
        )
        worker = start_worker(self.processes, api.instance, worker_env)
        single = self.start_service(
            "nodes-single",
            DATABASE_URL=postgres.create("dispatch_single"),
            TRAINER="noop_trainer:train",
            WORKERS="2",
        )
        # A start only the worker's poll would explain takes up to a minute: past the warm-up
        # (the first run starts the worker's fork server), a NOTIFY that does not arrive fails
        # the part within seconds instead.
        setups = {"nodes": (api.client, 10.0), "single": (single.client, 60.0)}
        out: dict[str, Any] = {}
        for name, (client, _timeout) in setups.items():
            out[name] = {"cold_ms": warm_up(client), "p50": [], "p99": [], "e2e_p50": []}
        for rep in range(REPS):
            order = list(setups) if rep % 2 == 0 else list(reversed(setups))
            for name in order:
                client, timeout = setups[name]
                for figure, value in one_at_a_time(client, samples, timeout).items():
                    out[name][figure].append(value)
                log(
                    f"  {name} rep {rep + 1}: p50 {out[name]['p50'][-1]:.1f} ms, "
                    f"p99 {out[name]['p99'][-1]:.1f} ms"
                )
        logs = [
            api.instance / "server.log",
            api.instance / "worker.log",
            single.instance / "server.log",
        ]
        out["tracebacks"] = sum(
            path.read_text(errors="replace").count("Traceback") for path in logs
        )
        self.stop_service(single)
        self.processes.stop(worker)
        self.stop_service(api)
        return out

    def nodes_claims(self, backend: str, postgres: PostgresDatabases | None) -> dict[str, Any]:
        """``bench/claims.py`` on two databases at the head schema, one with a backlog."""
        mode = self.mode
        instance = self.workdir / f"nodes-claims-{backend}"
        instance.mkdir()
        urls = [
            postgres.create(f"claims_{name}")
            if postgres is not None
            else f"sqlite:///{instance / f'{name}.sqlite3'}"
            for name in ("empty", "backlog")
        ]
        for url in urls:
            flask(self.env(instance, DATABASE_URL=url), "trainings", "init-db")
        command = [PYTHON, str(BENCH / "claims.py"), *urls]
        command += ["--backlog", str(mode.backlog), "--claims", str(mode.claims)]
        command += ["--reps", str(REPS)]
        completed = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
            env=self.env(instance),
            cwd=instance,
        )
        if completed.returncode != 0:
            raise BenchError(f"claims.py on {backend} failed: {completed.stderr[-2000:]}")
        out: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
        log(f"  {backend}: filled in {out['fill_s']:.1f} s")
        for name in ("empty", "backlog"):
            log(
                f"  {backend}, {out[name]['waiting']:,} waiting: p50 "
                f"{Stat(out[name]['p50']).show(2)} ms, p99 {Stat(out[name]['p99']).show(2)} ms"
            )
        return out

    # 6. Scoring ------------------------------------------------------------------------------

    def bench_score(self) -> None:
        import scoring  # it imports this module

        scoring.measure(self)


def noop_training(client: Client, timeout: float = 60) -> dict[str, Any]:
    """Create a training (the server runs the no-op trainer) and wait until it succeeded."""
    created = client.json("POST", "/trainings", {"uuid": str(uuid.uuid4())})
    finished = wait_final(client, created["id"], timeout=timeout, interval=0.01)
    if finished["status"] != "succeeded":
        raise BenchError(f"no-op training {finished['id']}: {finished['status']}")
    return finished


def start_latency_ms(training: dict[str, Any]) -> float:
    """``started_at - created_at`` of a training, in ms."""
    return (parse_time(training["started_at"]) - parse_time(training["created_at"])) * 1e3


def warm_up(client: Client) -> float:
    """Four no-op trainings, not counted; the first one's start latency in ms (it starts the
    fork server)."""
    cold = start_latency_ms(noop_training(client))
    for _ in range(3):
        noop_training(client)
    return cold


def one_at_a_time(client: Client, samples: int, timeout: float = 60) -> dict[str, float]:
    """``samples`` no-op trainings created one at a time, each waited for: the p50 and p99 of
    their start latency and the p50 of created → finished, in ms."""
    trainings = [noop_training(client, timeout) for _ in range(samples)]
    whole = [(parse_time(t["finished_at"]) - parse_time(t["created_at"])) * 1e3 for t in trainings]
    latencies = [start_latency_ms(t) for t in trainings]
    return {
        "p50": percentile(latencies, 0.5),
        "p99": percentile(latencies, 0.99),
        "e2e_p50": percentile(whole, 0.5),
    }


def metric(training: dict[str, Any], name: str) -> Any:
    metrics = training.get("metrics") or {}
    if isinstance(metrics, str):
        metrics = json.loads(metrics)
    return metrics.get(name)


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
