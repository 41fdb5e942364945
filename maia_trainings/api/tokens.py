"""/tokens/me: the name and scope of the token a request carries, so a client can tell whether
it may write (the dashboard shows write controls only to a write token)."""

from __future__ import annotations

from flask import Response

from ..auth import can_read, current_caller
from ..formats import render
from . import bp


@bp.get("/tokens/me")
@can_read
def who_am_i() -> Response:
    caller = current_caller()
    return render({"name": caller.name, "scope": caller.scope}, root="token")
