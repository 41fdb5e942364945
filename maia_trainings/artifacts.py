"""The files a run leaves: its log (read back within LOG_LIMIT) and its model file (published)."""

from __future__ import annotations

import hashlib
import os
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


def publish(partial: Path, final_path: Path) -> tuple[str, int]:
    """Move the finished file into place atomically and durably; its SHA-256 and size."""
    digest = hashlib.sha256()
    with partial.open("rb") as file:
        for block in iter(lambda: file.read(1024 * 1024), b""):
            digest.update(block)
        size = file.tell()
        os.fsync(file.fileno())
    os.replace(partial, final_path)
    directory = os.open(final_path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)
    finally:
        os.close(directory)
    return digest.hexdigest(), size
