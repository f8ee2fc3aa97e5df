"""Write a file so that a crash leaves the old content or the new one, never a half-written one:
a temporary name next to it, flushed to disk, then renamed over it."""

from __future__ import annotations

import os


def write_atomic(path: str, data: str | bytes, *, mode: int | None = None) -> None:
    """``mode``: the new file's permissions (default: those of the file it replaces, if any)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    raw = data.encode() if isinstance(data, str) else data
    if mode is None and os.path.exists(path):
        mode = os.stat(path).st_mode & 0o7777
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644 if mode is None else mode)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(raw)
            fh.flush()
            os.fsync(fh.fileno())
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
