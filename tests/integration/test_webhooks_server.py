"""Webhooks from real servers: retries seen by a receiver on 127.0.0.1, an event that survives
a SIGKILL, and callbacks sent by an API-only node."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request

from conftest import SAMPLE_TRAINER, Server
from helpers import create, run_pending, summary
from receiver import Receiver, verify

CALLBACK_SECRET = "callback-secret-for-tests"
SETTINGS = {
    "WEBHOOK_ALLOWED_HOSTS": '["127.0.0.1"]',
    "WEBHOOK_RETRY_DELAY": "0.3",
    "WEBHOOK_TIMEOUT": "2",
    "WEBHOOK_CALLBACK_SECRET": json.dumps(CALLBACK_SECRET),
}


def wait_for_status(server: Server, training_id: str, status: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while server.get(f"/trainings/{training_id}")["status"] != status:
        assert time.monotonic() < deadline, f"training {training_id} never became {status}"
        time.sleep(0.02)


def post_status(server: Server, path: str, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(
        server.url + path,
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {server.token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_receiver_sees_retries_with_one_delivery_id(server_factory):
    # A node name as long as a Kubernetes pod's: cut to fit the lease and the attempt.
    server = server_factory(NODE_NAME=json.dumps("n" * 100), **SETTINGS)
    with Receiver(answers=[500, 500]) as receiver:
        webhook = server.post("/webhooks", {"url": receiver.url})
        receiver.secret = webhook["secret"]
        training = server.post("/trainings", {})
        got = receiver.wait_for(3, timeout=30)
    assert [r.answered for r in got] == [500, 500, 200]
    assert all(r.signed for r in got)
    assert len({r.delivery for r in got}) == 1
    assert got[0].event == "training.succeeded"
    assert got[0].json()["id"] == training["id"]
    assert got[0].json()["status"] == "succeeded"
    deadline = time.monotonic() + 10
    while (listed := server.get(f"/webhooks/{webhook['id']}/deliveries"))[0]["status"] != (
        "delivered"
    ):
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert [a["status_code"] for a in listed[0]["attempts"]] == [500, 500, 200]
    assert {a["node"] for a in listed[0]["attempts"]} == {"n" * 64}


def test_an_event_is_delivered_after_the_server_is_killed(server_factory):
    server = server_factory(**SETTINGS)
    # The receiver fails until the server is dead: nothing is delivered before the kill.
    with Receiver(default=500) as receiver:
        webhook = server.post("/webhooks", {"url": receiver.url})
        receiver.secret = webhook["secret"]
        training = server.post("/trainings", {})
        wait_for_status(server, training["id"], "succeeded")
        server.process.kill()  # SIGKILL, right after the training finished
        server.process.wait()
        receiver.default = 200
        already = len(receiver.received)
        restarted = server_factory.restart(server)
        deadline = time.monotonic() + 40  # a send cut short waits for its lease to run out
        while not any(r.answered == 200 for r in receiver.received):
            assert time.monotonic() < deadline, receiver.received
            time.sleep(0.05)
        time.sleep(0.5)
        got = list(receiver.received)
    assert len(got) > already
    assert all(r.signed and r.event == "training.succeeded" for r in got)
    assert len({r.delivery for r in got}) == 1  # the same delivery, retried
    assert [r.answered for r in got].count(200) == 1
    assert got[-1].json() == restarted.get(f"/trainings/{training['id']}")


def test_an_api_only_node_sends_callbacks_and_refuses_hosts_not_allowed(server_factory):
    server = server_factory(SCHEDULER_ENABLED="false", **SETTINGS)
    status, body = post_status(server, "/trainings", {"callback_url": "http://10.9.9.9/x"})
    assert status == 400
    assert body["errors"] == {"callback_url": ["the host 10.9.9.9 is not in WEBHOOK_ALLOWED_HOSTS"]}
    status, body = post_status(server, "/webhooks", {"url": "http://example.com/x"})
    assert status == 400
    assert "example.com" in body["errors"]["url"][0]
    with Receiver() as receiver:
        receiver.secret = CALLBACK_SECRET
        training = server.post("/trainings", {"callback_url": receiver.url})
        server.post(f"/trainings/{training['id']}/cancel")
        (got,) = receiver.wait_for(1)
    assert got.signed
    assert got.event == "training.cancelled"
    assert got.json()["status"] == "cancelled"


def test_run_pending_delivers_the_events_of_what_it_ran(app, runner, client, auth):
    # A cron installation: no server, so no sender runs; run-pending itself delivers.
    app.config.update(
        TRAINER=SAMPLE_TRAINER,
        WEBHOOK_ALLOWED_HOSTS=["127.0.0.1"],
        WEBHOOK_TIMEOUT=2,
        WEBHOOK_CALLBACK_SECRET=CALLBACK_SECRET,
    )
    with Receiver() as receiver:
        response = client.post("/webhooks", json={"url": receiver.url}, headers=auth)
        receiver.secret = response.json["secret"]
        training = create(client, auth)
        called_back = create(client, auth, callback_url=receiver.url + "?own")

        result, _ = run_pending(runner)

        assert result.exit_code == 0, result.output
        assert "3 of 3 webhook deliveries delivered." in result.output
        assert summary(result) == (2, 2, 0, 0, 0)  # still the last line
        got = receiver.wait_for(3, timeout=5)
    assert {(r.event, r.json()["id"]) for r in got} == {
        ("training.succeeded", training["id"]),
        ("training.succeeded", called_back["id"]),
    }
    assert len({r.delivery for r in got}) == 3
    # The subscription's two signed with its secret, the callback with the callback secret.
    own = [r for r in got if r.path.endswith("?own")]
    assert [r.json()["id"] for r in own] == [called_back["id"]]
    assert verify(CALLBACK_SECRET, own[0].headers["X-Maia-Signature"], own[0].body)
    assert all(r.signed for r in got if r not in own)
