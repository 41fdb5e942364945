"""The report of ``make bench``: bench/RESULTS.md, its targets and the README's summary table."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import importlib.metadata
import os
import platform
import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import scoring
from common import BENCH, DASH, ROOT, Stat, log
from measure import REPS, THREADS, Suite

RESULTS = BENCH / "RESULTS.md"
README = ROOT / "README.md"
MARK_START = "<!-- bench:start -->"
MARK_END = "<!-- bench:end -->"
TIMES = "\u00d7"  # multiplication sign, for ratios


@dataclass
class Target:
    name: str
    measured: str
    bound: str
    reached: bool | None  # None: could not be measured


@dataclass
class CreateFigures:
    """The figures of one server's create runs (see Suite.create_runs), for a table row."""

    stats: dict[str, Stat]  # rps, p50, p99
    ok: int
    bad: int  # 5xx answers
    other: int
    errors: int  # requests without an answer
    lost: int | None  # 2xx answers without a stored row (None: rows not counted)
    unanswered: int | None  # rows stored for requests left without an answer
    cpu: Stat  # ms of server CPU per answered request

    @classmethod
    def of(cls, runs: list[dict[str, Any]]) -> CreateFigures:
        answers = [status_classes(r["status"]) for r in runs]
        ok = [a["2xx"] for a in answers]
        lost = unanswered = None
        if all("stored" in r for r in runs):
            lost = sum(max(0, o - r["stored"]) for o, r in zip(ok, runs, strict=True))
            unanswered = sum(max(0, r["stored"] - o) for o, r in zip(ok, runs, strict=True))
        return cls(
            stats={
                "rps": Stat([r["rps"] for r in runs]),
                "p50": Stat([r["p50_ms"] for r in runs]),
                "p99": Stat([r["p99_ms"] for r in runs]),
            },
            ok=sum(ok),
            bad=sum(a["5xx"] for a in answers),
            other=sum(a["other"] for a in answers),
            errors=sum(r["errors"] for r in runs),
            lost=lost,
            unanswered=unanswered,
            cpu=Stat([r["cpu_s"] * 1e3 / max(r["requests"], 1) for r in runs]),
        )

    @property
    def failed(self) -> int:
        """5xx answers and requests without an answer."""
        return self.bad + self.errors

    def cells(self) -> str:
        """req/s | p50 ms | p99 ms | 2xx | 5xx | other | errors | lost | unanswered | CPU/req ms"""
        lost = "—" if self.lost is None else str(self.lost)
        unanswered = "—" if self.unanswered is None else str(self.unanswered)
        return (
            f"{self.stats['rps'].show(0)} | {self.stats['p50'].show(1)} "
            f"| {self.stats['p99'].show(1)} | {self.ok:,} | {self.bad} | {self.other} "
            f"| {self.errors} | {lost} | {unanswered} | {self.cpu.show(2)}"
        )


@dataclass
class Report:
    """RESULTS.md of a finished suite; the targets are collected as ``build`` renders."""

    suite: Suite
    code: tuple[str, str]  # code_state() when the suite began
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
        for key, value in machine(self.code).items():
            add(f"| {key} | {value} |")
        add(f"| load generator | {engine_description(self.suite.engine)} |")
        add("")
        sections = [
            ("create", self.create),
            ("dispatch", self.dispatch),
            ("reads", self.reads),
            ("training", self.training),
            ("nodes", self.nodes),
            ("score", self.score),
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
        ratios: dict[int, dict[str, Any]] = {}
        for connections, apps in data["runs"].items():
            stats: dict[str, Any] = {}
            for app, runs in apps.items():
                figures = CreateFigures.of(runs)
                if app == "service":
                    stats["lost"] = figures.lost
                    stats["5xx"] = figures.failed
                stats[app] = figures.stats
                out.append(f"| {connections} | {app} | {figures.cells()} |")
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

    def score(self, data: dict[str, Any]) -> list[str]:
        return scoring.render(self, data)

    def nodes(self, data: dict[str, Any]) -> list[str]:
        out = ["## 5. Nodes: SQLite and PostgreSQL", ""]
        if "skipped" in data:
            out += [f"Not measured: {data['skipped']}.", ""]
            backlog = f"{self.suite.mode.backlog:,}"
            for name, bound in (
                ("create on PostgreSQL, 16 conn", "none: reported beside SQLite"),
                ("create on SQLite and PostgreSQL, 16 conn", "zero lost, zero 5xx"),
                (
                    "dispatch API node → worker node (PostgreSQL)",
                    f"p50 ≤ 2{TIMES} one node's p50, or ≤ 20 ms",
                ),
                (f"claim with {backlog} waiting, SQLite", f"p50 ≤ 1.5{TIMES} with none waiting"),
                (
                    f"claim with {backlog} waiting, PostgreSQL",
                    f"p50 ≤ 1.5{TIMES} with none waiting",
                ),
            ):
                self.target(name, "n/a (PostgreSQL not reachable)", bound, None)
            return out
        out += [
            f"PostgreSQL {data['postgres']} at `{data['server']}` (on this machine), each use "
            "in a database of its own made for this run and dropped at its end; SQLite in a "
            "file of the instance folder, as in the other parts.",
            "",
        ]
        out += self.nodes_create(data["create"])
        out += self.nodes_dispatch(data["dispatch"])
        out += self.nodes_claims(data["claims"])
        return out

    def nodes_create(self, data: dict[str, Any]) -> list[str]:
        mode = self.suite.mode
        out = [
            "### Creates at 16 connections",
            "",
            f"As in part 1 (the documented body, `scheduled_at` an hour ahead, the scheduler on, "
            f"waitress with {THREADS} threads), {mode.create_seconds:g} s per run, one server per "
            "database in alternation.",
            "",
            "| database | req/s | p50 ms | p99 ms | 2xx | 5xx | other | errors | lost "
            "| unanswered | CPU/req ms |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        figures = {name: CreateFigures.of(runs) for name, runs in data["runs"].items()}
        for name, shown in BACKENDS.items():
            out.append(f"| {shown} | {figures[name].cells()} |")
        sqlite, postgresql = figures["sqlite"].stats, figures["postgresql"].stats
        rps = ratio_stat(postgresql["rps"], sqlite["rps"])
        p99 = ratio_stat(postgresql["p99"], sqlite["p99"])
        out += [
            "",
            f"PostgreSQL ÷ SQLite, per repetition: req/s {rps.show(2)}, p99 {p99.show(2)}. "
            f"Server log tracebacks: {data['tracebacks']}.",
            "",
        ]
        self.target(
            "create on PostgreSQL, 16 conn",
            f"{postgresql['rps'].show(0, 'req/s')} = {rps.show(2)}{TIMES} SQLite's "
            f"{sqlite['rps'].show(0, 'req/s')}",
            # Reported, not judged: on one 2-core box the PostgreSQL server takes CPU from the
            # service; what PostgreSQL buys is more boxes, not a faster one.
            "none: reported beside SQLite",
            None,
        )
        lost = sum(f.lost or 0 for f in figures.values())
        failed = sum(f.failed for f in figures.values())
        self.target(
            "create on SQLite and PostgreSQL, 16 conn",
            f"{lost} lost, {failed} 5xx or failed requests",
            "zero lost, zero 5xx",
            lost == 0 and failed == 0,
        )
        return out

    def nodes_dispatch(self, data: dict[str, Any]) -> list[str]:
        samples = self.suite.mode.node_samples
        nodes, single = data["nodes"], data["single"]
        p50, p50_single = Stat(nodes["p50"]), Stat(single["p50"])
        p99, p99_single = Stat(nodes["p99"]), Stat(single["p99"])
        e2e, e2e_single = Stat(nodes["e2e_p50"]), Stat(single["e2e_p50"])
        p50_ratio, p99_ratio = ratio_stat(p50, p50_single), ratio_stat(p99, p99_single)
        out = [
            "### Dispatch from an API node to a worker node (PostgreSQL)",
            "",
            "An API-only node (`trainings serve` with `MAIA_SCHEDULER_ENABLED=false`) and a "
            "worker node (`trainings worker`, WORKERS=2, `MAIA_POLL_INTERVAL=60`: only the API "
            "node's NOTIFY can start a training sooner than its next look, a minute away) on one "
            "database; beside them one node that serves and runs (part 2's setup) on another. "
            f"The no-op trainer; {samples} trainings created one at a time and each waited for, "
            "per repetition, the setups in alternation; `started_at - created_at` from the API "
            "(ms timestamps).",
            "",
            "| figure | API node → worker node | one node | ratio |",
            "| --- | --- | --- | --- |",
            f"| start latency p50 | {p50.show(1, 'ms')} | {p50_single.show(1, 'ms')} "
            f"| {p50_ratio.show(2)} |",
            f"| start latency p99 | {p99.show(1, 'ms')} | {p99_single.show(1, 'ms')} "
            f"| {p99_ratio.show(2)} |",
            f"| created → finished p50 | {e2e.show(1, 'ms')} | {e2e_single.show(1, 'ms')} "
            f"| {ratio_stat(e2e, e2e_single).show(2)} |",
            f"| first run (starts the fork server; one run) | {nodes['cold_ms']:.0f} ms "
            f"| {single['cold_ms']:.0f} ms | |",
            "",
            f"Server and worker log tracebacks: {data['tracebacks']}.",
            "",
        ]
        self.target(
            "dispatch API node → worker node (PostgreSQL)",
            f"p50 {p50.show(1, 'ms')} = {p50_ratio.show(2)}{TIMES} one node's "
            f"{p50_single.show(1, 'ms')}",
            f"p50 ≤ 2{TIMES} one node's p50, or ≤ 20 ms",
            p50_ratio.median <= 2 or p50.median <= 20,
        )
        return out

    def nodes_claims(self, data: dict[str, dict[str, Any]]) -> list[str]:
        mode = self.suite.mode
        backlog = f"{mode.backlog:,}"
        finished = data["sqlite"]["finished"]
        out = [
            "### Claims with a backlog",
            "",
            "`queue.claim_next` timed in-process (`bench/claims.py`: `create_app` with the "
            "database's URL, its `Database` and one session, no server). On each of SQLite "
            f"and PostgreSQL two databases at the head schema with {finished} finished "
            "trainings, one also holding "
            f"{backlog} queued trainings due a day from now (waiting out a back-off), inserted "
            "in bulk (PostgreSQL then `ANALYZE`d, as autovacuum would soon after such a load). "
            f"Per repetition and database, in alternation: {mode.claims} times, one due queued "
            "training is inserted, its claim timed (the call only), and it is finished.",
            "",
            "| database | waiting (not due) | claim p50 ms | claim p99 ms | p50 ÷ none waiting |",
            "| --- | --- | --- | --- | --- |",
        ]
        plans = []
        for name, shown in BACKENDS.items():
            figures = data[name]
            empty, full = figures["empty"], figures["backlog"]
            ratio = ratio_stat(Stat(full["p50"]), Stat(empty["p50"]))
            for held in (empty, full):
                shown_ratio = ratio.show(2) if held is full else ""
                out.append(
                    f"| {shown} | {held['waiting']:,} | {Stat(held['p50']).show(2)} "
                    f"| {Stat(held['p99']).show(2)} | {shown_ratio} |"
                )
            plans.append(
                f"- {shown} (filled in {figures['fill_s']:.1f} s), {full['waiting']:,} waiting: "
                f"`{full['plan']}`; none waiting: `{empty['plan']}`"
            )
            self.target(
                f"claim with {backlog} waiting, {shown}",
                f"p50 {Stat(full['p50']).show(2, 'ms')} = {ratio.show(2)}{TIMES} the "
                f"{Stat(empty['p50']).show(2, 'ms')} with none waiting",
                f"p50 ≤ 1.5{TIMES} with none waiting",
                ratio.median <= 1.5,
            )
        out += ["", "How each database finds the first due training (after the claims):", ""]
        out += [*plans, ""]
        return out


BACKENDS = {"sqlite": "SQLite", "postgresql": "PostgreSQL"}


def status_classes(status: dict[str, int]) -> dict[str, int]:
    """Answers counted by HTTP status (loadgen's ``status``) as 2xx, 5xx and other."""
    classes = {"2xx": 0, "5xx": 0, "other": 0}
    for code, count in status.items():
        classes[f"{code[0]}xx" if code[:1] in ("2", "5") else "other"] += count
    return classes


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


def publish(text: str, table: str, seconds: float) -> None:
    """Write RESULTS.md and the README's summary table (printed when its markers are missing)."""
    RESULTS.write_text(text)
    log(f"wrote {RESULTS.relative_to(ROOT)} ({seconds / 60:.1f} min)")
    if update_readme(table):
        log("updated the summary table in README.md")
    else:
        print(table)
        log(
            f"README.md has no {MARK_START} … {MARK_END} markers: the summary table is printed "
            "above; add the markers and it will be kept there"
        )
