"""Several processes on one database, as nodes are: each a real server or worker process.

On SQLite the nodes share one file on one box; on PostgreSQL one database, as separate
machines would. What one node does, every other sees at once.
"""

from __future__ import annotations

import subprocess
import urllib.error
import urllib.request

from conftest import Server, flask_command, server_env


def status_of(server: Server, path: str) -> int:
    """The HTTP status of an authenticated GET of ``path``."""
    request = urllib.request.Request(
        server.url + path, headers={"Authorization": f"Bearer {server.token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def run_cli(server: Server, *args: str) -> subprocess.CompletedProcess[str]:
    """A `flask trainings …` command on ``server``'s instance and database."""
    return subprocess.run(
        flask_command("trainings", *args),
        env=server_env(server.instance, **server.settings),
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_a_token_revoked_by_the_cli_is_refused_by_every_node_at_its_next_request(
    server_factory,
):
    # A cache that would trust a token for an hour: the revocation must not wait for it.
    first = server_factory(TOKEN_CACHE_SECONDS="3600")
    second = server_factory.restart(first)  # another node on the same database and token
    for node in (first, second):
        assert status_of(node, "/trainings") == 200  # the token is cached on both

    revoked = run_cli(first, "token", "revoke", "tester")
    assert revoked.returncode == 0, revoked.stderr

    for node in (first, second):
        assert status_of(node, "/trainings") == 403
        assert status_of(node, "/trainings/count") == 403
