"""The WSGI entry point: ``app`` for waitress, gunicorn or any other WSGI server.

Importing it also starts the process's dispatcher (unless SCHEDULER_ENABLED is off), so the
server that imports it runs trainings too; it stops, re-queueing what runs, when the process exits.
"""

from maia_trainings import create_app, db, dispatcher, migrations

app = create_app()
# A database behind this release's schema stops the server here, naming the command to run.
migrations.ensure_current(db.database(app))
dispatcher.start(app)
