"""The files a run leaves: its log (read back within LOG_LIMIT) and its model file (published)."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


def read_log(path: Path, limit: int) -> str:
    """The log file's text, keeping its beginning and its end when it is longer than ``limit``."""
    try:
        size = path.stat().st_size
        with path.open("rb") as file:
            if size <= limit:
                data = file.read()
            else:
                head = file.read(limit // 4)
                file.seek(size - (limit - limit // 4))
                tail = file.read()
                omitted = size - len(head) - len(tail)
                data = head + f"\n[… {omitted} bytes omitted …]\n".encode() + tail
    except FileNotFoundError:
        return ""
    return data.decode("utf-8", "replace")


@dataclass(frozen=True)
class Published:
    """A model file moved into place: its SHA-256, its size, and which file it is (device and
    inode), so that a run can later remove its own file and never a file published after it."""

    sha256: str
    size: int
    identity: tuple[int, int]

    def remove_if_still_there(self, final_path: Path) -> None:
        """Remove ``final_path`` if it is still this file (not one published over it since)."""
        try:
            now = final_path.stat()
        except FileNotFoundError:
            return
        if (now.st_dev, now.st_ino) == self.identity:
            final_path.unlink(missing_ok=True)


def publish(
    partial: Path, final_path: Path, *, still_owned: Callable[[], bool] = lambda: True
) -> Published | None:
    """Move the finished file into place atomically and durably.

    ``still_owned`` is asked after the slow part (hashing, fsync) and just before the move: a
    run that has lost its training (cancelled, or taken over after its lease ran out) must not
    put its file where the run that took over publishes, or over what that run published.
    None when it said no: nothing was moved.
    """
    digest = hashlib.sha256()
    with partial.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
        size = file.tell()
        os.fsync(file.fileno())
    if not still_owned():
        return None
    os.replace(partial, final_path)
    placed = final_path.stat()
    directory = os.open(final_path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return Published(digest.hexdigest(), size, (placed.st_dev, placed.st_ino))
