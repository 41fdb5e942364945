"""Part 6 of ``make bench``, scoring by the champion: one row and 10,000-row batches through HTTP
against the same model's bare ``predict_proba`` in this process.

One server (``trainings serve``, waitress, 8 threads) trains and publishes two champions of the
built-in scoring trainer on the demo book (``DEMO_ROWS`` loans): the default logistic
regression as model ``default``, and a random forest (the trainer's 100 trees) as ``forest``.
The rows are ``demo-data`` loans of another seed, sent as a client would (JSON objects, gaps
as null). Per repetition and model, on one persistent connection, one request at a time: one-row
requests (latency), 10,000-row requests (rows/s), then in this process, with the server idle,
the champion's own file (``GET /models/{name}/binary``) loaded with the trainer's ``load_model``
scoring a DataFrame of the same rows (``pd.DataFrame(rows)``), and the batch's way through the
service's own steps timed one by one in this process: ``json.loads`` of the body (what any JSON
service of these rows pays before it scores one), ``scorer.checked_columns`` (the rows'
checks, column by column), the model's probabilities from those columns and the points. The
rest of a request's time is HTTP, authentication, reading the champion and writing the answer.
"""

from __future__ import annotations

import json
import statistics
import time
from typing import Any

from common import BenchError, Connection, Stat, log, percentile
from measure import REPS, THREADS, Suite, wait_final

BATCH_ROWS = 10_000
# Requests per repetition and model: (one-row, batch) by BENCH mode.
REQUESTS = {"quick": (300, 8), "full": (2000, 30)}
MODELS = {
    "default": {},  # the trainer's default: logistic regression
    "forest": {"model": "random_forest"},
}
TIMES = "\u00d7"
FIGURES = ("one_p50", "one_p99", "bare_one_p50", "batch_ms", "batch_rps", "bare_ms", "bare_rps")
# The service's steps for a batch, timed alone (see _steps).
STEPS = {
    "decode": "`json.loads` of the body",
    "frame": "the rows' checks, by column (`scorer.checked_columns`)",
    "predict": "the model's probabilities from those columns (`Model.probability`)",
    "points": "the points",
}


def _loans(rows: int, seed: int) -> list[dict[str, Any]]:
    """Demo loans as JSON objects, without the outcome; gaps are null."""
    from maia_trainings.trainers import portfolio

    frame = portfolio.generate(rows, seed=seed).drop(columns=portfolio.TARGET)
    return json.loads(frame.to_json(orient="records"))


def _timed(connection: Connection, path: str, body: bytes, headers: dict[str, str]) -> float:
    """One POST; its latency in seconds (a BenchError unless it answers 200)."""
    began = time.perf_counter()
    status, payload = connection.send("POST", path, body, headers)
    elapsed = time.perf_counter() - began
    if status != 200:
        raise BenchError(f"POST {path}: {status} {payload[:300]!r}")
    return elapsed


def _bare(model: Any, frame: Any, repeat: int) -> list[float]:
    """Seconds of each of ``repeat`` calls of the model's predict_proba on ``frame``."""
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        model.predict_proba(frame)
        times.append(time.perf_counter() - began)
    return times


def _steps(model: Any, body: bytes, repeat: int) -> dict[str, float]:
    """Median ms of the service's steps for one batch, each timed alone in this process."""
    from maia_trainings import config, scorer

    settings = scorer.Settings.from_config(vars(config))
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    for _ in range(repeat):
        began = time.perf_counter()
        rows = json.loads(body.decode())
        decoded = time.perf_counter()
        columns = scorer.checked_columns(model, scorer.Rows(rows, single=False))
        framed = time.perf_counter()
        probability = model.probability(columns)
        predicted = time.perf_counter()
        settings.points(probability)
        ended = time.perf_counter()
        moments = (began, decoded, framed, predicted, ended)
        for step, start, end in zip(STEPS, moments, moments[1:], strict=False):
            times[step].append((end - start) * 1e3)
    return {step: statistics.median(values) for step, values in times.items()}


def measure(suite: Suite) -> None:
    import pandas as pd

    from maia_trainings import scorer
    from maia_trainings.trainers.scoring import load_model

    singles, batches = REQUESTS[suite.mode.name]
    log(f"score: {singles} one-row and {batches} {BATCH_ROWS:,}-row requests x {REPS} per model")
    service = suite.start_service("score")
    client = service.client
    trained = {}
    for name, meta in MODELS.items():
        created = client.json("POST", "/trainings", {"meta": meta, "model_name": name})
        done = wait_final(client, created["id"], timeout=1800, interval=0.25)
        if done["status"] != "succeeded":
            raise BenchError(f"the {name} training failed: {done['error']}")
        trained[name] = done
    rows = _loans(BATCH_ROWS, seed=5)
    frame = pd.DataFrame(rows)
    one_frame = pd.DataFrame(rows[:1])
    one_body, batch_body = json.dumps(rows[0]).encode(), json.dumps(rows).encode()
    headers = {
        "Authorization": f"Bearer {service.token}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    connection = Connection(service.port, timeout=120)
    info: dict[str, Any] = {"rows": BATCH_ROWS, "body_mb": len(batch_body) / 1e6, "models": {}}
    try:
        for name, training in trained.items():
            path = f"/models/{name}/score"
            model_file = suite.workdir / f"{name}.skops"
            status, payload = connection.send("GET", f"/models/{name}/binary", None, headers)
            if status != 200:
                raise BenchError(f"GET /models/{name}/binary: {status}")
            model_file.write_bytes(payload)
            model = load_model(model_file)
            champion = scorer.Champion(
                int(training["id"]),
                training["version"],
                training["binaryPath"],
                training["binarySha256"],
            )
            served_model = scorer.load(champion, service.instance / "models")
            # Warm-up, not counted: the first request loads the champion.
            for _ in range(20):
                _timed(connection, path, one_body, headers)
            _timed(connection, path, batch_body, headers)
            status, payload = connection.send("POST", path, batch_body, headers)
            served = [answer["scoreProbability"] for answer in json.loads(payload)]
            own = model.predict_proba(frame)[:, 1].tolist()
            figures: dict[str, Any] = {
                "max_difference": max(abs(a - b) for a, b in zip(served, own, strict=True)),
                **{key: [] for key in FIGURES},
                **{step: [] for step in STEPS},
            }
            for rep in range(REPS):
                ones = [_timed(connection, path, one_body, headers) * 1e3 for _ in range(singles)]
                batch = [_timed(connection, path, batch_body, headers) for _ in range(batches)]
                bare = _bare(model, frame, batches)
                bare_one = [t * 1e3 for t in _bare(model, one_frame, singles)]
                figures["one_p50"].append(percentile(ones, 0.5))
                figures["one_p99"].append(percentile(ones, 0.99))
                figures["bare_one_p50"].append(percentile(bare_one, 0.5))
                figures["batch_ms"].append(statistics.median(batch) * 1e3)
                figures["batch_rps"].append(BATCH_ROWS * len(batch) / sum(batch))
                figures["bare_ms"].append(statistics.median(bare) * 1e3)
                figures["bare_rps"].append(BATCH_ROWS * len(bare) / sum(bare))
                for step, ms in _steps(served_model, batch_body, batches).items():
                    figures[step].append(ms)
                log(
                    f"  {name} rep {rep + 1}: one row p50 {figures['one_p50'][-1]:.2f} ms "
                    f"(bare {figures['bare_one_p50'][-1]:.2f} ms), p99 "
                    f"{figures['one_p99'][-1]:.2f} ms; batch {figures['batch_rps'][-1]:,.0f} "
                    f"rows/s, bare {figures['bare_rps'][-1]:,.0f} rows/s"
                )
            info["models"][name] = figures
    finally:
        connection.close()
    log_text = (service.instance / "server.log").read_text(errors="replace")
    info["tracebacks"] = log_text.count("Traceback")
    suite.results["score"] = info
    suite.stop_service(service)


def render(report: Any, data: dict[str, Any]) -> list[str]:
    """The section of RESULTS.md, and its targets on ``report``."""
    singles, batches = REQUESTS[report.suite.mode.name]
    models = data["models"]
    stats = {
        name: {key: Stat(values) for key, values in figures.items() if isinstance(values, list)}
        for name, figures in models.items()
    }
    # Per repetition, the runs side by side.
    ratios = {
        name: Stat([s / b for s, b in zip(f["batch_ms"], f["bare_ms"], strict=True)])
        for name, f in models.items()
    }
    rows = f"{data['rows']:,}"
    out = [
        "## 6. Scoring by the champion",
        "",
        f"`POST /models/{{name}}/score` on `trainings serve` (waitress, {THREADS} threads), one "
        f"persistent connection, one request at a time: {singles} one-row requests and "
        f"{batches} requests of {rows} rows ({data['body_mb']:.1f} MB of JSON) per "
        "repetition and model, after a warm-up. *Bare*: the champion's file loaded with the "
        "trainer's `load_model` in the bench process, its `predict_proba` on "
        "`pd.DataFrame(rows)` of the same rows, timed alone (the server idle). *Steps*: the "
        "service's own steps for one batch, each timed alone in the bench process. Models: "
        "`default`, the trainer's logistic regression; `forest`, its random forest (100 trees).",
        "",
        "| figure | default (logistic regression) | forest (random forest) |",
        "| --- | --- | --- |",
    ]

    def row(label: str, key: str, digits: int, unit: str) -> None:
        cells = " | ".join(stats[name][key].show(digits, unit) for name in ("default", "forest"))
        out.append(f"| {label} | {cells} |")

    row("one row through HTTP, p50", "one_p50", 2, "ms")
    row("one row through HTTP, p99", "one_p99", 2, "ms")
    row("one row, bare `predict_proba`, p50", "bare_one_p50", 2, "ms")
    row(f"{rows} rows through HTTP", "batch_rps", 0, "rows/s")
    row(f"{rows} rows, bare `predict_proba`", "bare_rps", 0, "rows/s")
    row(f"{rows} rows through HTTP, time", "batch_ms", 1, "ms")
    row(f"{rows} rows, bare `predict_proba`, time", "bare_ms", 1, "ms")
    cells = " | ".join(f"{ratios[name].show(2)}{TIMES}" for name in ("default", "forest"))
    out.append(f"| HTTP time ÷ bare time | {cells} |")
    for step, label in STEPS.items():
        row(f"step: {label}", step, 1, "ms")
    cells = " | ".join(f"{models[n]['max_difference']:.1e}" for n in ("default", "forest"))
    out.append(f"| largest difference, served and own probability | {cells} |")
    out += [
        "",
        f"The steps leave out HTTP (reading {data['body_mb']:.1f} MB, sending the answer), "
        "authentication, reading the champion and writing the answer's JSON. Server log "
        f"tracebacks: {data['tracebacks']}.",
        "",
    ]
    lr = stats["default"]
    report.target(
        "score one row, logistic regression",
        f"p50 {lr['one_p50'].show(2, 'ms')}",
        "p50 ≤ 5 ms through HTTP",
        lr["one_p50"].median <= 5,
    )
    report.target(
        f"score {rows} rows, logistic regression",
        lr["batch_rps"].show(0, "rows/s"),
        "≥ 50,000 rows/s through HTTP",
        lr["batch_rps"].median >= 50_000,
    )
    for name, label in (("default", "logistic regression"), ("forest", "random forest")):
        report.target(
            f"score {rows} rows, {label}",
            f"{ratios[name].show(2)}{TIMES} the bare `predict_proba` time",
            f"≤ 2{TIMES} bare `predict_proba`",
            ratios[name].median <= 2,
        )
    return out
