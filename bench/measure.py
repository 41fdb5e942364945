"""The measurements of ``make bench``: the suite's modes, servers and load, and its four parts."""

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
)
from rows import insert_trainings

REPS = 3
THREADS = 8
FINAL = ("succeeded", "failed", "cancelled")
PEAK_MEMORY = re.compile(r"peak memory ([0-9.]+) MB")
SECTIONS = ("create", "dispatch", "reads", "training")


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


def parse_time(text: str | None) -> float | None:
    """Seconds since the epoch of an API timestamp (``2026-01-02T03:04:05.678Z``)."""
    if not text:
        return None
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


class Suite:
    """One run of the suite: its mode, work folder and processes, and what each part measured."""

    def __init__(self, mode: Mode, workdir: Path, engine: str) -> None:
        self.mode = mode
        self.workdir = workdir
        self.engine = engine
        self.processes = Processes()
        self.results: dict[str, Any] = {}
        self.notes: list[str] = []

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
        ensure_up(port, baseline, baseline_log)
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
