"""Client-supplied file names kept inside their folders (models, datasets)."""

from __future__ import annotations

import errno
import functools
import os
import posixpath
from pathlib import Path

from .errors import PathOutside


def check_relative_path(value: str) -> None:
    """A path that names a file inside its folder: relative, no ``..``, no backslashes, no NUL."""
    if not isinstance(value, str) or not value or "\x00" in value or "\\" in value:
        raise PathOutside("Must be a relative path without backslashes or NUL characters.")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise PathOutside("Must be a relative path, not an absolute one.")
    if ".." in value.split("/") or posixpath.normpath(value) in (".", ""):
        raise PathOutside("Must stay inside its folder (no '..').")


def _refuse_link_loop(resolved: str) -> None:
    """realpath leaves a link loop in place; following it is what reveals it (ELOOP)."""
    try:
        os.stat(resolved)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise
        # Not there (yet): a model file is published later.


@functools.lru_cache(maxsize=64)
def _real_folder(folder: str) -> str:
    # The configured folders are resolved once per process: a folder that is itself a link
    # re-pointed elsewhere takes effect at the next start.
    return os.path.realpath(folder)


def resolve_inside(folder: Path, relative: str) -> Path:
    """``folder/relative`` with links followed; PathOutside if that leaves ``folder``."""
    check_relative_path(relative)
    # os.path on strings, and the folder resolved once: Path.resolve() on both cost a sixth of
    # a create's CPU, measured 2026-11-28 (binaryPath is checked when the training is stored).
    try:
        base = _real_folder(os.fspath(folder))
        target = os.path.realpath(os.path.join(base, relative))
        _refuse_link_loop(target)
    except (OSError, ValueError):  # a link loop, a name too long for the file system
        raise PathOutside("Cannot be resolved inside its folder.") from None
    if target != base and not target.startswith(base.rstrip(os.sep) + os.sep):
        raise PathOutside("Must stay inside its folder.")
    return Path(target)
