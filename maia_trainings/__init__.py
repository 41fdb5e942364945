"""maia-trainings: a Flask service that queues, schedules and runs scoring-model trainings.

Settings (defaults in ``maia_trainings.config``; override in ``<instance>/config.py`` or as
environment variables ``MAIA_<KEY>``; ``MAIA_INSTANCE_PATH`` chooses the instance folder):

- ``DATABASE_URL``: SQLAlchemy URL; default ``sqlite:///<instance>/trainings.sqlite3``.
- ``SQLITE_BUSY_TIMEOUT``: seconds a SQLite connection waits for a competing writer.
- ``MAX_CONTENT_LENGTH``: largest request body in bytes (1 MiB); larger ones get 413.
- ``MODELS_DIR``: folder every ``binaryPath`` is relative to; default ``<instance>/models``.
- ``DEFAULT_PAGE_SIZE``: page size of ``GET /trainings`` without ``_limit`` (100).
- ``TOKEN_TOUCH_INTERVAL``: seconds between writes of a token's ``last_used_at`` (60).
- The executor's and trainers' settings (``TRAINER``, ``WORKERS``, ``DATASETS_DIR`` ...) are
  listed, each with its meaning, in ``maia_trainings.config`` and the README.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from . import config

if TYPE_CHECKING:
    from flask import Flask


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: package defaults, then instance/config.py, MAIA_* variables, test_config."""
    # Imported here, not at the top: every run's child comes from a fork server that preloads
    # this package, and needs none of the web parts (measured: see the commit).
    from flask import Flask

    from . import auth, cli, db, error_handlers, headers, logs, metrics, scorer
    from .api import bp
    from .dashboard import bp as dashboard_bp

    instance_path = os.environ.get("MAIA_INSTANCE_PATH")
    app = Flask(
        __name__,
        instance_relative_config=True,
        instance_path=os.path.abspath(instance_path) if instance_path else None,
    )
    app.config.from_object(config)
    app.config.from_pyfile("config.py", silent=True)
    app.config.from_prefixed_env("MAIA")
    if test_config is not None:
        app.config.from_mapping(test_config)
    os.makedirs(app.instance_path, exist_ok=True)
    for folder, default in (("MODELS_DIR", "models"), ("DATASETS_DIR", "datasets")):
        app.config[folder] = app.config[folder] or os.path.join(app.instance_path, default)
    app.config["NODE_NAME"] = app.config["NODE_NAME"] or socket.gethostname()

    db.init_app(app)
    error_handlers.init_app(app)
    headers.init_app(app)
    auth.init_app(app)
    cli.init_app(app)
    scorer.init_app(app)
    logs.init_app(app)
    metrics.init_app(app)
    app.register_blueprint(bp)
    app.register_blueprint(dashboard_bp)
    return app
