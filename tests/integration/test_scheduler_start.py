"""The dispatcher starts once per process, and only where the app serves."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from conftest import server_env


def run_python(code: str, env: dict[str, str]) -> str:
    result = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return result.stdout.strip()


def test_start_twice_and_with_a_second_app_gives_one_dispatcher(tmp_path):
    output = run_python(
        """
        import threading
        from maia_trainings import create_app, dispatcher
        first = dispatcher.start(create_app())
        again = dispatcher.start(create_app())
        names = [t.name for t in threading.enumerate() if t.name.startswith("APScheduler")]
        print(first is again, len(names))
        dispatcher.shutdown(0)
        """,
        server_env(tmp_path / "instance"),
    )
    assert output == "True 1"


def test_create_app_alone_starts_no_threads(tmp_path):
    output = run_python(
        """
        import threading
        from maia_trainings import create_app
        create_app()
        print(threading.active_count())
        """,
        server_env(tmp_path / "instance"),
    )
    assert output == "1"


def test_no_dispatcher_when_disabled_or_in_the_reloaders_watching_parent(tmp_path):
    output = run_python(
        """
        from maia_trainings import create_app, dispatcher
        disabled = dispatcher.start(create_app({"SCHEDULER_ENABLED": False}))
        watcher = dispatcher.start(create_app({"DEBUG": True}))
        print(disabled, watcher)
        """,
        server_env(tmp_path / "instance"),
    )
    assert output == "None None"


def test_the_reloaders_serving_child_runs_the_dispatcher(tmp_path):
    env = server_env(tmp_path / "instance")
    env["WERKZEUG_RUN_MAIN"] = "true"
    output = run_python(
        """
        from maia_trainings import create_app, dispatcher
        print(dispatcher.start(create_app({"DEBUG": True})) is not None)
        dispatcher.shutdown(0)
        """,
        env,
    )
    assert output == "True"
