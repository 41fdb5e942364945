"""GET /tokens/me: a client learns its token's name and scope, and nothing else."""

from __future__ import annotations

from conftest import bearer


def test_a_write_token_is_told_its_name_and_write_scope(client, write_token):
    response = client.get("/tokens/me", headers=bearer(write_token))

    assert response.status_code == 200
    assert response.get_json() == {"name": "writer", "scope": "write"}


def test_a_read_token_is_told_its_read_scope(client, read_token):
    response = client.get("/tokens/me", headers=bearer(read_token))

    assert response.status_code == 200
    assert response.get_json() == {"name": "reader", "scope": "read"}


def test_xml_is_offered_as_everywhere(client, read_token):
    response = client.get("/tokens/me", headers=bearer(read_token, Accept="application/xml"))

    assert response.status_code == 200
    assert b"<token><name>reader</name><scope>read</scope></token>" in response.data


def test_a_missing_unknown_or_revoked_token_gets_403(client, runner, write_token):
    assert client.get("/tokens/me").status_code == 403
    assert client.get("/tokens/me", headers=bearer("mt_unknown")).status_code == 403
    assert runner.invoke(args=["trainings", "token", "revoke", "writer"]).exit_code == 0

    response = client.get("/tokens/me", headers=bearer(write_token))

    assert response.status_code == 403
    assert response.get_json()["code"] == 403
