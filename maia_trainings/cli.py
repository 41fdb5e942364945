"""The ``flask --app maia_trainings trainings`` commands for operators."""

from __future__ import annotations

import json
import signal
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, cast

import click
from flask import Flask, current_app
from flask.cli import AppGroup
from marshmallow import ValidationError
from prometheus_client import start_http_server
from sqlalchemy import select
from werkzeug.datastructures import MultiDict

from . import (
    auth,
    claim_loop,
    db,
    dispatcher,
    listing,
    logs,
    metrics,
    migrations,
    node,
    schedules,
    sender,
    server,
    tokens,
)
from .errors import SchemaNotCurrent, ServiceError
from .fields import format_timestamp, represent
from .listing import Filter
from .models import Scope, Status, Training
from .runner import Outcome, Shutdown
from .schemas import check_trainer_params
from .trainings import get_training

trainings = AppGroup("trainings", help="Operate the trainings service.")
token = AppGroup("token", help="Create, list and revoke API tokens.")
schema = AppGroup("db", help="The database schema: upgrade, downgrade, current, history.")
trainings.add_command(token)
trainings.add_command(schema)

LIST_COLUMNS = ("id", "uuid", "status", "version", "accuracy", "attempts", "created_at")


def _fail(exc: ServiceError) -> None:
    raise click.ClickException(exc.message or str(exc))


def _app() -> Flask:
    # The app behind the proxy, as Flask documents it; current_app is typed as the app itself.
    app: Flask = cast(Any, current_app)._get_current_object()
    return app


def _current_schema() -> None:
    """Refuse to go on with a database behind this release's schema (a new one is made)."""
    try:
        migrations.ensure_current(db.database())
    except SchemaNotCurrent as exc:
        raise click.ClickException(exc.message or str(exc)) from None


def _start_node(app: Flask, role: node.Role) -> None:
    """Refuse to start a node whose database or models folder is not ready, saying why."""
    logs.configure(app)  # before the checks, so that their refusal is logged as configured
    try:
        node.start(app, role)
    except SchemaNotCurrent as exc:
        raise click.ClickException(exc.message or str(exc)) from None
    except node.NodeNotReady as exc:
        raise click.ClickException(str(exc)) from None


@trainings.command("init-db")
def init_db_command() -> None:
    """Create the database, or upgrade it to this release's schema (safe to run again)."""
    migrations.upgrade(db.database())
    click.echo(f"Initialised the database at {db.database().shown_url} ({migrations.head()}).")


@schema.command("upgrade")
@click.argument("revision", default="head")
def db_upgrade_command(revision: str) -> None:
    """Upgrade the schema to REVISION (default: the newest); stop the workers first."""
    before = migrations.upgrade(db.database(), revision)
    after = migrations.current(db.database())
    click.echo(f"Upgraded {db.database().shown_url} from {before or 'nothing'} to {after}.")


@schema.command("downgrade")
@click.argument("revision")
def db_downgrade_command(revision: str) -> None:
    """Take the schema back to REVISION ("base" removes every table, and the data with them)."""
    migrations.downgrade(db.database(), revision)
    after = migrations.current(db.database())
    click.echo(f"Downgraded {db.database().shown_url} to {after or 'base'}.")


@schema.command("current")
def db_current_command() -> None:
    """Print the database's revision and this release's."""
    at = migrations.current(db.database())
    click.echo(f"{at or 'none'} (this release: {migrations.head()})")


@schema.command("history")
def db_history_command() -> None:
    """List the revisions this release ships."""
    click.echo(migrations.history().rstrip())


@trainings.command("backup")
@click.argument("target", type=click.Path(dir_okay=False, path_type=Path))
def backup_command(target: Path) -> None:
    """Copy the (live) SQLite database to TARGET, consistently, while the service runs."""
    try:
        size = db.backup(_app(), target)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"Backed up {db.database().shown_url} to {target} ({size} bytes).")


@token.command("create")
@click.argument("name")
@click.option(
    "--scope",
    type=click.Choice([str(s) for s in Scope]),
    default=str(Scope.WRITE),
    show_default=True,
)
@click.option(
    "--if-missing", is_flag=True, help="Do nothing (and say so) if an active token NAME exists."
)
def token_create(name: str, scope: str, if_missing: bool) -> None:
    """Create a token NAME; the token is printed once, as the last line."""
    _current_schema()
    with db.database().session() as session:
        if if_missing and tokens.find_active_token(session, name) is not None:
            click.echo(
                f"A token named {name!r} already exists; its secret was shown when it was made.\n"
                "Make another with: flask --app maia_trainings trainings token create NAME"
            )
            return
        try:
            new = tokens.create_token(session, name, scope)
        except ServiceError as exc:
            _fail(exc)
    click.echo(f"Created the {scope} token {name!r}. It is shown only now; keep it safe:")
    click.echo(new.secret)


@token.command("list")
def token_list() -> None:
    """List tokens (names, scopes and use; never the secrets)."""
    with db.database().session() as session:
        rows = [
            (
                t.name,
                t.scope,
                format_timestamp(t.created_at),
                format_timestamp(t.last_used_at) if t.last_used_at else "never",
                "revoked " + format_timestamp(t.revoked_at) if t.revoked_at else "active",
            )
            for t in tokens.list_tokens(session)
        ]
    _table(("name", "scope", "created", "last used", "state"), rows)


@token.command("revoke")
@click.argument("name")
def token_revoke(name: str) -> None:
    """Revoke the active token NAME; requests using it get 403 from now on."""
    with db.database().session() as session:
        try:
            tokens.revoke_token(session, name)
        except ServiceError as exc:
            _fail(exc)
    auth.forget_tokens(_app())
    click.echo(f"Revoked the token {name!r}.")


@trainings.command("list")
@click.option("--status", multiple=True, help="Only trainings in this status (repeatable).")
@click.option("--limit", type=int, default=50, show_default=True, help="-1 for all.")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def list_command(status: tuple[str, ...], limit: int, as_json: bool) -> None:
    """List trainings, newest first."""
    args = MultiDict(
        [("status", s) for s in status] + [("_sort", "id:DESC"), ("_limit", str(limit))]
    )
    try:
        query = listing.parse_list_query(args, default_limit=limit)
    except ValidationError as exc:
        raise click.BadParameter(json.dumps(exc.messages)) from None
    with db.database().session() as session:
        rows = [represent(training) for training in listing.list_trainings(session, query)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table(LIST_COLUMNS, [tuple(row[c] for c in LIST_COLUMNS) for row in rows])


@trainings.command("show")
@click.argument("training_id", type=int)
def show_command(training_id: int) -> None:
    """Print one training as the API shows it."""
    with db.database().session() as session:
        try:
            training = get_training(session, training_id)
        except ServiceError:
            raise click.ClickException(f"no training with id {training_id}") from None
        click.echo(json.dumps(represent(training), indent=2))


@trainings.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8080, show_default=True)
@click.option("--threads", type=int, default=8, show_default=True)
def serve_command(host: str, port: int, threads: int) -> None:
    """Serve the API with waitress, and run trainings unless SCHEDULER_ENABLED is off.

    SIGTERM or SIGINT stops serving; running trainings get SHUTDOWN_GRACE seconds to finish,
    then go back to the queue without spending an attempt. A second signal stops them at once.
    """
    app = _app()
    _start_node(app, node.Role.BOTH if app.config["SCHEDULER_ENABLED"] else node.Role.API)
    started = dispatcher.start(app)
    sender.start(app)  # webhooks go out from every node, API-only ones included

    def stop(signum: int, _frame: object) -> None:
        if started is not None and started.stopping:
            started.shutdown_signal.request(0)
        raise SystemExit(128 + signum)  # waitress closes its sockets and returns

    click.echo(
        f"Serving maia-trainings on http://{host}:{port} "
        f"(node {node.name(app)}, role {node.role(app)})"
    )
    try:
        with _on_signals(stop):
            server.serve(app, host=host, port=port, threads=threads)
    finally:
        if started is not None:
            click.echo("Stopping: running trainings get SHUTDOWN_GRACE seconds to finish.")
            started.shutdown()
        sender.stop()


@trainings.command("worker")
@click.option("--workers", type=int, default=None, help="Trainings at once [default: WORKERS].")
@click.option(
    "--metrics-port",
    type=click.IntRange(1, 65535),
    default=None,
    help="Serve this node's /metrics on this port (a worker serves no other HTTP).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    help="The address --metrics-port listens on; it asks for no token.",
)
def worker_command(workers: int | None, metrics_port: int | None, metrics_host: str) -> None:
    """Run trainings without serving HTTP, until SIGTERM or SIGINT: a worker node.

    It claims due trainings from the shared database as a server's dispatcher does (woken at
    once by new work, on PostgreSQL from any node) and stops as the server does: running
    trainings get SHUTDOWN_GRACE seconds to finish, then go back to the queue without
    spending an attempt; a second signal stops them at once.
    """
    app = _app()
    if workers is not None:
        app.config["WORKERS"] = workers
    _start_node(app, node.Role.WORKER)
    started = dispatcher.start(app, worker=True)
    assert started is not None
    sender.start(app)
    if metrics_port is not None:
        figures = metrics.of(app)
        # prometheus-client's own server, in a thread: the runs this node makes are counted
        # here and nowhere else, so they must be scraped here.
        start_http_server(metrics_port, addr=metrics_host, registry=figures.registry)
        click.echo(f"Metrics on http://{metrics_host}:{metrics_port}/metrics")
    stopped = threading.Event()

    def stop(_signum: int, _frame: object) -> None:
        if started.stopping:
            started.shutdown_signal.request(0)
        stopped.set()

    click.echo(
        f"Worker node {node.name(app)} running up to {app.config['WORKERS']} trainings "
        f"at once from {db.database(app).shown_url}"
    )
    try:
        with _on_signals(stop):
            while not stopped.wait(1):
                pass
    finally:
        click.echo("Stopping: running trainings get SHUTDOWN_GRACE seconds to finish.")
        started.shutdown()
        sender.stop()


@trainings.command("top")
@click.option("--once", is_flag=True, help="Print one frame and exit (for scripts).")
@click.option(
    "--interval",
    type=click.FloatRange(min=0.1),
    default=2.0,
    show_default=True,
    help="Seconds between refreshes.",
)
def top_command(once: bool, interval: float) -> None:
    """Watch the queue: counts by status, running trainings with their progress, the oldest
    queued; refreshed every INTERVAL seconds until Ctrl-C."""
    # rich is for this command only: every server and command imports this module.
    from rich.console import Console

    from . import top

    top.watch(db.database(), once=once, interval=interval, console=Console())


@trainings.command("run-pending")
@click.option("--workers", type=int, default=None, help="Trainings at once [default: WORKERS].")
@click.option("--limit", type=int, default=None, help="Run at most this many trainings.")
@click.option(
    "--include-scheduled",
    "horizon",
    type=float,
    default=0.0,
    metavar="SECONDS",
    help="Also wait for and run trainings scheduled within the next SECONDS.",
)
def run_pending_command(workers: int | None, limit: int | None, horizon: float) -> None:
    """Run every due training in the foreground until none is left (safe beside a server).

    Exits with 0 when every training it ran succeeded, 1 when any failed, was interrupted or
    was taken over by another process (this one stalled past its lease).
    """
    app = _app()
    _current_schema()
    shutdown = Shutdown()
    grace = float(app.config["SHUTDOWN_GRACE"])

    def stop(_signum: int, _frame: object) -> None:
        shutdown.request(0 if shutdown.requested.is_set() else grace)

    database = db.database(app)
    with database.session() as session:
        expected = listing.count_trainings(session, [Filter("status", "eq", (Status.QUEUED,))])
    with _on_signals(stop), _FinishedReport(expected, database) as report:
        outcomes = claim_loop.run_pending(
            app,
            workers=workers or int(app.config["WORKERS"]),
            limit=limit,
            horizon=horizon,
            shutdown=shutdown,
            on_finished=report.finished,
        )
    # The webhook deliveries due now (these trainings' events among them), each attempted
    # once: cron-driven installations have no sender running between passes. Said before the
    # summary, which stays the last line (scripts read it).
    sent = sender.deliver_due(app)
    if sent.attempted:
        click.echo(f"{sent.delivered} of {sent.attempted} webhook deliveries delivered.")
    left_as = Counter(
        report.left_as(tid, outcome) if outcome else None for tid, outcome in outcomes.items()
    )
    click.echo(
        f"{len(outcomes)} trainings run: "
        f"{left_as[Status.SUCCEEDED]} succeeded, "
        f"{left_as[Status.FAILED]} failed, "
        f"{left_as[Status.QUEUED]} back in the queue, "
        f"{left_as[None]} cancelled."
    )
    sys.exit(1 if left_as[Status.FAILED] or left_as[Status.QUEUED] else 0)


class _FinishedReport:
    """A progress bar on a terminal; elsewhere (cron, logs) one line per finished training."""

    def __init__(self, expected: int, database: db.Database) -> None:
        self.interactive = sys.stdout.isatty()
        self.bar = click.progressbar(length=max(expected, 1), label="trainings", show_pos=True)
        self.lock = threading.Lock()
        self._stack = ExitStack()
        self._database = database
        self._lost: dict[int, Status | None] = {}

    def left_as(self, training_id: int, outcome: Outcome) -> Status | None:
        """The status a run left its training in; None for a cancelled one.

        A run that lost its training (Outcome.status None) was cancelled, or was taken over:
        its lease ran out (the process stalled past LEASE_SECONDS) and the training went back
        to the queue for whichever process claims it next. The training's row tells which; a
        takeover counts as back in the queue, so run-pending does not exit 0 on it.
        """
        if outcome.status is not None:
            return outcome.status
        if training_id not in self._lost:
            with self._database.session() as session, db.reading(session):
                now = session.scalar(select(Training.status).where(Training.id == training_id))
            cancelled = now is None or now == Status.CANCELLED
            self._lost[training_id] = None if cancelled else Status.QUEUED
        return self._lost[training_id]

    def __enter__(self) -> _FinishedReport:
        if self.interactive:
            self._stack.enter_context(self.bar)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()

    def finished(self, training: Training, outcome: Outcome) -> None:
        with self.lock:
            if not self.interactive:
                said: str = outcome.status or Status.CANCELLED
                if outcome.status is None and self.left_as(training.id, outcome) is not None:
                    said = "taken over (its lease ran out), back in the queue"
                click.echo(f"training {training.id} ({training.uuid}): {said}")
                return
            if self.bar.length is not None and self.bar.pos >= self.bar.length:
                self.bar.length += 1
            self.bar.update(1)


@contextmanager
def _on_signals(handler: Callable[[int, Any], None]) -> Iterator[None]:
    """Handle SIGTERM and SIGINT with ``handler`` while the block runs."""
    previous = {
        signum: signal.signal(signum, handler) for signum in (signal.SIGTERM, signal.SIGINT)
    }
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


@trainings.command("demo-data")
@click.option("--rows", type=click.IntRange(min=10), default=20_000, show_default=True)
@click.option("--seed", type=click.IntRange(min=0), default=42, show_default=True)
@click.argument("out", type=click.Path(dir_okay=False, writable=True))
def demo_data_command(rows: int, seed: int, out: str) -> None:
    """Write a synthetic loan book of ROWS loans to OUT (CSV); the same seed, the same rows."""
    from .trainers import portfolio

    portfolio.write_csv(Path(out), rows, seed)
    click.echo(f"Wrote {rows} loans to {out}.")


schedule_group = AppGroup("schedules", help="Add, list, pause, resume and remove schedules.")
trainings.add_command(schedule_group)
SCHEDULE_COLUMNS = (
    "id",
    "name",
    "cron",
    "timezone",
    "enabled",
    "next_fire_at",
    "last_fired_at",
    "missed_fires",
)


def _invalid(exc: ValidationError) -> click.ClickException:
    """A validation error as one line per field: ``cron: the reason``."""
    messages = exc.messages if isinstance(exc.messages, dict) else {"schedule": exc.messages}
    lines = [f"{field}: {' '.join(map(str, problems))}" for field, problems in messages.items()]
    return click.ClickException("invalid schedule\n" + "\n".join(lines))


@contextmanager
def _schedule_named(name_or_id: str) -> Iterator[tuple[Any, int]]:
    """A session and the id of the schedule NAME_OR_ID (its name, else its id)."""
    with db.database().session() as session:
        try:
            yield session, schedules.find_schedule(session, name_or_id).id
        except ServiceError as exc:
            _fail(exc)


@schedule_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the API's JSON instead of a table.")
def schedules_list(as_json: bool) -> None:
    """List schedules by name."""
    query = listing.ListQuery(sort=(("name", False),), limit=None)
    with db.database().session() as session:
        rows = [schedules.represent(s) for s in schedules.list_schedules(session, query)]
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    _table(SCHEDULE_COLUMNS, [tuple(row[c] for c in SCHEDULE_COLUMNS) for row in rows])


@schedule_group.command("add")
@click.argument("name")
@click.argument("cron")
@click.option("--timezone", default="UTC", show_default=True, help="An IANA time zone name.")
@click.option("--meta", default=None, help="The trainings' meta (text or a JSON object).")
@click.option("--version-prefix", default=None, help="Version fires as PREFIX + YYYYMMDDHHMM.")
@click.option(
    "--model-name", default="default", show_default=True, help="The model its trainings train."
)
@click.option("--disabled", is_flag=True, help="Add it paused.")
def schedules_add(
    name: str,
    cron: str,
    timezone: str,
    meta: str | None,
    version_prefix: str | None,
    model_name: str,
    disabled: bool,
) -> None:
    """Add a schedule NAME firing at CRON (five fields, or @hourly, @daily, @weekly, @monthly)."""
    _current_schema()
    body = {
        "name": name,
        "cron": cron,
        "timezone": timezone,
        "meta": meta,
        "version_prefix": version_prefix,
        "model_name": model_name,
        "enabled": not disabled,
    }
    try:
        fields = schedules.load_schedule(body)
        if fields.get("meta") is not None:
            check_trainer_params(fields["meta"], _app().config)
    except ValidationError as exc:
        raise _invalid(exc) from None
    with db.database().session() as session:
        try:
            made = schedules.create_schedule(session, fields, actor="cli")
        except ServiceError as exc:
            _fail(exc)
    shown = schedules.represent(made)
    click.echo(
        f"Added the schedule {name!r} (id {shown['id']}); next fire: {shown['next_fire_at']}"
    )


@schedule_group.command("pause")
@click.argument("name_or_id")
def schedules_pause(name_or_id: str) -> None:
    """Stop the schedule NAME_OR_ID firing until it is resumed."""
    with _schedule_named(name_or_id) as (session, key):
        schedules.pause_schedule(session, key, actor="cli")
    click.echo(f"Paused the schedule {name_or_id!r}.")


@schedule_group.command("resume")
@click.argument("name_or_id")
def schedules_resume(name_or_id: str) -> None:
    """Fire the schedule NAME_OR_ID again, from its next fire (missed ones are not made up)."""
    with _schedule_named(name_or_id) as (session, key):
        shown = schedules.represent(schedules.resume_schedule(session, key, actor="cli"))
    click.echo(f"Resumed the schedule {name_or_id!r}; next fire: {shown['next_fire_at']}")


@schedule_group.command("remove")
@click.argument("name_or_id")
def schedules_remove(name_or_id: str) -> None:
    """Remove the schedule NAME_OR_ID; the trainings it made stay."""
    with _schedule_named(name_or_id) as (session, key):
        schedules.delete_schedule(session, key)
    click.echo(f"Removed the schedule {name_or_id!r}.")


def _table(headers: tuple[str, ...], rows: Sequence[Sequence[object]]) -> None:
    cells = [headers, *[tuple("" if v is None else str(v) for v in row) for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        click.echo(
            "  ".join(value.ljust(width) for value, width in zip(row, widths, strict=True)).rstrip()
        )


def init_app(app: Flask) -> None:
    app.cli.add_command(trainings)
