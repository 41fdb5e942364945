"""Models, champions and challengers: model_name, per-model versions, publishing, rollback,
the /models resource and PUBLISH_POLICY at a run's end (trainings finished in-process)."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest
from conftest import bearer

from maia_trainings import db, queue
from maia_trainings.publishing import Policy, PublishPolicy
from maia_trainings.runner import RunSettings

OWNER = "owner-a"
ALWAYS = PublishPolicy()
MANUAL = PublishPolicy(Policy.MANUAL)


def create(client, auth, **fields):
    response = client.post("/trainings", json=fields, headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def run_to_success(app, client, auth, *, policy=ALWAYS, gini=None, model_file=True, **fields):
    """Create a training and finish it as a run would (metrics, model file); returns its id."""
    training_id = int(create(client, auth, **fields)["id"])
    results: dict[str, object] = {}
    if gini is not None:
        results["metrics"] = {"gini": gini}
    if model_file:
        content = f"the model of training {training_id}".encode()
        relative = f"t{training_id}/model.bin"
        path = Path(app.config["MODELS_DIR"]) / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        results.update(
            binary_path=relative,
            binary_sha256=hashlib.sha256(content).hexdigest(),
            binary_size=len(content),
        )
    with db.database(app).session() as session:
        claimed = queue.claim_next(session, OWNER, lease_seconds=30, among=[training_id])
        assert claimed is not None
        assert queue.finish(session, training_id, OWNER, results=results, policy=policy)
    return training_id


def fetch(client, auth, training_id):
    response = client.get(f"/trainings/{training_id}", headers=auth)
    assert response.status_code == 200
    return response.json


def publish(client, auth, training_id):
    return client.post(f"/trainings/{training_id}/publish", headers=auth)


def champion_id(client, auth, model_name="default"):
    response = client.get(f"/models/{model_name}", headers=auth)
    assert response.status_code == 200, response.json
    return int(response.json["id"])


# model_name ----------------------------------------------------------------------------------


def test_model_name_defaults_to_default_and_is_kept(client, auth):
    assert create(client, auth)["model_name"] == "default"
    assert create(client, auth, model_name="risk.v2_b-1")["model_name"] == "risk.v2_b-1"


@pytest.mark.parametrize("bad", ["", "a/b", "a b", "x" * 65, ".", "..", "é", None, 3])
def test_a_model_name_that_cannot_be_a_path_segment_is_refused(client, auth, bad):
    response = client.post("/trainings", json={"model_name": bad}, headers=auth)
    assert response.status_code == 400
    assert list(response.json["errors"]) == ["model_name"]


def test_model_name_can_change_only_while_pending(app, client, auth):
    training_id = create(client, auth)["id"]
    response = client.put(f"/trainings/{training_id}", json={"model_name": "b"}, headers=auth)
    assert response.status_code == 200
    assert response.json["model_name"] == "b"
    done = run_to_success(app, client, auth, model_name="a")
    response = client.put(f"/trainings/{done}", json={"model_name": "b"}, headers=auth)
    assert response.status_code == 409
    assert "model_name" in response.json["message"]


def test_lists_filter_and_sort_by_model_name(client, auth):
    ids = {name: create(client, auth, model_name=name)["id"] for name in ("b", "a", "c")}
    listed = client.get("/trainings?model_name_eq=a", headers=auth).json
    assert [t["id"] for t in listed] == [ids["a"]]
    listed = client.get("/trainings?_sort=model_name:DESC", headers=auth).json
    assert [t["model_name"] for t in listed] == ["c", "b", "a"]


def test_automatic_versions_count_per_model(app, client, auth):
    first_a = run_to_success(app, client, auth, model_name="a")
    first_b = run_to_success(app, client, auth, model_name="b")
    client_versioned = run_to_success(app, client, auth, model_name="a", version="mine")
    second_a = run_to_success(app, client, auth, model_name="a")
    versions = {
        training_id: fetch(client, auth, training_id)["version"]
        for training_id in (first_a, first_b, client_versioned, second_a)
    }
    assert versions == {first_a: "1", first_b: "1", client_versioned: "mine", second_a: "2"}


# Publishing ----------------------------------------------------------------------------------


def test_only_a_succeeded_training_with_a_model_file_can_be_published(app, client, auth):
    queued = create(client, auth)["id"]
    without_file = run_to_success(app, client, auth, model_file=False)
    for training_id in (queued, without_file):
        response = publish(client, auth, training_id)
        assert response.status_code == 409
        assert response.json["message"] == (
            "only a succeeded training with a model file can be published"
        )
    assert publish(client, auth, "999999").status_code == 404


def test_publishing_needs_a_write_token(app, client, auth, read_token):
    training_id = run_to_success(app, client, auth, policy=MANUAL)
    assert publish(client, bearer(read_token), training_id).status_code == 403
    assert fetch(client, auth, training_id)["published_at"] is None


def test_publishing_makes_the_champion_and_records_who_and_when(app, client, auth):
    training_id = run_to_success(app, client, auth, policy=MANUAL, model_name="risk")
    assert fetch(client, auth, training_id)["published_at"] is None
    assert client.get("/models/risk", headers=auth).status_code == 404  # no champion yet

    response = publish(client, auth, training_id)

    assert response.status_code == 200
    body = response.json
    assert body["id"] == str(training_id)
    assert body["published_by"] == "writer"
    assert body["published_at"] is not None
    assert client.get("/models/risk", headers=auth).json == body
    history = client.get("/models/risk/history", headers=auth).json
    assert [(h["training_id"], h["version"], h["published_by"], h["reason"]) for h in history] == [
        (str(training_id), "1", "writer", "manual")
    ]
    assert history[0]["published_at"] == body["published_at"]


def test_publishing_an_older_training_rolls_back_and_serves_its_file(app, client, auth):
    old = run_to_success(app, client, auth, model_name="risk")
    new = run_to_success(app, client, auth, model_name="risk")
    assert champion_id(client, auth, "risk") == new
    old_published_at = fetch(client, auth, old)["published_at"]

    assert publish(client, auth, old).status_code == 200

    assert champion_id(client, auth, "risk") == old
    # The previous champion stays as it was, only no longer champion.
    assert fetch(client, auth, new)["published_at"] is not None
    assert fetch(client, auth, old)["published_at"] != old_published_at
    response = client.get("/models/risk/binary", headers=auth)
    assert response.status_code == 200
    assert response.data == f"the model of training {old}".encode()
    assert response.headers["ETag"] == f'"{fetch(client, auth, old)["binarySha256"]}"'
    history = client.get("/models/risk/history", headers=auth).json
    assert [int(h["training_id"]) for h in history] == [old, new, old]
    assert [h["published_by"] for h in history] == ["writer", None, None]


def test_models_lists_every_model_with_its_champion(app, client, read_token, auth):
    champion = run_to_success(app, client, auth, model_name="a")
    create(client, auth, model_name="b")
    reader = bearer(read_token)
    listed = client.get("/models", headers=reader).json
    assert [(m["model_name"], m["champion"] and m["champion"]["id"]) for m in listed] == [
        ("a", str(champion)),
        ("b", None),
    ]
    assert client.get("/models/b/history", headers=reader).json == []
    assert client.get("/models/b/binary", headers=reader).status_code == 404


def test_a_champion_cannot_be_deleted_but_a_former_one_can(app, client, auth):
    old = run_to_success(app, client, auth)
    new = run_to_success(app, client, auth)
    response = client.delete(f"/trainings/{new}", headers=auth)
    assert response.status_code == 409
    assert "champion" in response.json["message"]
    assert client.delete(f"/trainings/{old}", headers=auth).status_code == 200
    assert champion_id(client, auth) == new


@pytest.mark.parametrize("path", ["/models/nope", "/models/nope/history", "/models/nope/binary"])
def test_an_unknown_model_is_404(client, auth, path):
    assert client.get(path, headers=auth).status_code == 404


def test_models_answer_xml_too(app, client, auth):
    run_to_success(app, client, auth)
    response = client.get("/models/default/history", headers={**auth, "Accept": "text/xml"})
    assert response.status_code == 200
    assert b"<reason>policy always</reason>" in response.data


# PUBLISH_POLICY --------------------------------------------------------------------------------


def test_policy_always_publishes_each_success(app, client, auth):
    first = run_to_success(app, client, auth)
    second = run_to_success(app, client, auth)
    for training_id in (first, second):
        training = fetch(client, auth, training_id)
        assert training["published_at"] == training["finished_at"]
        assert training["published_by"] is None
        assert training["publish_note"] == "policy always"
    assert champion_id(client, auth) == second


def test_policy_manual_publishes_nothing_by_itself(app, client, auth):
    training_id = run_to_success(app, client, auth, policy=MANUAL)
    training = fetch(client, auth, training_id)
    assert training["published_at"] is None
    assert "manual" in training["publish_note"]
    assert client.get("/models/default/history", headers=auth).json == []


def test_policy_if_better_publishes_a_better_gini_and_keeps_a_worse_one_out(app, client, auth):
    if_better = PublishPolicy(Policy.IF_BETTER, margin=0.02)
    first = run_to_success(app, client, auth, policy=if_better, gini=0.5)
    better = run_to_success(app, client, auth, policy=if_better, gini=0.53)
    not_by_enough = run_to_success(app, client, auth, policy=if_better, gini=0.54)
    worse = run_to_success(app, client, auth, policy=if_better, gini=0.4)
    unmeasured = run_to_success(app, client, auth, policy=if_better)

    assert champion_id(client, auth) == better
    notes = {t: fetch(client, auth, t)["publish_note"] for t in (first, better, worse)}
    assert notes[first] == "if_better: gini 0.5, the model has no champion yet"
    assert notes[better] == "if_better: gini 0.53 beats champion 0.5 by ≥ 0.02"
    assert notes[worse] == "if_better: gini 0.4 does not beat champion 0.53 by ≥ 0.02"
    for kept_out in (not_by_enough, worse, unmeasured):
        assert fetch(client, auth, kept_out)["published_at"] is None
    assert "no gini" in fetch(client, auth, unmeasured)["publish_note"]
    history = client.get("/models/default/history", headers=auth).json
    assert [int(h["training_id"]) for h in history] == [better, first]
    assert history[0]["reason"] == notes[better]


def test_policy_if_better_compares_within_the_model(app, client, auth):
    if_better = PublishPolicy(Policy.IF_BETTER)
    run_to_success(app, client, auth, policy=if_better, gini=0.9, model_name="a")
    other = run_to_success(app, client, auth, policy=if_better, gini=0.1, model_name="b")
    assert champion_id(client, auth, "b") == other


def test_the_policy_is_read_from_the_config(app):
    app.config.update(PUBLISH_POLICY="if_better", PUBLISH_MARGIN=0.05)
    assert RunSettings.from_app(app).publish_policy == PublishPolicy(Policy.IF_BETTER, 0.05)
    app.config["PUBLISH_POLICY"] = "sometimes"
    with pytest.raises(ValueError, match="always, manual, if_better"):
        RunSettings.from_app(app)


def test_runs_of_one_model_finishing_at_once_take_turns(app, client, auth):
    """On separate engines (nodes), if_better runs finishing together each compare with the
    champion as the previous one left it, and their numbers are the model's, without gaps."""
    if_better = PublishPolicy(Policy.IF_BETTER)
    ginis = [0.30, 0.70, 0.10, 0.50, 0.65, 0.20, 0.40, 0.60]
    claimed = []
    for n, gini in enumerate(ginis):
        model_name = "a" if n % 4 else "b"  # the other model's runs interleave
        training_id = int(create(client, auth, model_name=model_name)["id"])
        with db.database(app).session() as session:
            assert queue.claim_next(session, f"node-{n}", lease_seconds=30, among=[training_id])
        claimed.append((training_id, f"node-{n}", gini))
    problems: list[BaseException] = []
    barrier = threading.Barrier(len(claimed))

    def finish(training_id: int, owner: str, gini: float) -> None:
        database = db.Database(app.config["DATABASE_URL"])
        results = {"metrics": {"gini": gini}, "binary_path": "m.bin", "binary_sha256": "0" * 64}
        try:
            with database.session() as session:
                barrier.wait(timeout=30)
                assert queue.finish(session, training_id, owner, results=results, policy=if_better)
        except BaseException as exc:  # reported by the main thread
            problems.append(exc)
        finally:
            database.dispose()

    threads = [threading.Thread(target=finish, args=args) for args in claimed]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert problems == []
    for model_name in ("a", "b"):
        runs = [
            (t, g) for n, (t, _o, g) in enumerate(claimed) if ("a" if n % 4 else "b") == model_name
        ]
        versions = sorted(int(fetch(client, auth, t)["version"]) for t, _g in runs)
        assert versions == list(range(1, len(runs) + 1))
        # Each publication beat the champion before it; the best run is the champion.
        history = client.get(f"/models/{model_name}/history", headers=auth).json
        gini_of = dict(runs)
        published = [gini_of[int(h["training_id"])] for h in reversed(history)]
        assert published == sorted(published)
        assert champion_id(client, auth, model_name) == max(runs, key=lambda run: run[1])[0]
