"""Webhooks in-process: subscriptions through the API, the outbox written with each change, and
the sender delivering to a receiver on 127.0.0.1, signed, retried, never redirected."""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta

import pytest
from conftest import bearer
from helpers import create, fetch
from receiver import Receiver, verify
from sqlalchemy import event, func, select

from maia_trainings import db, outbox, queue, sender
from maia_trainings.allowed_hosts import AllowedHosts, HostRefused
from maia_trainings.models import WebhookDelivery, utcnow
from maia_trainings.retry import RetryPolicy

CALLBACK_SECRET = "callback-secret-for-tests"
OWNER = "node:1:run"


@pytest.fixture
def hooks(app):
    """The app set up for webhooks to 127.0.0.1, retrying after 0.2 s."""
    app.config.update(
        WEBHOOK_ALLOWED_HOSTS=["127.0.0.1"],
        WEBHOOK_RETRY_DELAY=0.2,
        WEBHOOK_CALLBACK_SECRET=CALLBACK_SECRET,
        WEBHOOK_TIMEOUT=2.0,
    )
    return app


@pytest.fixture
def running_sender(hooks):
    """Start a sender on the app (its threads, as a node's); stopped at the end."""
    started: list[sender.Sender] = []

    def start() -> sender.Sender:
        made = sender.Sender(hooks)
        made.start()
        started.append(made)
        return made

    yield start
    for made in started:
        made.stop()


def subscribe(client, auth, url, **fields):
    response = client.post("/webhooks", json={"url": url, **fields}, headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def deliveries(client, auth, webhook_id, **params):
    response = client.get(f"/webhooks/{webhook_id}/deliveries", query_string=params, headers=auth)
    assert response.status_code == 200, response.json
    return response.json


def run_to_success(app, client, auth, **fields):
    """Create a training, claim it and record its success, as a run would; returns its id."""
    training_id = int(create(client, auth, **fields)["id"])
    with db.database(app).session() as session:
        claimed = queue.claim_next(session, OWNER, lease_seconds=30)
        assert claimed is not None
        assert claimed.id == training_id
        assert queue.finish(session, training_id, OWNER, results={"accuracy": 0.5})
    return training_id


def wait_until(check, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)
    return found


# Delivery, retries, signatures ---------------------------------------------------------------


def test_receiver_sees_retries_with_one_delivery_id(hooks, client, auth, running_sender):
    with Receiver(answers=[500, 500]) as receiver:
        webhook = subscribe(client, auth, receiver.url)
        receiver.secret = webhook["secret"]
        running_sender()
        training_id = run_to_success(hooks, client, auth)
        got = receiver.wait_for(3)
        time.sleep(0.3)  # no fourth: the third was answered 200
        assert len(receiver.received) == 3

    assert [r.answered for r in got] == [500, 500, 200]
    assert all(r.signed for r in got)
    assert {r.delivery for r in got} == {got[0].delivery}
    assert got[0].delivery
    assert {r.event for r in got} == {"training.succeeded"}
    assert {r.body for r in got} == {got[0].body}  # byte for byte the same on every attempt
    assert got[0].json() == fetch(client, auth, training_id)
    assert got[0].headers["Content-Type"] == "application/json"
    assert got[0].headers["User-Agent"].startswith("maia-trainings")

    (listed,) = wait_until(
        lambda: [d for d in deliveries(client, auth, webhook["id"]) if d["status"] == "delivered"]
    )
    assert listed["delivery_id"] == got[0].delivery
    assert listed["training_id"] == str(training_id)
    assert [a["status_code"] for a in listed["attempts"]] == [500, 500, 200]
    assert [a["error"] for a in listed["attempts"]] == ["answered 500", "answered 500", None]
    assert all(a["duration_ms"] is not None for a in listed["attempts"])
    assert listed["attempt_count"] == 3
    assert listed["delivered_at"] is not None


def test_a_delivery_is_given_up_after_webhook_max_attempts(hooks, client, auth, running_sender):
    hooks.config["WEBHOOK_MAX_ATTEMPTS"] = 2
    with Receiver(default=503) as receiver:
        webhook = subscribe(client, auth, receiver.url)
        running_sender()
        run_to_success(hooks, client, auth)
        (failed,) = wait_until(
            lambda: [d for d in deliveries(client, auth, webhook["id"]) if d["status"] == "failed"]
        )
        time.sleep(0.5)
        assert len(receiver.received) == 2
    assert failed["attempt_count"] == 2
    assert failed["last_status_code"] == 503
    assert failed["next_attempt_at"] is None


def test_signature_is_the_documented_hmac():
    body = b'{"id":"1"}'
    value = sender.signature("s3cret", 1700000000, body)
    import hashlib
    import hmac

    expected = hmac.new(b"s3cret", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert value == f"t=1700000000,v1={expected}"
    assert not verify("s3cret", value, body)  # a timestamp that old is refused as a replay
    assert not verify("other", sender.signature("s3cret", int(time.time()), body), body)


def test_a_redirect_is_not_followed(hooks, client, auth, running_sender):
    hooks.config["WEBHOOK_MAX_ATTEMPTS"] = 1
    with Receiver(default=302) as receiver:
        receiver.headers_out = {"Location": f"http://127.0.0.1:{receiver.port}/elsewhere"}
        webhook = subscribe(client, auth, receiver.url)
        running_sender()
        run_to_success(hooks, client, auth)
        (failed,) = wait_until(
            lambda: [d for d in deliveries(client, auth, webhook["id"]) if d["status"] == "failed"]
        )
        time.sleep(0.2)
        assert [r.path for r in receiver.received] == ["/hook"]
    assert failed["last_status_code"] == 302
    assert "redirects are not followed" in failed["last_error"]


def test_a_host_no_longer_allowed_is_refused_at_send_time(hooks, client, auth):
    with Receiver() as receiver:
        webhook = subscribe(client, auth, receiver.url)
        run_to_success(hooks, client, auth)
        hooks.config["WEBHOOK_ALLOWED_HOSTS"] = ["10.0.0.0/8"]
        sent = sender.deliver_due(hooks)
        assert receiver.received == []
    assert (sent.attempted, sent.delivered) == (1, 0)
    (refused,) = deliveries(client, auth, webhook["id"])
    assert refused["status"] == "pending"  # retried later: the setting may come back
    assert refused["attempts"][0]["status_code"] is None
    assert "127.0.0.1 is not in WEBHOOK_ALLOWED_HOSTS" in refused["attempts"][0]["error"]
    assert webhook["secret"] not in json.dumps(refused)


def test_callback_url_gets_the_final_event_signed_with_the_callback_secret(
    hooks, client, auth, running_sender
):
    with Receiver() as receiver:
        receiver.secret = CALLBACK_SECRET
        running_sender()
        created = create(client, auth, callback_url=receiver.url + "?training=x")
        assert created["callback_url"] == receiver.url + "?training=x"
        response = client.post(f"/trainings/{created['id']}/cancel", headers=auth)
        assert response.status_code == 200
        (got,) = receiver.wait_for(1)
        time.sleep(0.2)
        assert len(receiver.received) == 1  # the final event only: not its queueing
    assert got.signed
    assert got.event == "training.cancelled"
    assert got.path == "/hook?training=x"
    assert got.json() == fetch(client, auth, created["id"])


def test_run_pending_pass_delivers_what_is_due_once(hooks, client, auth):
    with Receiver(answers=[500]) as receiver:
        subscribe(client, auth, receiver.url)
        run_to_success(hooks, client, auth)
        run_to_success(hooks, client, auth)
        first = sender.deliver_due(hooks)
        assert (first.attempted, first.delivered) == (2, 1)
        assert sender.deliver_due(hooks).attempted == 0  # the retry is not due yet
        time.sleep(0.25)
        assert sender.deliver_due(hooks).delivered == 1
        assert len(receiver.received) == 3


# Which events go where ------------------------------------------------------------------------


def test_subscribers_get_only_their_events(hooks, client, auth):
    started = subscribe(client, auth, "http://127.0.0.1:9/started", events=["training.started"])
    final = subscribe(client, auth, "http://127.0.0.1:9/final")
    queued = subscribe(client, auth, "http://127.0.0.1:9/q", events="training.queued")
    assert final["events"] == ["training.succeeded", "training.failed", "training.cancelled"]
    training_id = run_to_success(hooks, client, auth)

    def events(webhook):
        return [(d["event"], d["training_id"]) for d in deliveries(client, auth, webhook["id"])]

    assert events(started) == [("training.started", str(training_id))]
    assert events(queued) == [("training.queued", str(training_id))]
    assert events(final) == [("training.succeeded", str(training_id))]


def test_a_disabled_subscription_gets_nothing(hooks, client, auth):
    webhook = subscribe(client, auth, "http://127.0.0.1:9/x", enabled=False)
    run_to_success(hooks, client, auth)
    assert deliveries(client, auth, webhook["id"]) == []


def test_each_transition_writes_its_event(hooks, client, auth):
    webhook = subscribe(
        client,
        auth,
        "http://127.0.0.1:9/all",
        events=",".join(
            ["training.queued", "training.started", "training.failed", "training.cancelled"]
        ),
    )
    now = utcnow()
    scheduled = create(client, auth, scheduled_at=(now + timedelta(hours=1)).isoformat())
    policy = RetryPolicy(max_attempts=2, base_delay=0)
    with db.database(hooks).session() as session:
        assert queue.promote_due(session, now=now + timedelta(hours=2)) == 1
        claimed = queue.claim_next(session, OWNER, lease_seconds=30, now=now + timedelta(hours=2))
        assert claimed is not None
        assert claimed.id == int(scheduled["id"])
        assert (
            queue.retry_or_fail(
                session, claimed.id, 1, OWNER, "died", policy=policy, now=now + timedelta(hours=2)
            )
            == "queued"
        )
        later = now + timedelta(hours=3)
        again = queue.claim_next(session, OWNER, lease_seconds=1, now=later)
        assert again is not None
        assert queue.reap_expired(session, policy=policy, now=later + timedelta(seconds=5)) == 1
    events = [d["event"] for d in reversed(deliveries(client, auth, webhook["id"]))]
    assert events == [
        "training.queued",  # promoted
        "training.started",
        "training.queued",  # retried
        "training.started",
        "training.failed",  # its lease ran out, attempts used up
    ]
    other = create(client, auth)
    client.post(f"/trainings/{other['id']}/cancel", headers=auth)
    latest = deliveries(client, auth, webhook["id"], _limit=2)
    assert [d["event"] for d in latest] == ["training.cancelled", "training.queued"]
    assert json.loads(json.dumps(latest[0]))["training_id"] == other["id"]


def test_a_change_nobody_listens_to_runs_no_further_statement(hooks, client, auth):
    """Without a subscription or callback_url the outbox costs no statement in the change's
    transaction (its one read is on a kept connection of its own)."""
    training_id = int(create(client, auth)["id"])
    engine = db.database(hooks).engine
    statements: list[str] = []

    def seen(_conn, _cursor, statement, *_args):
        statements.append(statement.split()[0].upper())

    event.listen(engine, "before_cursor_execute", seen)
    try:
        with db.database(hooks).session() as session:
            assert queue.claim_next(session, OWNER, lease_seconds=30) is not None
            # A trainer's version: no turn taken for an automatic one (PostgreSQL's lock).
            assert queue.finish(session, training_id, OWNER, results={"version": "v1"})
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert "INSERT" not in statements
    with db.database(hooks).session() as session:
        assert session.scalar(select(func.count()).select_from(WebhookDelivery)) == 0
    # Claim: a look, then the locked read and the UPDATE; finish: its UPDATE.
    assert statements.count("SELECT") == 2
    assert statements.count("UPDATE") == 2


def test_a_lost_race_writes_no_delivery(hooks, client, auth):
    webhook = subscribe(client, auth, "http://127.0.0.1:9/x")
    training_id = int(create(client, auth)["id"])
    with db.database(hooks).session() as session:
        assert queue.claim_next(session, OWNER, lease_seconds=30) is not None
        assert not queue.finish(session, training_id, "someone-else", results={})
    assert deliveries(client, auth, webhook["id"]) == []


# The outbox's claims -------------------------------------------------------------------------


def test_a_delivery_is_claimed_once_until_its_lease_runs_out(hooks, client, auth):
    subscribe(client, auth, "http://127.0.0.1:9/x")
    run_to_success(hooks, client, auth)
    now = utcnow()
    with db.database(hooks).session() as session:
        first = outbox.claim_delivery(session, "a", lease_seconds=10, max_attempts=8, now=now)
        assert first is not None
        assert first.attempts == 1
        assert (
            outbox.claim_delivery(session, "b", lease_seconds=10, max_attempts=8, now=now) is None
        )
        # Its sender died mid-send: the lease runs out and another takes it up.
        later = now + timedelta(seconds=11)
        second = outbox.claim_delivery(session, "b", lease_seconds=10, max_attempts=8, now=later)
        assert second is not None
        assert second.delivery_uuid == first.delivery_uuid
        assert second.attempts == 2
        # The first sender's late result changes nothing: the lease is not its any more.
        result = outbox.AttemptResult(200, None, 1.0)
        outbox.record_attempt(session, first, "a", result, max_attempts=8, retry_delay=1)
        row = session.get(WebhookDelivery, first.id, populate_existing=True)
        assert row.status == "pending"
        assert row.lease_owner == "b"


# The API -------------------------------------------------------------------------------------


def test_the_secret_is_shown_once(hooks, client, auth):
    made = subscribe(client, auth, "http://127.0.0.1:8000/x")
    assert len(made["secret"]) == 64
    assert int(made["secret"], 16) >= 0
    shown = client.get(f"/webhooks/{made['id']}", headers=auth).json
    listed = client.get("/webhooks", headers=auth).json
    assert "secret" not in shown
    assert all("secret" not in w for w in listed)
    changed = client.put(f"/webhooks/{made['id']}", json={"enabled": False}, headers=auth).json
    assert "secret" not in changed
    assert made["secret"] not in json.dumps([shown, listed, changed])


def test_crud(hooks, client, auth):
    made = subscribe(client, auth, "http://127.0.0.1:8000/a", events=["training.failed"])
    assert made["events"] == ["training.failed"]
    assert made["enabled"] is True
    assert made["created_by"] == "writer"
    other = subscribe(client, auth, "http://127.0.0.1:8000/b")
    listed = client.get("/webhooks", headers=auth).json
    assert [w["id"] for w in listed] == [made["id"], other["id"]]
    page = client.get("/webhooks", query_string={"_start": 1, "_limit": 1}, headers=auth).json
    assert [w["id"] for w in page] == [other["id"]]
    response = client.put(
        f"/webhooks/{made['id']}",
        json={"url": "http://127.0.0.1:8000/c", "events": ["training.started", "training.queued"]},
        headers=auth,
    )
    assert response.status_code == 200, response.json
    assert response.json["url"] == "http://127.0.0.1:8000/c"
    assert response.json["events"] == ["training.queued", "training.started"]
    # A GET's body can be PUT back as it is.
    again = client.put(f"/webhooks/{made['id']}", json=response.json, headers=auth)
    assert again.status_code == 200, again.json
    deleted = client.delete(f"/webhooks/{made['id']}", headers=auth)
    assert deleted.status_code == 200
    assert deleted.json["id"] == made["id"]
    for method in ("get", "put", "delete"):
        assert getattr(client, method)(f"/webhooks/{made['id']}", headers=auth).status_code == 404
    assert client.get("/webhooks/abc", headers=auth).status_code == 404
    assert client.get("/webhooks/0/deliveries", headers=auth).status_code == 404
    assert client.post("/webhooks/deliveries/99/redeliver", headers=auth).status_code == 404


def test_xml_and_form_bodies(hooks, client, auth):
    response = client.post(
        "/webhooks",
        data="<item><url>http://127.0.0.1:8000/x</url><events>training.queued,training.failed"
        "</events><enabled>false</enabled></item>",
        content_type="application/xml",
        headers={**auth, "Accept": "application/xml"},
    )
    assert response.status_code == 200, response.data
    assert b"<events><item>training.queued</item><item>training.failed</item></events>" in (
        response.data
    )
    response = client.post(
        "/webhooks", data={"url": "http://127.0.0.1:8000/y", "enabled": "true"}, headers=auth
    )
    assert response.status_code == 200
    assert response.json["enabled"] is True


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"url": "http://example.com/hook"}, "url"),
        ({"url": "http://127.0.0.2/hook"}, "url"),
        ({"url": "ftp://127.0.0.1/hook"}, "url"),
        ({"url": "http://user:pw@127.0.0.1/hook"}, "url"),
        ({"url": "http://127.0.0.1:99999/hook"}, "url"),
        ({"url": "http://127.0.0.1 /hook"}, "url"),
        ({"url": "http://127.0.0.1\u3000/hook"}, "url"),
        ({"url": "http://127.0.0.1/a b"}, "url"),
        ({"url": "http://127.0.0.1/caf\u00e9"}, "url"),
        ({"url": "http://[::ffff:127.0.0.2]/hook"}, "url"),
        ({}, "url"),
        ({"url": "http://127.0.0.1/", "events": ["training.exploded"]}, "events"),
        ({"url": "http://127.0.0.1/", "events": []}, "events"),
        ({"url": "http://127.0.0.1/", "colour": "red"}, "colour"),
    ],
)
def test_invalid_subscriptions_are_refused(hooks, client, auth, body, field):
    response = client.post("/webhooks", json=body, headers=auth)
    assert response.status_code == 400, response.json
    assert field in response.json["errors"]


def test_a_subscription_to_a_host_not_allowed_names_it(hooks, client, auth):
    response = client.post("/webhooks", json={"url": "https://Evil.example/x"}, headers=auth)
    assert response.status_code == 400
    assert response.json["errors"]["url"] == [
        "the host evil.example is not in WEBHOOK_ALLOWED_HOSTS"
    ]
    made = subscribe(client, auth, "http://127.0.0.1/x")
    response = client.put(
        f"/webhooks/{made['id']}", json={"url": "http://10.1.1.1/x"}, headers=auth
    )
    assert response.status_code == 400
    assert "10.1.1.1" in response.json["errors"]["url"][0]


def test_a_callback_url_to_a_host_not_allowed_is_refused(hooks, client, auth):
    response = client.post(
        "/trainings", json={"callback_url": "http://example.com/done"}, headers=auth
    )
    assert response.status_code == 400
    assert response.json["code"] == 400
    assert response.json["errors"] == {
        "callback_url": ["the host example.com is not in WEBHOOK_ALLOWED_HOSTS"]
    }
    created = create(client, auth)
    response = client.put(
        f"/trainings/{created['id']}", json={"callback_url": "http://[::1]/x"}, headers=auth
    )
    assert response.status_code == 400
    assert "callback_url" in response.json["errors"]
    assert client.get("/trainings/count", headers=auth).json == 1


def test_callback_url_needs_the_callback_secret(hooks, client, auth):
    hooks.config["WEBHOOK_CALLBACK_SECRET"] = None
    response = client.post("/trainings", json={"callback_url": "http://127.0.0.1/x"}, headers=auth)
    assert response.status_code == 400
    assert "WEBHOOK_CALLBACK_SECRET" in response.json["errors"]["callback_url"][0]


def test_read_tokens_may_only_read(hooks, client, auth, read_token):
    made = subscribe(client, auth, "http://127.0.0.1/x")
    reader = bearer(read_token)
    assert (
        client.post("/webhooks", json={"url": "http://127.0.0.1/y"}, headers=reader).status_code
        == 403
    )
    assert client.put(f"/webhooks/{made['id']}", json={}, headers=reader).status_code == 403
    assert client.delete(f"/webhooks/{made['id']}", headers=reader).status_code == 403
    assert client.post("/webhooks/deliveries/1/redeliver", headers=reader).status_code == 403
    assert client.get("/webhooks", headers=reader).status_code == 200
    assert client.get(f"/webhooks/{made['id']}/deliveries", headers=reader).status_code == 200
    assert client.get("/webhooks").status_code == 403


def test_redeliver_sends_again_with_the_same_delivery_id(hooks, client, auth):
    with Receiver() as receiver:
        webhook = subscribe(client, auth, receiver.url)
        run_to_success(hooks, client, auth)
        assert sender.deliver_due(hooks).delivered == 1
        (delivered,) = deliveries(client, auth, webhook["id"])
        assert delivered["status"] == "delivered"
        response = client.post(f"/webhooks/deliveries/{delivered['id']}/redeliver", headers=auth)
        assert response.status_code == 200, response.json
        assert response.json["status"] == "pending"
        assert response.json["attempt_count"] == 0
        assert sender.deliver_due(hooks).delivered == 1
        first, second = receiver.received
    assert first.delivery == second.delivery == delivered["delivery_id"]
    assert first.body == second.body
    (again,) = deliveries(client, auth, webhook["id"])
    assert again["status"] == "delivered"
    assert len(again["attempts"]) == 2


def test_deleting_a_subscription_deletes_its_deliveries(hooks, client, auth):
    with Receiver() as receiver:
        webhook = subscribe(client, auth, receiver.url)
        run_to_success(hooks, client, auth)
        assert client.delete(f"/webhooks/{webhook['id']}", headers=auth).status_code == 200
        assert sender.deliver_due(hooks).attempted == 0
        assert receiver.received == []


def test_a_new_url_applies_to_pending_deliveries(hooks, client, auth):
    with Receiver() as receiver:
        webhook = subscribe(client, auth, "http://127.0.0.1:9/old")
        run_to_success(hooks, client, auth)
        client.put(f"/webhooks/{webhook['id']}", json={"url": receiver.url}, headers=auth)
        assert sender.deliver_due(hooks).delivered == 1
        assert [r.path for r in receiver.received] == ["/hook"]


# Allowed hosts ------------------------------------------------------------------------------


def test_allowed_hosts_match_names_exactly_and_addresses_by_network():
    allowed = AllowedHosts.parse(["Hooks.Example.com", "10.0.0.0/8", "::1"])
    assert allowed.check_url("https://hooks.example.COM./x").host == "hooks.example.com"
    assert allowed.check_url("http://10.2.3.4:8080/x?a=1").path == "/x?a=1"
    assert allowed.check_url("http://[::1]/").literal is not None
    for refused in (
        "http://sub.hooks.example.com/",
        "http://11.0.0.1/",
        "http://[::2]/",
        "http://localhost/",
        "file:///etc/passwd",
        "http://a@hooks.example.com/",
        "http:///nohost",
    ):
        with pytest.raises(HostRefused):
            allowed.check_url(refused)
    assert AllowedHosts.parse([]).names == frozenset()


def test_a_listed_name_is_pinned_to_the_address_it_resolved_to(monkeypatch):
    allowed = AllowedHosts.parse(["hooks.example.com"])
    answers = [
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("224.0.0.1", 80))],
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("0.0.0.0", 80))],
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("192.0.2.7", 80))],
    ]
    monkeypatch.setattr(socket, "getaddrinfo", lambda *a, **k: answers.pop(0))
    for _refused in range(2):
        with pytest.raises(HostRefused):
            allowed.resolve("http://hooks.example.com/x", timeout=1)
    target, address = allowed.resolve("http://hooks.example.com/x", timeout=1)
    assert address == "192.0.2.7"
    assert target.host_header == "hooks.example.com"


def test_a_training_rescheduled_into_the_past_is_queued_for_its_subscribers(hooks, client, auth):
    webhook = subscribe(client, auth, "http://127.0.0.1:9/q", events=["training.queued"])
    ahead = (utcnow() + timedelta(hours=1)).isoformat()
    created = create(client, auth, scheduled_at=ahead)
    assert deliveries(client, auth, webhook["id"]) == []  # scheduled: not queued yet
    past = (utcnow() - timedelta(minutes=1)).isoformat()
    response = client.put(f"/trainings/{created['id']}", json={"scheduled_at": past}, headers=auth)
    assert response.json["status"] == "queued"
    (queued,) = deliveries(client, auth, webhook["id"])
    assert queued["event"] == "training.queued"
    assert queued["training_id"] == created["id"]


def test_a_listed_name_is_connected_to_at_its_checked_address(hooks, client, auth, monkeypatch):
    real = socket.getaddrinfo
    with Receiver() as receiver:
        looked_up = []

        def resolve(host, port, *args, **kwargs):
            if host == "hooks.test":
                looked_up.append(host)
                return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
            return real(host, port, *args, **kwargs)

        monkeypatch.setattr(socket, "getaddrinfo", resolve)
        # A loopback address is reached only when a listed network holds it.
        hooks.config["WEBHOOK_ALLOWED_HOSTS"] = ["hooks.test", "127.0.0.1"]
        subscribe(client, auth, f"http://hooks.test:{receiver.port}/named")
        run_to_success(hooks, client, auth)
        assert sender.deliver_due(hooks).delivered == 1
        (got,) = receiver.received
    assert looked_up == ["hooks.test"]  # resolved once, by the check
    assert got.headers["Host"] == f"hooks.test:{receiver.port}"
    assert got.path == "/named"


def test_every_address_a_name_resolves_to_is_checked(monkeypatch):
    answer = [
        "0.0.0.0",
        "224.0.0.1",
        "169.254.169.254",  # cloud metadata
        "fe80::1",
        "127.0.0.1",
        "::1",
        "::ffff:127.0.0.1",
        "2002:7f00:1::1",  # 6to4 around 127.0.0.1
        "64:ff9b::a9fe:a9fe",  # NAT64 around 169.254.169.254
        "240.0.0.1",
        "10.0.0.5",
        "fd00::5",
    ]
    monkeypatch.setattr(
        socket,
        "getaddrinfo",
        lambda *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 80)) for ip in answer],
    )
    url = "http://hooks.example.com/x"
    assert AllowedHosts.parse(["hooks.example.com"]).resolve(url, timeout=1)[1] == "10.0.0.5"
    metadata = AllowedHosts.parse(["hooks.example.com", "169.254.0.0/16"])
    assert metadata.resolve(url, timeout=1)[1] == "169.254.169.254"
    del answer[-2:]  # no private address left
    with pytest.raises(HostRefused) as refused:
        AllowedHosts.parse(["hooks.example.com"]).resolve(url, timeout=1)
    message = str(refused.value)
    assert "0.0.0.0, an unspecified address" in message
    assert "169.254.169.254, a link-local address" in message
    assert "2002:7f00:1::1, a loopback address (127.0.0.1)" in message
    assert "64:ff9b::a9fe:a9fe, a link-local address (169.254.169.254)" in message
    assert "240.0.0.1, a reserved address" in message
    # Listing 0.0.0.0/0 lets a listed name reach every address but the never-reached ones.
    everywhere = AllowedHosts.parse(["hooks.example.com", "0.0.0.0/0"])
    assert everywhere.resolve(url, timeout=1)[1] == "169.254.169.254"


def test_an_ip_literal_is_judged_as_the_ipv4_address_it_carries():
    url = "http://[::ffff:127.0.0.1]:8080/x"
    with pytest.raises(HostRefused, match="not in WEBHOOK_ALLOWED_HOSTS"):
        AllowedHosts.parse(["localhost"]).check_url(url)
    for listed in (["::/0"], ["::ffff:0:0/96", "10.0.0.0/8"]):
        with pytest.raises(HostRefused, match="a loopback address"):
            AllowedHosts.parse(listed).check_url(url)
    target = AllowedHosts.parse(["127.0.0.0/8"]).check_url(url)
    assert target.host_header == "[::ffff:127.0.0.1]:8080"
    assert str(target.literal) == "::ffff:7f00:1"
    everywhere = AllowedHosts.parse(["0.0.0.0/0", "::/0"])
    for never in ("http://0.0.0.0/", "http://[::]/", "http://224.0.0.1/", "http://[ff02::1]/"):
        with pytest.raises(HostRefused, match="never reached"):
            everywhere.check_url(never)
    assert everywhere.check_url("http://10.1.2.3/").host == "10.1.2.3"


def test_a_name_resolving_to_loopback_is_refused_unless_its_network_is_listed(hooks, client, auth):
    hooks.config["WEBHOOK_ALLOWED_HOSTS"] = ["localhost"]
    with Receiver() as receiver:
        webhook = subscribe(client, auth, f"http://localhost:{receiver.port}/hook")
        run_to_success(hooks, client, auth)
        sent = sender.deliver_due(hooks)
        assert (sent.attempted, sent.delivered) == (1, 0)
        assert receiver.received == []
        (refused,) = deliveries(client, auth, webhook["id"])
        assert refused["status"] == "pending"
        assert refused["attempts"][0]["status_code"] is None
        assert "127.0.0.1, a loopback address" in refused["attempts"][0]["error"]
        hooks.config["WEBHOOK_ALLOWED_HOSTS"] = ["localhost", "127.0.0.0/8"]
        time.sleep(0.25)  # its retry comes due
        assert sender.deliver_due(hooks).delivered == 1
        (got,) = receiver.received
    assert got.headers["Host"] == f"localhost:{receiver.port}"


def test_an_internationalised_name_is_sent_in_its_ascii_form(hooks, client, auth, monkeypatch):
    real = socket.getaddrinfo
    encoded = "xn--r8jz45g.jp"

    def resolve(host, port, *args, **kwargs):
        if host in ("例え.jp", encoded):
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", port))]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    hooks.config["WEBHOOK_ALLOWED_HOSTS"] = ["例え.jp", "127.0.0.1"]
    with Receiver() as receiver:
        subscribe(client, auth, f"http://例え.JP:{receiver.port}/hook")
        run_to_success(hooks, client, auth)
        assert sender.deliver_due(hooks).delivered == 1
        (got,) = receiver.received
    assert got.headers["Host"] == f"{encoded}:{receiver.port}"
    allowed = AllowedHosts.parse(["例え.jp", "bad name"])
    assert allowed.names == frozenset({encoded})
    assert allowed.check_url(f"http://{encoded.upper()}/").host == encoded
    for refused in ("http://a..b/", "http://a_b%2f.c/", "http://" + "x" * 64 + ".jp/"):
        with pytest.raises(HostRefused, match="not a valid host name"):
            allowed.check_url(refused)


def test_any_failure_of_an_attempt_is_recorded_without_the_secret(hooks, client, auth, monkeypatch):
    with Receiver() as receiver:
        webhook = subscribe(client, auth, receiver.url)

        def fail(self, *args, **kwargs):
            raise RuntimeError(f"unexpected, {webhook['secret']} included")

        monkeypatch.setattr("urllib3.connection.HTTPConnection.request", fail)
        run_to_success(hooks, client, auth)
        assert sender.deliver_due(hooks).attempted == 1
        assert receiver.received == []
    (failed,) = deliveries(client, auth, webhook["id"])
    assert failed["status"] == "pending"  # tried again later
    assert failed["attempts"][0]["error"] == (
        "the request failed: RuntimeError: unexpected, [secret] included"
    )
    assert webhook["secret"] not in json.dumps(failed)


def test_a_delivery_is_never_handed_out_beyond_webhook_max_attempts(hooks, client, auth):
    """A sender that dies mid-send (or cannot record) leaves its delivery to its lease's end:
    at the last attempt, that ends it, failed."""
    webhook = subscribe(client, auth, "http://127.0.0.1:9/x")
    run_to_success(hooks, client, auth)
    now = utcnow()
    with db.database(hooks).session() as session:
        for attempt in (1, 2):
            at = now + timedelta(seconds=11 * (attempt - 1))
            claimed = outbox.claim_delivery(session, "a", lease_seconds=10, max_attempts=2, now=at)
            assert claimed is not None
            assert claimed.attempts == attempt
        after = now + timedelta(seconds=22)
        assert outbox.claim_delivery(session, "a", lease_seconds=10, max_attempts=2, now=after) is (
            None
        )
    (failed,) = deliveries(client, auth, webhook["id"])
    assert failed["status"] == "failed"
    assert failed["attempt_count"] == 2
    assert failed["next_attempt_at"] is None
    assert "never finished" in failed["last_error"]


def test_a_long_node_name_fits_the_lease_and_the_attempt(hooks, client, auth):
    """NODE_NAME as long as a Kubernetes pod's: the lease owner and the attempt's node are
    String(64) (PostgreSQL refuses longer ones)."""
    hooks.config["NODE_NAME"] = "n" * 100
    with Receiver() as receiver:
        webhook = subscribe(client, auth, receiver.url)
        run_to_success(hooks, client, auth)
        made = sender.Sender(hooks)
        assert len(made.owner) <= 64
        assert made.owner.startswith("n" * 24 + ":")
        assert sender.deliver_due(hooks).delivered == 1
    (delivered,) = deliveries(client, auth, webhook["id"])
    assert delivered["attempts"][0]["node"] == "n" * 64


# Time limits --------------------------------------------------------------------------------


class Dripper:
    """A receiver on 127.0.0.1 that answers each request's head one line every ``every``
    seconds, for ``lasting`` seconds at most; ``connected`` is set at the first connection."""

    def __init__(self, every: float = 0.3, lasting: float = 20) -> None:
        self.every = every
        self.lasting = lasting
        self.connected = threading.Event()
        self._closing = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._closing.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            threading.Thread(target=self._drip, args=(conn,), daemon=True).start()

    def _drip(self, conn: socket.socket) -> None:
        self.connected.set()
        ends = time.monotonic() + self.lasting
        with conn:
            try:
                conn.sendall(b"HTTP/1.1 200 OK\r\n")
                line = 0
                while time.monotonic() < ends and not self._closing.wait(self.every):
                    conn.sendall(f"X-Drip-{line}: .\r\n".encode())
                    line += 1
            except OSError:
                return  # the sender hung up

    def __enter__(self) -> Dripper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closing.set()
        self._listener.close()


def test_an_attempt_ends_at_webhook_timeout_however_slowly_the_answer_comes(hooks, client, auth):
    hooks.config["WEBHOOK_TIMEOUT"] = 1
    with Dripper() as dripper:
        webhook = subscribe(client, auth, dripper.url)
        run_to_success(hooks, client, auth)
        started = time.monotonic()
        sent = sender.deliver_due(hooks)
        took = time.monotonic() - started
    assert (sent.attempted, sent.delivered) == (1, 0)
    assert took < 3
    (late,) = deliveries(client, auth, webhook["id"])
    assert late["attempts"][0]["error"] == "no answer within 1 s"
    assert 900 <= late["attempts"][0]["duration_ms"] < 3000


def test_a_sender_stops_promptly_while_a_receiver_drips(hooks, client, auth, running_sender):
    hooks.config["WEBHOOK_TIMEOUT"] = 1
    with Dripper() as dripper:
        webhook = subscribe(client, auth, dripper.url)
        made = running_sender()
        run_to_success(hooks, client, auth)
        assert dripper.connected.wait(5)
        started = time.monotonic()
        made.stop()
        assert time.monotonic() - started < 3
    (late,) = deliveries(client, auth, webhook["id"])
    assert late["attempts"][0]["error"] == "no answer within 1 s"


def test_a_resolution_that_does_not_finish_is_refused_in_time(monkeypatch):
    def hang(*args, **kwargs):
        time.sleep(3)
        raise socket.gaierror("too late")

    monkeypatch.setattr(socket, "getaddrinfo", hang)
    started = time.monotonic()
    with pytest.raises(HostRefused, match=r"could not be resolved within 0\.5 s"):
        AllowedHosts.parse(["slow.test"]).resolve("http://slow.test/", timeout=0.5)
    assert time.monotonic() - started < 1.5


def test_a_refused_connection_is_not_called_a_timeout():
    settings = sender.SendSettings(
        allowed=AllowedHosts.parse(["127.0.0.1"]),
        max_attempts=1,
        retry_delay=1,
        timeout=2,
        callback_secret=CALLBACK_SECRET,
        node="n",
    )
    with socket.create_server(("127.0.0.1", 0)) as closed:
        port = closed.getsockname()[1]
    claimed = outbox.Claimed(1, "d", None, f"http://127.0.0.1:{port}/x", "e", "{}", 1, None)
    result = sender.send(settings, claimed)
    assert result.error is not None
    assert result.error.startswith("could not connect:")
