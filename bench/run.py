"""The benchmark suite (``make bench``): creates, dispatch, reads, training overhead, nodes and
scoring.

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
5. Nodes: SQLite and PostgreSQL side by side (each PostgreSQL use in a database of its own,
   ``maia_bench_<pid>_<name>`` on ``BENCH_POSTGRES_URL``'s server, dropped at the end): creates
   at 16 connections on one server per database; on PostgreSQL, the no-op trainer's start
   latency from an API-only node to a ``trainings worker`` node polling once a minute (NOTIFY
   wakes it), beside one node that serves and runs; and ``queue.claim_next`` timed in-process
   (``bench/claims.py``) with 0 and 100,000 queued trainings not yet due.
6. Scoring: ``POST /models/{name}/score`` with one row and with 10,000 rows, for a logistic
   regression and a random forest champion, against the same model's bare ``predict_proba`` on
   a DataFrame of the same rows in the bench process (``bench/scoring.py``).

It writes ``bench/RESULTS.md`` and the summary table of README.md between the markers
``<!-- bench:start -->`` and ``<!-- bench:end -->`` (printed instead when they are missing).
``BENCH_ONLY=create,dispatch,reads,training,nodes,score`` runs a part and only prints its results.

The parts live in ``measure.py`` (with the read benchmark's rows in ``rows.py``, the huey side
in ``huey_bench.py``, the timed claims in ``claims.py`` and the PostgreSQL databases in
``postgres.py``), the report in ``report.py``; ``common.py`` is shared with ``loadgen.py`` and
``soak.py``.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import sys
import tempfile
import time
from pathlib import Path

from common import log
from measure import FULL, QUICK, SECTIONS, Suite
from report import Report, code_state, publish, summary_table


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
    code = code_state()
    log(f"BENCH={mode.name}, load generator {engine}, work folder {workdir}")
    ok = False
    try:
        for section in sections:
            getattr(suite, f"bench_{section}")()
        ok = True
    finally:
        suite.close()
        if os.environ.get("BENCH_KEEP") or not ok:
            log(f"kept the work folder {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    report = Report(suite, code, began, time.monotonic() - started)
    text = report.build()
    table = summary_table(report)
    if only:
        print(text)
        log("BENCH_ONLY given: RESULTS.md and README.md left as they were")
        return 0
    publish(text, table, report.seconds)
    return 0


if __name__ == "__main__":
    sys.exit(main())
