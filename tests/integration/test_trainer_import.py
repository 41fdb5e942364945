"""The web process pays for the trainer's module (scikit-learn) only when it must, and once."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

from conftest import server_env

SCRIPT = """
    import json, sys
    from maia_trainings import create_app, db, migrations, tokens
    from maia_trainings.trainers import load_trainer

    app = create_app({"TRAINER": "maia_trainings.trainers.scoring:train"})
    migrations.upgrade(db.database(app))
    with db.database(app).session() as session:
        secret = tokens.create_token(session, "t", "write").secret
    client = app.test_client()
    auth = {"Authorization": f"Bearer {secret}"}
    seen = {}
    for _ in range(3):
        plain = client.post("/trainings", json={"meta": "free text"}, headers=auth)
        assert plain.status_code == 200
    seen["after plain requests"] = "sklearn" in sys.modules
    load_trainer.cache_clear()
    for seed in range(20):
        body = {"meta": {"model": "logistic_regression", "seed": seed}}
        assert client.post("/trainings", json=body, headers=auth).status_code == 200
    bad = client.post("/trainings", json={"meta": {"model": "svm"}}, headers=auth)
    seen["refused"] = bad.status_code
    seen["after parameters"] = "sklearn" in sys.modules
    seen["loads"] = load_trainer.cache_info().misses
    print(json.dumps(seen))
"""


def test_the_trainer_module_is_imported_on_the_first_parameters_and_only_once(tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(SCRIPT)],
        env=server_env(tmp_path / "instance"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen == {
        "after plain requests": False,  # nothing to validate: scikit-learn is not imported
        "refused": 400,  # the trainer's own check still runs
        "after parameters": True,
        "loads": 1,  # 21 validations, one import
    }
