"""The chaos soak, short: ``bench/soak.py`` for 20 s, its invariants all kept.

Trainings are created, listed, cancelled and deleted by several clients while the server is
SIGKILLed and restarted every few seconds; then nothing acknowledged may be lost or undone, no
training may have run twice at once and the database must be intact. ``make soak`` runs the
long version.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys

from conftest import ROOT

SUMMARY = re.compile(
    r"^soak: (?P<seconds>[0-9.]+)s, requests sent (?P<sent>\d+), "
    r"acknowledged (?P<acknowledged>\d+), kills survived (?P<kills>\d+), "
    r"trainings run (?P<run>\d+), violations (?P<violations>\d+)$",
    re.MULTILINE,
)


def test_a_short_soak_under_kills_keeps_every_invariant(tmp_path):
    result = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "soak.py"), "--instance", str(tmp_path / "soak")],
        env={**os.environ, "SOAK_SECONDS": "20"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    report = f"stdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    summaries = list(SUMMARY.finditer(result.stdout))
    assert len(summaries) == 1, report
    summary = summaries[0]
    numbers = {name: float(value) for name, value in summary.groupdict().items()}
    assert numbers["seconds"] == 20, report
    assert numbers["violations"] == 0, report
    assert result.returncode == 0, report
    assert numbers["kills"] >= 3, report
    assert numbers["run"] >= 10, report
    assert 0 < numbers["acknowledged"] <= numbers["sent"], report
