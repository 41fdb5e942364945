"""Several processes on one database, as nodes are: each a real server or worker process.

On SQLite the nodes share one file on one box; on PostgreSQL one database, as separate
machines would. What one node does, every other sees at once.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Server, flask_command, server_env, stop_worker

from maia_trainings.fields import parse_timestamp


def status_of(server: Server, path: str) -> int:
    """The HTTP status of an authenticated GET of ``path``."""
    request = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {server.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def run_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """A `flask trainings …` command on ``server``'s instance and database."""
    return subprocess.run(
        flask_command("trainings", *args),
        env=server_env(server.instance, **server.settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_token_revoked_by_the_cli_is_refused_by_every_node_at_its_next_request(
    server_factory,
):
    # A cache that would trust a token for an hour: the revocation must not wait for it.
    first = server_factory(TOKEN_CACHE_SECONDS="3600")
    second = server_factory.restart(first)  # another node on the same database and token
    for node in (first, second):
        assert status_of(node, "/trainings") == 200  # the token is cached on both

    revoked = run_cli(first, "token", "revoke", "tester")
    assert revoked.returncode == 0, revoked.stderr

    for node in (first, second):
        assert status_of(node, "/trainings") == 403
        assert status_of(node, "/trainings/count") == 403


def wait_for(predicate: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
    """Poll ``predicate`` until it returns something true; fails after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        found = predicate()
        if found:
            return found
        assert time.monotonic() < deadline, f"timed out waiting for {what or predicate}"
        time.sleep(0.05)


def status(server: Server, training_id: int) -> str:
    return str(server.get(f"/trainings/{training_id}")["status"])


def wait_for_status(server: Server, training_id: int, wanted: str, timeout: float = 60) -> None:
    wait_for(
        lambda: status(server, training_id) == wanted,
        timeout=timeout,
        what=f"training {training_id} to be {wanted}",
    )


def test_a_worker_node_runs_what_an_api_node_queues_and_stops_gracefully(
    server_factory, worker_factory
):
    api = server_factory(SCHEDULER_ENABLED="false", POLL_INTERVAL="0.5", NODE_NAME="api-1")
    worker = worker_factory(api, "--workers", "2", POLL_INTERVAL="0.5", SHUTDOWN_GRACE="1")
    health = api.get("/healthz")
    assert health["node"] == {
        "name": "api-1",
        "role": "api",
        "runs": [],
        "modelsDir": "writable",
    }

    ids = [api.post("/trainings", {"meta": {"seconds": 0.1}})["id"] for _ in range(4)]
    for training_id in ids:
        wait_for_status(api, training_id, "succeeded")
    # The worker published the model in the shared MODELS_DIR; the API node serves it.
    assert api.get(f"/trainings/{ids[0]}/binary") == {"trained": ids[0]}

    long = api.post("/trainings", {"meta": {"seconds": 120}})["id"]
    wait_for_status(api, long, "running")
    assert stop_worker(worker) == 0
    stopped = api.get(f"/trainings/{long}")
    # Back in the queue for the next worker, its attempt not spent.
    assert (stopped["status"], stopped["attempts"]) == ("queued", 0)
    assert "Stopping" in worker.log()


def test_healthz_names_the_node_its_role_and_the_trainings_it_runs(server_factory):
    node = server_factory(NODE_NAME="both-1")
    training_id = node.post("/trainings", {"meta": {"seconds": 120}})["id"]
    wait_for_status(node, training_id, "running")
    assert node.get("/healthz")["node"] == {
        "name": "both-1",
        "role": "both",
        "runs": [training_id],
        "modelsDir": "writable",
    }
    node.post(f"/trainings/{training_id}/cancel")


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_node_that_cannot_write_to_models_dir_refuses_to_start(tmp_path, databases, command):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the models folder should be")
    env = server_env(
        tmp_path / "instance", MODELS_DIR=str(blocker / "models"), **databases.settings()
    )
    result = subprocess.run(
        flask_command("trainings", command), env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1
    assert f"MODELS_DIR {blocker / 'models'} cannot be written by this node" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_same_post_reaching_two_nodes_at_once_creates_one_training(server_factory):
    first = server_factory(SCHEDULER_ENABLED="false")
    second = server_factory.restart(first)
    answers: dict[str, list[int]] = {}
    problems: list[BaseException] = []

    def post(node: Server, uuid: str, barrier: threading.Barrier) -> None:
        try:
            barrier.wait(timeout=30)
            answers.setdefault(uuid, []).append(
                node.post("/trainings", {"uuid": uuid, "meta": {"n": uuid}})["id"]
            )
        except BaseException as exc:
            problems.append(exc)

    for n in range(40):
        barrier = threading.Barrier(2)
        threads = [
            threading.Thread(target=post, args=(node, f"twice-{n}", barrier))
            for node in (first, second)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()

    assert problems == []
    assert all(len(ids) == 2 and ids[0] == ids[1] for ids in answers.values()), answers
    assert first.get("/trainings/count") == 40


@pytest.mark.postgresql_only("wake-ups cross nodes through PostgreSQL's LISTEN/NOTIFY")
def test_a_training_created_on_an_api_node_starts_on_a_worker_node_without_waiting_for_a_poll(
    server_factory, worker_factory
):
    api = server_factory(SCHEDULER_ENABLED="false")
    # Polls a minute apart: only the API node's NOTIFY can start the training sooner.
    worker_factory(api, POLL_INTERVAL="60")
    time.sleep(0.5)  # past the worker's first look
    delays = []
    for _ in range(5):
        created = api.post("/trainings", {"meta": {}})
        wait_for_status(api, created["id"], "succeeded", timeout=30)
        started = api.get(f"/trainings/{created['id']}")["started_at"]
        delays.append(seconds_between(created["created_at"], started))
    print("dispatch delays across nodes (s):", delays)
    assert max(delays) < 5, delays


def seconds_between(earlier: str, later: str) -> float:
    return (parse_timestamp(later) - parse_timestamp(earlier)).total_seconds()


class Client:
    """An application creating trainings through a load balancer's worth of API nodes: a
    request a node fails to answer is sent again, same uuid, to another node."""

    def __init__(self, nodes: list[Server]) -> None:
        self.nodes = nodes
        self.dead: set[int] = set()  # ports of nodes known to be gone
        self.answers: dict[str, list[str]] = {}  # uuid -> the ids it was answered with
        self.lock = threading.Lock()

    def create(self, uuid: str, meta: dict[str, Any], first: int) -> None:
        for step in range(len(self.nodes) * 3):
            node = self.nodes[(first + step) % len(self.nodes)]
            if node.port in self.dead:
                continue
            try:
                answer = node.post("/trainings", {"uuid": uuid, "meta": meta})
            except (urllib.error.URLError, ConnectionError, http.client.HTTPException):
                continue  # not acknowledged: send it again elsewhere
            with self.lock:
                self.answers.setdefault(uuid, []).append(answer["id"])
            return
        raise AssertionError(f"no node acknowledged {uuid}")


def records(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


@pytest.mark.postgresql_only("nodes on several machines share a PostgreSQL database")
def test_three_api_nodes_and_workers_survive_losing_a_node_and_a_worker(
    server_factory, worker_factory, tmp_path
):
    record = tmp_path / "runs.jsonl"
    fast_takeover = {"LEASE_SECONDS": "3", "HEARTBEAT_INTERVAL": "0.5", "POLL_INTERVAL": "1"}
    first = server_factory(SCHEDULER_ENABLED="false", **fast_takeover)
    nodes = [first, server_factory.restart(first), server_factory.restart(first)]
    worker = worker_factory(first, "--workers", "4")
    client = Client(nodes)
    total, duplicated = 600, range(0, 600, 10)  # every tenth POST reaches two nodes at once

    def send(numbers: range) -> None:
        for n in numbers:
            meta = {"seconds": 0.05, "record": str(record)}
            if n in duplicated:
                pair = [
                    threading.Thread(target=client.create, args=(f"t-{n}", meta, n + k))
                    for k in (0, 1)
                ]
                for thread in pair:
                    thread.start()
                for thread in pair:
                    thread.join()
            else:
                client.create(f"t-{n}", meta, n)

    senders = [threading.Thread(target=send, args=(range(k, total, 6),)) for k in range(6)]
    for sender in senders:
        sender.start()
    wait_for(lambda: len(client.answers) >= total // 2, what="half the creates")
    # Midway: one API node and the only worker die without a word.
    for process in (nodes[2].process, worker.process):
        process.kill()
        process.wait()
    client.dead.add(nodes[2].port)
    orphaned = {t["id"] for t in first.get("/trainings?status=running&_limit=1000")}
    worker_factory(first, "--workers", "4")
    for sender in senders:
        sender.join(timeout=300)

    def all_succeeded() -> bool:
        return first.get("/trainings/count?status=succeeded") == first.get("/trainings/count")

    wait_for(all_succeeded, timeout=300, what="every training to succeed")
    stored = first.get(f"/trainings?_limit={total * 2}")
    by_id = {t["id"]: t for t in stored}

    # Every acknowledged training is there, once: each duplicated POST made one training.
    assert len(client.answers) == total
    assert all(len(set(ids)) == 1 for ids in client.answers.values()), client.answers
    assert sorted(t["uuid"] for t in stored) == sorted(client.answers)
    assert all(by_id[ids[0]]["status"] == "succeeded" for ids in client.answers.values())
    assert all(len(client.answers[f"t-{n}"]) == 2 for n in duplicated)
    # Automatic versions are unique across the two workers.
    versions = [t["version"] for t in stored]
    assert len(set(versions)) == total
    # The dead worker's trainings were taken over (a second attempt) and finished.
    assert orphaned, "the worker was killed while it ran nothing: the test proves less"
    assert all(by_id[tid]["attempts"] >= 2 for tid in orphaned)
    # Ran to its end exactly once, but for runs the dead worker had under way.
    ends: dict[str, int] = {}
    for line in records(record):
        if line["event"] == "end":
            ends[str(line["id"])] = ends.get(str(line["id"]), 0) + 1
    assert set(ends) == set(by_id)
    assert {tid for tid, n in ends.items() if n > 1} <= orphaned
