"""This process as a node of the service: its name, its role, and what it checks at start.

A node is one process on one machine: an API node serves HTTP (``serve`` with
SCHEDULER_ENABLED off), a worker node runs trainings (``worker``), and the default does both.
Every node shares the database and the models folder; each checks at start that the schema
is current and that it can write to ``MODELS_DIR``, and refuses to start otherwise.
"""

from __future__ import annotations

import os
import tempfile
from enum import StrEnum

from flask import Flask

from . import db, migrations

EXTENSION = "maia_trainings.node_role"


class Role(StrEnum):
    """What a node does: serve the API, run trainings, or both."""

    API = "api"
    WORKER = "worker"
    BOTH = "both"


class NodeNotReady(RuntimeError):
    """A node cannot start: the reason says what to fix."""


def name(app: Flask) -> str:
    """NODE_NAME (the host name unless set): in lease owners, logs and /healthz."""
    return str(app.config["NODE_NAME"])


def role(app: Flask) -> Role:
    """The role this process started in (an app not started as a node serves and runs)."""
    found: Role = app.extensions.get(EXTENSION, Role.BOTH)
    return found


def models_dir_writable(folder: str) -> bool:
    """Whether a file can be made (and removed) in ``folder``, made if missing: the test a
    shared mount (NFS, SMB, CephFS) fails when it is read-only, full or gone."""
    try:
        os.makedirs(folder, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".write-check-"):
            pass
    except OSError:
        return False
    return True


def start(app: Flask, as_role: Role) -> None:
    """Check that this node may start in ``as_role`` and record the role; NodeNotReady (or
    SchemaNotCurrent, naming the command to run) if not."""
    migrations.ensure_current(db.database(app))
    folder = app.config["MODELS_DIR"]
    if not models_dir_writable(folder):
        raise NodeNotReady(
            f"MODELS_DIR {folder} cannot be written by this node: every node needs the same "
            "writable folder (a shared mount) for the models it publishes and serves"
        )
    app.extensions[EXTENSION] = as_role
