"""The WSGI entry point: ``app`` for waitress, gunicorn or any other WSGI server."""

from maia_trainings import create_app

app = create_app()
