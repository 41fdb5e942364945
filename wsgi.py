"""The WSGI entry point: ``app`` for waitress, gunicorn or any other WSGI server.

Importing it also starts the process's dispatcher (unless SCHEDULER_ENABLED is off), so the
server that imports it runs trainings too; it stops, re-queueing what runs, when the process exits.
It starts the webhook sender too, whatever SCHEDULER_ENABLED says.
"""

from maia_trainings import create_app, dispatcher, logs, node, sender

app = create_app()
logs.configure(app)  # LOG_FORMAT, on stderr: one line per request and per transition
# A database behind this release's schema, or a models folder this node cannot write, stops
# the server here, saying what to do.
node.start(app, node.Role.BOTH if app.config["SCHEDULER_ENABLED"] else node.Role.API)
dispatcher.start(app)
sender.start(app)  # webhook deliveries, on every node (stopped at exit)
