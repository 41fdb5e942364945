"""The WSGI entry point: ``app`` for waitress, gunicorn or any other WSGI server.

Importing it also starts the process's dispatcher (unless SCHEDULER_ENABLED is off), so the
server that imports it runs trainings too; it stops, re-queueing what runs, when the process exits.
"""

from maia_trainings import create_app, dispatcher, node

app = create_app()
# A database behind this release's schema, or a models folder this node cannot write, stops
# the server here, saying what to do.
node.start(app, node.Role.BOTH if app.config["SCHEDULER_ENABLED"] else node.Role.API)
dispatcher.start(app)
