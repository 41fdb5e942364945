"""Two server processes on one database score by the same champion: a publication made through
one node is what the other scores with at its very next request, a rollback too.

Both nodes have loaded the first champion before the publication (their caches hold it), so
what is checked is that a cached model is never used once its model has another champion.
On SQLite the nodes share one file, on PostgreSQL one database.
"""

from __future__ import annotations

import json
import time

from conftest import SCORING, Server

from maia_trainings.trainers import portfolio

# Two different champions of one model, each trained in about a second.
FIRST = {"seed": 1}
SECOND = {"model": "random_forest", "params": {"n_estimators": 10}, "seed": 2}


def train(node: Server, meta: dict) -> dict:
    """A training of ``meta`` run by the nodes, waited for until it succeeded."""
    created = node.post("/trainings", {"meta": meta, "model_name": "risk"})
    deadline = time.monotonic() + 120
    while (training := node.get(f"/trainings/{created['id']}"))["status"] != "succeeded":
        assert training["status"] in ("queued", "running"), training
        assert time.monotonic() < deadline, f"training {created['id']} did not finish"
        time.sleep(0.1)
    return training


def scores(node: Server, rows: list[dict]) -> list[dict]:
    return node.post("/models/risk/score", rows)


def test_each_node_scores_with_a_new_champion_from_its_next_request(server_factory):
    settings = {"TRAINER": SCORING, "DEMO_ROWS": "2000", "PUBLISH_POLICY": "manual"}
    first_node = server_factory(**settings)
    second_node = server_factory.restart(first_node)  # another node: same database, same files
    first, second = train(first_node, FIRST), train(first_node, SECOND)
    frame = portfolio.generate(20, seed=5).drop(columns=portfolio.TARGET)
    rows = json.loads(frame.to_json(orient="records"))
    first_node.post(f"/trainings/{first['id']}/publish")
    by_first = scores(first_node, rows)
    assert scores(second_node, rows) == by_first  # both nodes hold the first champion now

    first_node.post(f"/trainings/{second['id']}/publish")
    after_publish = scores(second_node, rows)
    assert scores(first_node, rows) == after_publish  # both nodes hold the second one now
    second_node.post(f"/trainings/{first['id']}/publish")  # the rollback, through the other node
    after_rollback = scores(first_node, rows)

    assert {answer["scoreVersion"] for answer in by_first} == {first["version"]}
    assert {answer["scoreVersion"] for answer in after_publish} == {second["version"]}
    assert {answer["training_id"] for answer in after_publish} == {second["id"]}
    assert [a["scoreProbability"] for a in after_publish] != [
        a["scoreProbability"] for a in by_first
    ]
    assert after_rollback == by_first
