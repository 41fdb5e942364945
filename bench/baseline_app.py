"""The baseline of the create benchmark: a bare Flask app served by waitress like the service.

    python bench/baseline_app.py --port P [--host 127.0.0.1] [--threads 8]

Its one route, ``POST /trainings``, parses the JSON body as the service does (``json.loads`` of
the UTF-8 text) and answers a constant JSON object: what Flask and waitress cost by themselves,
without authentication, validation or the database. Served with waitress's ``create_server``
and the same number of threads as ``flask trainings serve``.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys

from flask import Flask, Response, request
from waitress import create_server

CONSTANT = json.dumps({"id": "1", "status": "scheduled"})


def create_app() -> Flask:
    app = Flask(__name__)

    @app.post("/trainings")
    def create_training() -> Response:
        body = json.loads(request.get_data().decode("utf-8"))
        if not isinstance(body, dict):
            return Response('{"code": 400}', status=400, mimetype="application/json")
        return Response(CONSTANT, mimetype="application/json")

    @app.get("/healthz")
    def health() -> Response:
        return Response('{"status": "ok"}', mimetype="application/json")

    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--threads", type=int, default=8)
    args = parser.parse_args(argv)

    def stop(signum: int, _frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    server = create_server(
        create_app(), host=args.host, port=args.port, threads=args.threads, ident="baseline"
    )
    print(f"Serving the baseline on http://{args.host}:{args.port}", flush=True)
    try:
        server.run()
    except (SystemExit, KeyboardInterrupt):
        pass
    finally:
        server.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
