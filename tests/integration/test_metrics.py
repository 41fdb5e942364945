"""GET /metrics on real servers: the figures move as trainings run, two nodes on one database
report the same database figures, and METRICS_PUBLIC = False asks for a token."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from types import SimpleNamespace

from conftest import free_port
from prometheus_client.parser import text_string_to_metric_families

# A training that holds its slot for a moment, so that the others queue behind it.
SLOW = {"meta": {"action": "steps", "steps": 2, "seconds": 0.8}}


def scrape(server, token=None):
    """The server's figures: {(sample name, sorted labels): value}."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    request = urllib.request.Request(server.url + "/metrics", headers=headers)
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain")
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(figures, name, **labels):
    return figures.get((name, tuple(sorted(labels.items()))), 0.0)


def wait_until_finished(server, ids, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        statuses = {server.get(f"/trainings/{i}")["status"] for i in ids}
        if statuses <= {"succeeded", "failed", "cancelled"}:
            return
        time.sleep(0.1)
    raise AssertionError(f"trainings {ids} did not finish: {statuses}")


def scrape_once_ended(server, ended, timeout=30):
    """The figures once ``ended`` runs are counted as ended, and how many scrapes that took.

    A run is counted when its worker has wrapped it up (reaped its process, logged its end), a
    moment after its training's row shows how it ended: a scrape in between is not wrong, only
    early, and Prometheus's next one sees the run.
    """
    deadline = time.monotonic() + timeout
    scrapes = 0
    while True:
        figures = scrape(server)
        scrapes += 1
        counted = sum(v for (name, _), v in figures.items() if name == "maia_runs_ended_total")
        if counted >= ended or time.monotonic() > deadline:
            return figures, scrapes
        time.sleep(0.05)


DATABASE_FIGURES = ("maia_trainings", "maia_queue_depth", "maia_webhook_deliveries")


def database_figures(figures):
    return {key: v for key, v in figures.items() if key[0] in DATABASE_FIGURES}


def test_the_figures_move_as_trainings_run(server_factory):
    server = server_factory(WORKERS="1")
    before = scrape(server)
    assert value(before, "maia_database_up") == 1
    assert value(before, "maia_trainings", status="queued") == 0
    assert value(before, "maia_runs_started_total") == 0

    ids = [server.post("/trainings", SLOW)["id"] for _ in range(3)]
    failing = server.post("/trainings", {"meta": {"action": "raise"}})["id"]
    timing_out = server.post(
        "/trainings", {"meta": {"action": "spin", "seconds": 5, "max_runtime": 0.3}}
    )["id"]
    waiting = scrape(server)
    # One slot: at most one runs, the others wait, due now, the oldest for a while already.
    assert value(waiting, "maia_trainings", status="queued") >= 3
    assert value(waiting, "maia_queue_depth") >= 3
    assert value(waiting, "maia_queue_oldest_age_seconds") > 0

    wait_until_finished(server, [*ids, failing, timing_out])
    after, scrapes = scrape_once_ended(server, 5)
    assert value(after, "maia_trainings", status="queued") == 0
    assert value(after, "maia_queue_depth") == 0
    assert value(after, "maia_queue_oldest_age_seconds") == 0
    assert value(after, "maia_trainings", status="succeeded") == 3
    assert value(after, "maia_trainings", status="failed") == 2
    assert value(after, "maia_runs_started_total") == 5
    assert value(after, "maia_runs_ended_total", outcome="succeeded") == 3
    assert value(after, "maia_runs_ended_total", outcome="failed") == 1
    assert value(after, "maia_runs_ended_total", outcome="timed_out") == 1
    assert value(after, "maia_run_duration_seconds_count", outcome="succeeded") == 3
    # The later trainings waited behind the slow ones: their latency is the wait.
    assert value(after, "maia_dispatch_latency_seconds_count") == 5
    assert value(after, "maia_dispatch_latency_seconds_sum") > 0.8
    # Requests by route template, not by path: three ids, one series.
    assert (
        value(after, "maia_http_requests_total", method="POST", route="/trainings", status="200")
        == 5
    )
    reads = value(
        after,
        "maia_http_requests_total",
        method="GET",
        route="/trainings/<training_id>",
        status="200",
    )
    assert reads >= 5
    assert (
        value(
            after,
            "maia_http_request_duration_seconds_count",
            method="GET",
            route="/trainings/<training_id>",
        )
        == reads
    )
    assert not any("/trainings/1" in dict(labels).get("route", "") for _name, labels in after)
    # The scrapes themselves are counted, and a path no route matches has one series.
    assert (
        value(after, "maia_http_requests_total", method="GET", route="/metrics", status="200")
        == 2 + scrapes - 1
    )
    with _refused(404):
        urllib.request.urlopen(server.url + "/no/such/path", timeout=30)
    assert (
        value(
            scrape(server),
            "maia_http_requests_total",
            method="GET",
            route="<unmatched>",
            status="404",
        )
        == 1
    )


def test_two_nodes_on_one_database_report_the_same_database_figures(server_factory):
    first = server_factory()
    second = server_factory.restart(first)  # another node on the same database and token
    ids = [first.post("/trainings")["id"] for _ in range(2)]
    first.post("/trainings", {"scheduled_at": "2031-01-02T03:04:05.678Z"})
    wait_until_finished(first, ids)
    on_first, on_second = scrape(first), scrape(second)
    assert database_figures(on_first) == database_figures(on_second)
    assert value(on_second, "maia_trainings", status="scheduled") == 1
    assert value(on_second, "maia_trainings", status="succeeded") == 2
    # Events are each process's own: the second node answered no POST.
    assert (
        value(on_first, "maia_http_requests_total", method="POST", route="/trainings", status="200")
        == 3
    )
    assert (
        value(
            on_second, "maia_http_requests_total", method="POST", route="/trainings", status="200"
        )
        == 0
    )
    started = value(on_first, "maia_runs_started_total") + value(
        on_second, "maia_runs_started_total"
    )
    assert started == 2  # summed over the nodes, each run counted once


class _refused:
    def __init__(self, status):
        self.status = status

    def __enter__(self):
        return self

    def __exit__(self, kind, exc, _tb):
        assert isinstance(exc, urllib.error.HTTPError), exc
        assert exc.code == self.status
        self.body = json.loads(exc.read())
        assert set(self.body) == {"code", "message"}
        assert self.body["code"] == self.status
        return True


def test_metrics_behind_a_token_when_not_public(server_factory):
    server = server_factory(METRICS_PUBLIC="false")
    with _refused(403):
        urllib.request.urlopen(server.url + "/metrics", timeout=30)
    with _refused(403):
        scrape(server, token="mt_" + "x" * 43)
    assert value(scrape(server, token=server.token), "maia_database_up") == 1
    public = server_factory(METRICS_PUBLIC="true")
    assert value(scrape(public), "maia_database_up") == 1


def test_a_worker_node_serves_its_own_run_figures_on_its_metrics_port(
    server_factory, worker_factory
):
    # A worker serves no API: the runs it makes are counted in it and scraped from it.
    api = server_factory(SCHEDULER_ENABLED="false", POLL_INTERVAL="0.5")
    port = free_port()
    worker_factory(api, "--metrics-port", str(port), POLL_INTERVAL="0.5")
    ids = [api.post("/trainings")["id"] for _ in range(2)]
    wait_until_finished(api, ids)

    on_worker, _ = scrape_once_ended(SimpleNamespace(url=f"http://127.0.0.1:{port}"), 2)
    on_api = scrape(api)

    assert value(on_worker, "maia_runs_started_total") == 2
    assert value(on_worker, "maia_runs_ended_total", outcome="succeeded") == 2
    assert value(on_api, "maia_runs_started_total") == 0
    assert database_figures(on_worker) == database_figures(on_api)
