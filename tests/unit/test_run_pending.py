"""The run-pending command when there is nothing to run yet: it exits at once, leaves scheduled
trainings alone and waits no longer than its horizon.

Running trainings for real (child processes, outcomes, logs) is in
tests/integration/test_runs.py."""

from __future__ import annotations

from datetime import timedelta

from helpers import create, fetch, run_pending, summary

from maia_trainings.fields import format_timestamp
from maia_trainings.models import utcnow


def test_run_pending_with_nothing_to_do_exits_0(runner):
    result, elapsed = run_pending(runner)
    assert result.exit_code == 0
    assert summary(result) == (0, 0, 0, 0, 0)
    assert elapsed < 5


# Scheduled trainings -----------------------------------------------------------------------


def test_without_include_scheduled_a_training_due_soon_is_left_alone(runner, client, auth):
    created = create(client, auth, scheduled_at=format_timestamp(utcnow() + timedelta(seconds=1)))

    result, elapsed = run_pending(runner)

    assert result.exit_code == 0
    assert summary(result) == (0, 0, 0, 0, 0)
    assert elapsed < 1
    assert fetch(client, auth, created["id"])["status"] == "scheduled"


def test_include_scheduled_does_not_wait_past_its_horizon(runner, client, auth):
    created = create(client, auth, scheduled_at=format_timestamp(utcnow() + timedelta(hours=1)))

    result, elapsed = run_pending(runner, "--include-scheduled", "3")

    assert result.exit_code == 0
    assert elapsed < 2
    assert fetch(client, auth, created["id"])["status"] == "scheduled"
