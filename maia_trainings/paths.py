"""Client-supplied file names kept inside their folders (models, datasets)."""

from __future__ import annotations

import posixpath
from pathlib import Path


class PathOutside(ValueError):
    """A client's path that is not a plain relative path inside its folder."""


def check_relative_path(value: str) -> None:
    """A path that names a file inside its folder: relative, no ``..``, no backslashes, no NUL."""
    if not isinstance(value, str) or not value or "\x00" in value or "\\" in value:
        raise PathOutside("Must be a relative path without backslashes or NUL characters.")
    if value.startswith("/") or (len(value) > 1 and value[1] == ":"):
        raise PathOutside("Must be a relative path, not an absolute one.")
    if ".." in value.split("/") or posixpath.normpath(value) in (".", ""):
        raise PathOutside("Must stay inside its folder (no '..').")


def resolve_inside(folder: Path, relative: str) -> Path:
    """``folder/relative`` with links followed; PathOutside if that leaves ``folder``."""
    check_relative_path(relative)
    try:
        base = Path(folder).resolve()
        target = (base / relative).resolve()
    except (OSError, RuntimeError):  # a link loop, a name too long for the file system
        raise PathOutside("Cannot be resolved inside its folder.") from None
    if not target.is_relative_to(base):
        raise PathOutside("Must stay inside its folder.")
    return target
