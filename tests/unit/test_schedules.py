"""Recurring schedules, in-process: the /schedules API, firing through an injected clock (DST
in Europe/Madrid, coalescing after downtime, MISFIRE_GRACE), pause and resume, the CLI, and
run-pending and the dispatcher creating due fires' trainings.

Two real processes racing over one database are in tests/integration/test_schedules_race.py.
"""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from helpers import create, is_error_body
from test_claim_loop import Clock, FakeRunner, make_loop, wait_idle

from maia_trainings import claim_loop, db, dispatcher, schedules
from maia_trainings.cron import Cron
from maia_trainings.fields import format_timestamp
from maia_trainings.models import Schedule, Training, utcnow
from maia_trainings.trainings import create_training, get_training

SHOWN = [
    "id",
    "name",
    "cron",
    "timezone",
    "meta",
    "version_prefix",
    "model_name",
    "enabled",
    "next_fire_at",
    "last_fired_at",
    "last_training_id",
    "missed_fires",
    "created_at",
    "updated_at",
    "created_by",
    "updated_by",
]


def utc(*args: int) -> datetime:
    return datetime(*args, tzinfo=UTC)


def post(client, auth, **body):
    response = client.post("/schedules", json=body, headers=auth)
    assert response.status_code == 200, response.json
    return response.json


# Through the store, with an injected clock -------------------------------------------------


def add(app, now: datetime, **fields) -> int:
    """A schedule made at ``now`` (as POST /schedules would), validated; its id."""
    with db.database(app).session() as session:
        loaded = schedules.load_schedule(fields)
        return schedules.create_schedule(session, loaded, actor="tester", now=now).id


def fire(app, now: datetime, grace: float = 86400) -> list[schedules.Fired]:
    with db.database(app).session() as session:
        return schedules.fire_due(session, now=now, grace=grace)


def walk(app, start: datetime, end: datetime, step: timedelta) -> None:
    """Fire at every ``step`` from ``start`` to ``end``, as a server's looks would."""
    now = start
    while now <= end:
        fire(app, now)
        now += step


def stored(app, schedule_id: int) -> dict:
    with db.database(app).session() as session:
        return schedules.represent(schedules.get_schedule(session, schedule_id))


def fired(app, schedule_id: int) -> list[Training]:
    """The schedule's trainings, in the order they were made."""
    with db.database(app).session() as session:
        found = session.query(Training).filter_by(schedule_id=schedule_id).order_by(Training.id)
        return list(found)


def uuids(app, schedule_id: int) -> list[str]:
    return [training.uuid for training in fired(app, schedule_id)]


# The API -----------------------------------------------------------------------------------


def test_a_new_schedule_is_shown_with_its_next_fire(client, auth):
    before = utcnow()
    shown = post(client, auth, name="nightly", cron="@daily", meta={"seconds": 0})
    assert list(shown) == SHOWN
    assert shown["id"].isdigit()
    assert shown["timezone"] == "UTC"
    assert shown["enabled"] is True
    assert shown["meta"] == '{"seconds":0}'  # an object is kept as its JSON text
    assert shown["missed_fires"] == 0
    assert shown["last_fired_at"] is None
    assert shown["last_training_id"] is None
    assert shown["created_by"] == shown["updated_by"] == "writer"
    midnight = (before + timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    assert shown["next_fire_at"] == format_timestamp(midnight)
    assert client.get(f"/schedules/{shown['id']}", headers=auth).json == shown


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ({"cron": "0 0 * *"}, "cron", "5 fields"),
        ({"cron": "61 * * * *"}, "cron", "minute"),
        ({"cron": "0 0 31 2 *"}, "cron", "never fires"),
        ({"cron": "0 0 * * 8"}, "cron", "day_of_week"),
        ({"cron": "@yearly"}, "cron", "@hourly"),
        ({"timezone": "Mars/Olympus"}, "timezone", "IANA"),
        ({"timezone": "localtime"}, "timezone", "IANA"),
        ({"timezone": "Europe"}, "timezone", "IANA"),  # a folder of the zone database
        ({"timezone": "Etc"}, "timezone", "IANA"),
        ({"name": "n" * 91}, "name", "90"),
        ({"name": ""}, "name", "1"),
        ({"name": "tab\there"}, "name", "printable"),
        ({"version_prefix": "v" * 33}, "version_prefix", "32"),
        ({"model_name": "risk/2026"}, "model_name", "1 to 64"),
        ({"model_name": ".."}, "model_name", "not only dots"),
        ({"enabled": "maybe"}, "enabled", "boolean"),
        ({"unknown": 1}, "unknown", "Unknown"),
    ],
)
def test_an_invalid_schedule_is_400_with_the_reason(client, auth, body, field, reason):
    response = client.post(
        "/schedules", json={"name": "s", "cron": "@hourly", **body}, headers=auth
    )
    assert response.status_code == 400
    assert response.json["code"] == 400
    assert reason in " ".join(response.json["errors"][field])
    assert client.get("/schedules", headers=auth).json == []


def test_name_and_cron_are_required(client, auth):
    response = client.post("/schedules", json={}, headers=auth)
    assert response.status_code == 400
    assert set(response.json["errors"]) == {"name", "cron"}


def test_a_taken_name_is_409(client, auth):
    post(client, auth, name="nightly", cron="@daily")
    response = client.post("/schedules", json={"name": "nightly", "cron": "@hourly"}, headers=auth)
    assert response.status_code == 409
    assert is_error_body(response.json, 409)
    assert "nightly" in response.json["message"]


def test_a_read_token_may_read_but_not_write(client, auth, read_token):
    shown = post(client, auth, name="nightly", cron="@daily")
    reader = {"Authorization": f"Bearer {read_token}"}
    path = f"/schedules/{shown['id']}"
    writes = [
        client.post("/schedules", json={"name": "other", "cron": "@daily"}, headers=reader),
        client.put(path, json={"cron": "@hourly"}, headers=reader),
        client.post(f"{path}/pause", headers=reader),
        client.post(f"{path}/resume", headers=reader),
        client.delete(path, headers=reader),
    ]
    assert [response.status_code for response in writes] == [403] * 5
    assert all(is_error_body(response.json, 403) for response in writes)
    assert client.get(path, headers=reader).json == shown
    assert client.get("/schedules", headers=reader).json == [shown]
    assert client.get(f"{path}/trainings", headers=reader).json == []
    assert client.get("/schedules").status_code == 403  # no token at all


@pytest.mark.parametrize("path", ["/schedules/99", "/schedules/x", "/schedules/099"])
def test_an_unknown_schedule_is_404(client, auth, path):
    for response in (
        client.get(path, headers=auth),
        client.put(path, json={"cron": "@daily"}, headers=auth),
        client.delete(path, headers=auth),
        client.post(f"{path}/pause", headers=auth),
        client.post(f"{path}/resume", headers=auth),
        client.get(f"{path}/trainings", headers=auth),
    ):
        assert response.status_code == 404
        assert is_error_body(response.json, 404)


def test_put_changes_fields_and_a_new_cron_moves_the_next_fire(client, auth):
    shown = post(client, auth, name="nightly", cron="0 3 * * *", timezone="Europe/Madrid")
    path = f"/schedules/{shown['id']}"
    # A GET's body can be PUT back as it is: the service's fields are ignored.
    same = client.put(path, json=shown, headers=auth)
    assert same.status_code == 200
    assert same.json == shown
    changed = client.put(path, json={"cron": "30 * * * *", "meta": "new"}, headers=auth).json
    assert changed["cron"] == "30 * * * *"
    assert changed["meta"] == "new"
    assert changed["next_fire_at"] != shown["next_fire_at"]
    assert changed["next_fire_at"].endswith(":30:00.000Z")
    assert changed["updated_at"] >= shown["updated_at"]
    bad = client.put(path, json={"timezone": "Nowhere/Land"}, headers=auth)
    assert bad.status_code == 400
    assert "timezone" in bad.json["errors"]
    # The name names its fires' trainings: it never changes (another schedule's or a new one).
    taken = post(client, auth, name="other", cron="@daily")
    for name in ("nightly", "renamed"):
        clash = client.put(f"/schedules/{taken['id']}", json={"name": name}, headers=auth)
        assert clash.status_code == 409
        assert "name" in clash.json["message"]
    assert client.get(f"/schedules/{taken['id']}", headers=auth).json["name"] == "other"


def test_pause_and_resume(client, auth):
    # New Year's midnight: the next fire stays the same while the test runs.
    shown = post(client, auth, name="yearly", cron="0 0 1 1 *")
    path = f"/schedules/{shown['id']}"
    paused = client.post(f"{path}/pause", headers=auth).json
    assert paused["enabled"] is False
    assert paused["next_fire_at"] is None
    assert client.post(f"{path}/pause", headers=auth).json == paused  # again: as it is
    resumed = client.post(f"{path}/resume", headers=auth).json
    assert resumed["enabled"] is True
    assert resumed["next_fire_at"] == shown["next_fire_at"]
    disabled = post(client, auth, name="off", cron="0 0 1 1 *", enabled=False)
    assert disabled["next_fire_at"] is None
    by_put = client.put(f"/schedules/{disabled['id']}", json={"enabled": True}, headers=auth)
    assert by_put.json["next_fire_at"] == shown["next_fire_at"]


def test_delete_returns_the_schedule_and_keeps_its_trainings(app, client, auth):
    schedule_id = add(app, utc(2026, 1, 1), name="nightly", cron="@daily")
    fire(app, utc(2026, 1, 2, 0, 0, 30))
    training_id = str(fired(app, schedule_id)[0].id)
    shown = client.get(f"/schedules/{schedule_id}", headers=auth).json
    assert shown["last_training_id"] == training_id
    deleted = client.delete(f"/schedules/{schedule_id}", headers=auth)
    assert deleted.status_code == 200
    assert deleted.json == shown
    assert client.get(f"/schedules/{schedule_id}", headers=auth).status_code == 404
    kept = client.get("/trainings", query_string={"schedule_id": schedule_id}, headers=auth).json
    assert [(t["id"], t["schedule_id"]) for t in kept] == [(training_id, str(schedule_id))]


def test_lists_filter_sort_and_page_as_trainings_do(client, auth):
    post(client, auth, name="b-hourly", cron="@hourly")
    post(client, auth, name="a-daily", cron="@daily", timezone="Europe/Madrid")
    post(client, auth, name="c-off", cron="@daily", enabled=False)

    def names(**params):
        response = client.get("/schedules", query_string=params, headers=auth)
        assert response.status_code == 200, response.json
        return [schedule["name"] for schedule in response.json]

    assert names() == ["b-hourly", "a-daily", "c-off"]  # id order
    assert names(_sort="name:ASC") == ["a-daily", "b-hourly", "c-off"]
    assert names(_sort="name:DESC", _limit=1, _start=1) == ["b-hourly"]
    assert names(enabled="false") == ["c-off"]
    assert names(cron="@daily", enabled="true") == ["a-daily"]
    assert names(timezone_ne="UTC") == ["a-daily"]
    assert names(name_contains="DAILY") == ["a-daily"]
    assert names(next_fire_at_null="true") == ["c-off"]
    assert names(missed_fires_gt="0") == []
    for bad in ({"status": "queued"}, {"enabled": "sometimes"}, {"_sort": "uuid"}):
        response = client.get("/schedules", query_string=bad, headers=auth)
        assert response.status_code == 400
        assert set(response.json["errors"]) == {next(iter(bad))}


def test_a_schedules_trainings_and_the_schedule_id_filter(app, client, auth):
    first = add(app, utc(2026, 1, 1), name="first", cron="@hourly")
    second = add(app, utc(2026, 1, 1), name="second", cron="@hourly")
    for hour in (1, 2, 3):
        fire(app, utc(2026, 1, 1, hour))
    by_hand = create(client, auth, uuid="by-hand")
    assert by_hand["schedule_id"] is None

    def listed(path, **params):
        response = client.get(path, query_string=params, headers=auth)
        assert response.status_code == 200, response.json
        return [training["uuid"] for training in response.json]

    expected = [f"first@2026-01-01T0{hour}:00:00Z" for hour in (1, 2, 3)]
    assert listed(f"/schedules/{first}/trainings") == expected
    assert listed(f"/schedules/{first}/trainings", _sort="id:DESC", _limit=2) == expected[:0:-1]
    assert listed("/trainings", schedule_id=first) == expected
    assert len(listed("/trainings", schedule_id_in=[first, second])) == 6
    assert listed("/trainings", schedule_id_null="true") == ["by-hand"]
    bad = client.get(f"/schedules/{first}/trainings?colour=red", headers=auth)
    assert bad.status_code == 400


def test_xml_and_form_bodies_and_xml_answers(client, auth):
    xml = (
        "<item><name>from-xml</name><cron>30 2 * * *</cron>"
        "<timezone>Europe/Madrid</timezone><enabled>false</enabled></item>"
    )
    answer = client.post(
        "/schedules",
        data=xml,
        headers={**auth, "Content-Type": "application/xml", "Accept": "application/xml"},
    )
    assert answer.status_code == 200
    assert answer.mimetype == "application/xml"
    assert answer.text.startswith("<?xml")
    assert "<schedule><id>1</id><name>from-xml</name>" in answer.text
    assert "<enabled>false</enabled>" in answer.text
    assert "<next_fire_at />" in answer.text
    body = {"name": "from-form", "cron": "@daily", "version_prefix": ""}
    form = client.post("/schedules", data=body, headers=auth)
    assert form.status_code == 200
    assert form.json["version_prefix"] is None
    listed = client.get("/schedules", headers={**auth, "Accept": "application/xml"})
    assert listed.text.count("<item><id>") == 2


# Firing: DST in Europe/Madrid --------------------------------------------------------------

# 2026-03-29: at 02:00 CET the clocks go forward to 03:00 CEST (01:00 UTC).
# 2026-10-25: at 03:00 CEST the clocks go back to 02:00 CET (01:00 UTC); 02:00-02:59 repeat.
SPRING = (utc(2026, 3, 28, 20), utc(2026, 3, 30, 4))
AUTUMN = (utc(2026, 10, 24, 20), utc(2026, 10, 26, 4))


@pytest.mark.parametrize(
    ("cron", "window", "expected"),
    [
        # 02:00 does not exist on the 29th: it fires when the clocks reach 03:00 CEST.
        ("0 2 * * *", SPRING, ["2026-03-29T01:00:00Z", "2026-03-30T00:00:00Z"]),
        ("30 2 * * *", SPRING, ["2026-03-29T01:00:00Z", "2026-03-30T00:30:00Z"]),
        # 02:00 happens twice on the 25th: it fires the first time (CEST) only.
        ("0 2 * * *", AUTUMN, ["2026-10-25T00:00:00Z", "2026-10-26T01:00:00Z"]),
        ("30 2 * * *", AUTUMN, ["2026-10-25T00:30:00Z", "2026-10-26T01:30:00Z"]),
    ],
)
def test_a_daily_schedule_fires_once_a_day_across_dst_changes(app, cron, window, expected):
    start, end = window
    schedule_id = add(app, start, name="daily", cron=cron, timezone="Europe/Madrid")
    walk(app, start, end, timedelta(minutes=10))
    assert uuids(app, schedule_id) == [f"daily@{moment}" for moment in expected]
    assert stored(app, schedule_id)["missed_fires"] == 0


def test_a_schedules_trainings_belong_to_its_model_and_count_its_versions(app, client, auth):
    risk = add(app, utc(2026, 5, 1), name="risk", cron="0 3 * * *", model_name="risk")
    plain = add(app, utc(2026, 5, 1), name="plain", cron="0 3 * * *")
    create_response = client.post("/trainings", json={"model_name": "risk"}, headers=auth)
    assert create_response.status_code == 200

    walk(app, utc(2026, 5, 1), utc(2026, 5, 2, 4), timedelta(hours=1))

    assert [t.model_name for t in fired(app, risk)] == ["risk", "risk"]
    assert [t.model_name for t in fired(app, plain)] == ["default", "default"]
    assert stored(app, plain)["model_name"] == "default"
    listed = client.get("/trainings?model_name=risk&_sort=id:ASC", headers=auth).json
    assert [t["schedule_id"] for t in listed] == [None, str(risk), str(risk)]
    # Its model changes with a PUT; fires made before keep theirs.
    changed = client.put(
        f"/schedules/{risk}",
        json={"name": "risk", "cron": "0 3 * * *", "model_name": "risk-eu"},
        headers=auth,
    )
    assert changed.status_code == 200, changed.json
    walk(app, utc(2026, 5, 3, 2), utc(2026, 5, 3, 4), timedelta(hours=1))
    assert [t.model_name for t in fired(app, risk)] == ["risk", "risk", "risk-eu"]


def test_an_hourly_schedule_loses_no_hour_when_the_clocks_go_forward(app):
    schedule_id = add(
        app,
        utc(2026, 3, 28, 22, 30),
        name="h",
        cron="0 * * * *",
        timezone="Europe/Madrid",
        version_prefix="v",
    )
    walk(app, utc(2026, 3, 28, 22, 30), utc(2026, 3, 29, 3, 30), timedelta(minutes=5))
    made = fired(app, schedule_id)
    # Every hour that passed fired once: 00:00 and 01:00 CET, then 03:00, 04:00, 05:00 CEST.
    assert [t.uuid for t in made] == [
        "h@2026-03-28T23:00:00Z",
        "h@2026-03-29T00:00:00Z",
        "h@2026-03-29T01:00:00Z",
        "h@2026-03-29T02:00:00Z",
        "h@2026-03-29T03:00:00Z",
    ]
    # Versioned on the schedule's own clock.
    assert [t.version for t in made] == [
        "v202603290000",
        "v202603290100",
        "v202603290300",
        "v202603290400",
        "v202603290500",
    ]


def test_an_hourly_schedule_fires_the_repeated_hour_once_when_the_clocks_go_back(app):
    schedule_id = add(
        app,
        utc(2026, 10, 24, 21, 30),
        name="h",
        cron="0 * * * *",
        timezone="Europe/Madrid",
        version_prefix="v",
    )
    walk(app, utc(2026, 10, 24, 21, 30), utc(2026, 10, 25, 3, 30), timedelta(minutes=5))
    made = fired(app, schedule_id)
    # 02:00 CEST fired; 02:00 CET, the same wall time an hour later, did not.
    assert [t.uuid for t in made] == [
        "h@2026-10-24T22:00:00Z",
        "h@2026-10-24T23:00:00Z",
        "h@2026-10-25T00:00:00Z",
        "h@2026-10-25T02:00:00Z",
        "h@2026-10-25T03:00:00Z",
    ]
    assert [t.version for t in made] == [
        "v202610250000",
        "v202610250100",
        "v202610250200",
        "v202610250300",
        "v202610250400",
    ]
    assert stored(app, schedule_id)["missed_fires"] == 0


def test_apscheduler_still_needs_the_wall_clock_compensation():
    """What CronTrigger itself answers in Europe/Madrid (pinned APScheduler 3.11): the reason
    cron.Cron asks it in UTC. If this fails, the library changed: look at cron.py again."""
    from apscheduler.triggers.cron import CronTrigger

    trigger = CronTrigger.from_crontab("0 2 * * *", timezone="Europe/Madrid")
    first = trigger.get_next_fire_time(None, utc(2026, 10, 24, 23))
    second = trigger.get_next_fire_time(first, first + timedelta(microseconds=1))
    in_utc = [moment.astimezone(UTC) for moment in (first, second)]
    assert in_utc == [utc(2026, 10, 25, 0), utc(2026, 10, 25, 1)]  # 02:00 twice
    gap = CronTrigger.from_crontab("30 2 * * *", timezone="Europe/Madrid")
    skipped = gap.get_next_fire_time(None, utc(2026, 3, 29))
    assert skipped.astimezone(UTC) == utc(2026, 3, 29, 1, 30)  # 03:30 CEST, not 03:00
    # And 0 is Monday to it, Sunday to crontab: days are handed over by name.
    weekly = CronTrigger.from_crontab("0 0 * * 0", timezone="UTC")
    assert weekly.get_next_fire_time(None, utc(2026, 1, 1)).weekday() == 0


@pytest.mark.parametrize(
    ("cron", "expected"),
    [
        ("@weekly", utc(2026, 1, 4)),  # a Sunday
        ("0 0 * * 7", utc(2026, 1, 4)),
        ("0 0 * * 1-5", utc(2026, 1, 2)),  # Friday the 2nd
        ("0 0 * * sat", utc(2026, 1, 3)),
        ("@monthly", utc(2026, 2, 1)),
        ("@hourly", utc(2026, 1, 1, 1)),
    ],
)
def test_crontab_weekdays_and_aliases(cron, expected):
    assert Cron(cron, "UTC").next_after(utc(2026, 1, 1)) == expected


# Firing: downtime, coalescing and MISFIRE_GRACE ---------------------------------------------


def test_fires_missed_within_the_grace_make_one_training_for_the_latest(app):
    schedule_id = add(app, utc(2026, 1, 1, 12), name="daily", cron="@daily")
    # Down from the 1st to the 5th, 06:00: four fires passed; the last is six hours old.
    assert fire(app, utc(2026, 1, 1, 23, 59)) == []
    [done] = fire(app, utc(2026, 1, 5, 6))
    assert done.missed == 3
    assert done.moved_on
    assert uuids(app, schedule_id) == ["daily@2026-01-05T00:00:00Z"]
    shown = stored(app, schedule_id)
    assert shown["missed_fires"] == 3
    assert shown["last_fired_at"] == "2026-01-05T00:00:00.000Z"
    assert shown["last_training_id"] == str(done.training_id)
    assert shown["next_fire_at"] == "2026-01-06T00:00:00.000Z"
    # Back to normal: the next fire makes its training, nothing more is missed.
    fire(app, utc(2026, 1, 6, 0, 0, 1))
    assert len(uuids(app, schedule_id)) == 2
    assert stored(app, schedule_id)["missed_fires"] == 3


def test_fires_missed_beyond_the_grace_are_counted_and_make_no_training(app):
    schedule_id = add(app, utc(2026, 1, 1, 12), name="daily", cron="@daily")
    [done] = fire(app, utc(2026, 1, 5, 6), grace=3600)
    assert done.training_id is None
    assert uuids(app, schedule_id) == []
    shown = stored(app, schedule_id)
    assert shown["missed_fires"] == 4
    assert shown["last_fired_at"] is None
    assert shown["next_fire_at"] == "2026-01-06T00:00:00.000Z"


def test_the_grace_is_inclusive_to_the_second(app):
    schedule_id = add(app, utc(2026, 1, 1, 12), name="daily", cron="@daily")
    fire(app, utc(2026, 1, 3, 0), grace=86400)  # the 2nd's fire is exactly a day old
    assert uuids(app, schedule_id) == ["daily@2026-01-03T00:00:00Z"]
    other = add(app, utc(2026, 1, 1, 12), name="other", cron="@daily")
    fire(app, utc(2026, 1, 2, 0, 0, 1), grace=0.5)
    assert uuids(app, other) == []


def test_misfire_grace_is_read_from_the_settings_by_the_claim_loop(app):
    app.config["MISFIRE_GRACE"] = 3600
    fake = FakeRunner(app)
    clock = Clock(utc(2026, 1, 5, 6))
    schedule_id = add(app, utc(2026, 1, 1, 12), name="daily", cron="@daily")
    outcomes = claim_loop.run_pending(app, workers=1, run=fake, clock=clock)
    assert outcomes == {}
    assert stored(app, schedule_id)["missed_fires"] == 4


def test_a_fire_made_before_a_crash_is_found_and_not_counted_missed(app):
    schedule_id = add(app, utc(2026, 1, 1, 0, 30), name="h", cron="@hourly")
    # A node made the 01:00 training, then died before moving the schedule on.
    with db.database(app).session() as session:
        create_training(
            session,
            {"uuid": "h@2026-01-01T01:00:00Z", "meta": None},
            actor="schedule:1",
            schedule_id=schedule_id,
        )
    [done] = fire(app, utc(2026, 1, 1, 3, 30))
    assert uuids(app, schedule_id) == ["h@2026-01-01T01:00:00Z", "h@2026-01-01T03:00:00Z"]
    assert done.missed == 1  # 02:00 only
    assert stored(app, schedule_id)["missed_fires"] == 1


def test_a_node_that_loses_the_race_finds_the_same_training(app):
    schedule_id = add(app, utc(2026, 1, 1, 0, 30), name="h", cron="@hourly", meta="m")
    with db.database(app).session() as session:
        late = session.get(Schedule, schedule_id)  # as a second node read it
        session.expunge(late)
    [first] = fire(app, utc(2026, 1, 1, 1, 0, 5))
    with db.database(app).session() as session:
        second = schedules._fire(session, late, utc(2026, 1, 1, 1, 0, 6), 86400)
    assert second.training_id == first.training_id
    assert not second.moved_on
    assert first.moved_on
    assert uuids(app, schedule_id) == ["h@2026-01-01T01:00:00Z"]
    # Edited between the two nodes' attempts: the fire is still made, once.
    with db.database(app).session() as session:
        late.meta = "edited"
        again = schedules._fire(session, late, utc(2026, 1, 1, 1, 0, 7), 86400)
    assert again.training_id == first.training_id
    assert uuids(app, schedule_id) == ["h@2026-01-01T01:00:00Z"]


def test_a_paused_schedule_does_not_fire_and_resumes_without_catching_up(app):
    schedule_id = add(app, utc(2026, 1, 1, 0, 30), name="h", cron="@hourly")
    with db.database(app).session() as session:
        schedules.pause_schedule(session, schedule_id, actor="t", now=utc(2026, 1, 1, 0, 40))
    walk(app, utc(2026, 1, 1, 1), utc(2026, 1, 1, 4), timedelta(minutes=30))
    assert uuids(app, schedule_id) == []
    with db.database(app).session() as session:
        schedules.resume_schedule(session, schedule_id, actor="t", now=utc(2026, 1, 1, 4, 10))
    assert stored(app, schedule_id)["next_fire_at"] == "2026-01-01T05:00:00.000Z"
    fire(app, utc(2026, 1, 1, 5))
    assert uuids(app, schedule_id) == ["h@2026-01-01T05:00:00Z"]
    assert stored(app, schedule_id)["missed_fires"] == 0


def test_a_schedule_that_cannot_fire_does_not_stop_the_others(app):
    broken = add(app, utc(2026, 1, 1), name="broken", cron="@hourly")
    working = add(app, utc(2026, 1, 1), name="working", cron="@hourly")
    with db.database(app).session() as session:
        session.get(Schedule, broken).timezone = "Gone/Away"  # tzdata lost it, say
        session.commit()
    [done] = fire(app, utc(2026, 1, 1, 1))
    assert done.schedule_id == working
    assert uuids(app, working) == ["working@2026-01-01T01:00:00Z"]


def test_a_fires_training_carries_the_meta_and_runs_through_the_claim_loop(app, client, auth):
    fake = FakeRunner(app)
    clock = Clock(utc(2026, 1, 1, 0, 59, 59))
    schedule_id = add(app, clock.now, name="h", cron="@hourly", meta={"seconds": 0})
    loop = make_loop(app, fake, workers=1, clock=clock)
    assert loop.turn() == 0
    clock.advance(seconds=1)
    assert loop.turn() == 1
    wait_idle(loop)
    loop.stop()
    [training] = fired(app, schedule_id)
    assert fake.ids() == [training.id]
    shown = client.get(f"/trainings/{training.id}", headers=auth).json
    assert shown["uuid"] == "h@2026-01-01T01:00:00Z"
    assert shown["meta"] == '{"seconds":0}'
    assert shown["schedule_id"] == str(schedule_id)
    assert shown["status"] == "succeeded"
    assert shown["created_by"] == f"schedule:{schedule_id}"


def test_run_pending_creates_and_runs_a_due_schedules_training(app):
    fake = FakeRunner(app)
    schedule_id = add(app, utc(2026, 1, 1), name="h", cron="@hourly")
    outcomes = claim_loop.run_pending(app, workers=1, run=fake, clock=Clock(utc(2026, 1, 1, 1)))
    [training] = fired(app, schedule_id)
    assert list(outcomes) == [training.id] == fake.ids()


def test_the_dispatcher_looks_at_a_schedules_next_fire(app, monkeypatch):
    # The poll is far away: only the timed look at the fire can make the training in time.
    app.config.update(POLL_INTERVAL=3600)
    fake = FakeRunner(app)
    schedule_id = add(app, utcnow(), name="soon", cron="@hourly")
    due = utcnow() + timedelta(seconds=1)
    with db.database(app).session() as session:
        session.get(Schedule, schedule_id).next_fire_at = due
        session.commit()
    started = dispatcher.Dispatcher(app, run=fake)
    monkeypatch.setattr(dispatcher, "_started", started)
    started.start()
    try:
        deadline = time.monotonic() + 5
        while not fake.ids() and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        started.shutdown(0)
    [training] = fired(app, schedule_id)
    assert fake.ids() == [training.id]
    assert training.created_at >= due


# The CLI -----------------------------------------------------------------------------------


def cli(runner, *args):
    return runner.invoke(args=["trainings", "schedules", *args])


def test_cli_add_list_pause_resume_remove(runner, client, auth):
    added = cli(
        runner,
        "add",
        "nightly",
        "30 2 * * *",
        "--timezone",
        "Europe/Madrid",
        "--meta",
        '{"seconds": 0}',
        "--version-prefix",
        "n-",
        "--model-name",
        "risk",
    )
    assert added.exit_code == 0, added.output
    assert "nightly" in added.output
    assert "next fire" in added.output
    assert cli(runner, "add", "off", "@daily", "--disabled").exit_code == 0
    table = cli(runner, "list").output.splitlines()
    assert table[0].split() == [
        "id",
        "name",
        "cron",
        "timezone",
        "enabled",
        "next_fire_at",
        "last_fired_at",
        "missed_fires",
    ]
    assert [line.split()[1] for line in table[1:]] == ["nightly", "off"]
    listed = json.loads(cli(runner, "list", "--json").output)
    assert listed == client.get("/schedules", headers=auth).json
    nightly = listed[0]
    assert (nightly["meta"], nightly["version_prefix"]) == ('{"seconds": 0}', "n-")
    assert (nightly["model_name"], listed[1]["model_name"]) == ("risk", "default")
    assert nightly["created_by"] == "cli"

    assert cli(runner, "pause", "nightly").exit_code == 0
    assert client.get("/schedules/1", headers=auth).json["enabled"] is False
    assert cli(runner, "resume", "1").exit_code == 0  # by id
    assert client.get("/schedules/1", headers=auth).json["next_fire_at"] is not None
    assert cli(runner, "remove", "off").exit_code == 0
    assert [s["name"] for s in client.get("/schedules", headers=auth).json] == ["nightly"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("add", "x", "0 0 * *"), "cron: a cron expression has 5 fields"),
        (("add", "x", "@daily", "--timezone", "Mars/Base"), "timezone: 'Mars/Base' is not"),
        (("pause", "missing"), "no schedule is named 'missing'"),
        (("resume", "42"), "no schedule is named '42'"),
        (("remove", "missing"), "no schedule is named 'missing'"),
    ],
)
def test_cli_errors_say_why(runner, args, message):
    result = cli(runner, *args)
    assert result.exit_code == 1
    assert message in result.output


def test_cli_add_refuses_a_taken_name(runner):
    assert cli(runner, "add", "x", "@daily").exit_code == 0
    result = cli(runner, "add", "x", "@hourly")
    assert result.exit_code == 1
    assert "already exists" in result.output


def test_a_fire_whose_uuid_a_client_took_is_missed_not_adopted(app):
    schedule_id = add(app, utc(2026, 1, 1, 12), name="daily", cron="@daily")
    with db.database(app).session() as session:
        squatter, _ = create_training(
            session, {"uuid": "daily@2026-01-02T00:00:00Z"}, actor="someone"
        )
    [done] = fire(app, utc(2026, 1, 2, 0, 0, 1))
    assert done.training_id is None
    assert uuids(app, schedule_id) == []
    shown = stored(app, schedule_id)
    assert shown["missed_fires"] == 1
    assert shown["last_training_id"] is None
    assert shown["next_fire_at"] == "2026-01-03T00:00:00.000Z"
    # The client's training is left as it was, not made the schedule's.
    with db.database(app).session() as session:
        assert get_training(session, squatter.id).schedule_id is None
    # The next fire is made as usual.
    fire(app, utc(2026, 1, 3, 0, 0, 1))
    assert uuids(app, schedule_id) == ["daily@2026-01-03T00:00:00Z"]
