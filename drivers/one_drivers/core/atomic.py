"""Write a file so that a crash leaves the old content or the new one, never a half-written one:
a temporary name next to it, flushed to disk, then renamed over it.

Everything happens relative to a descriptor of the directory, opened through
:func:`safefs.open_trusted_dir` when the writer is root (root writes only where nobody else can
plant a name) or when the caller asks for a private directory. The temporary file is created
with ``O_EXCL | O_NOFOLLOW`` under an unpredictable name, and its mode is set on the descriptor:
a symlink planted anywhere in the directory is never followed.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
import stat

from one_drivers.core.safefs import open_trusted_dir

_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


def write_atomic(path: str, data: str | bytes, *, mode: int | None = None,
                 private: bool = False, create_dirs: bool = False) -> None:
    """``mode``: the new file's permissions (default: those of the regular file it replaces,
    if any, else 0644). The file it replaces keeps its owner and group when root writes it
    (``/etc/one/oned.conf`` is root:oneadmin 0640: a merge that left it root's would lock oned
    out of its own configuration). ``private``: the directory must be the writer's own, mode
    0700 (created so with ``create_dirs``)."""
    directory, name = os.path.split(os.path.abspath(path))
    raw = data.encode() if isinstance(data, str) else data
    if private or os.geteuid() == 0:
        dfd = open_trusted_dir(directory, private=private,
                               create_mode=(0o700 if private else 0o755) if create_dirs else None)
    else:
        if create_dirs:
            os.makedirs(directory, exist_ok=True)
        dfd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        owner: tuple[int, int] | None = None
        with contextlib.suppress(FileNotFoundError):
            st = os.lstat(name, dir_fd=dfd)
            if stat.S_ISREG(st.st_mode):
                mode = st.st_mode & 0o777 if mode is None else mode
                owner = (st.st_uid, st.st_gid)
        tmp, fd = _create_temporary(dfd, name)
        try:
            if owner is not None and os.geteuid() == 0:
                os.fchown(fd, *owner)
            os.fchmod(fd, 0o644 if mode is None else mode)
            with os.fdopen(fd, "wb") as fh:
                fh.write(raw)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp, dir_fd=dfd)
            raise
    finally:
        os.close(dfd)


def _create_temporary(dfd: int, name: str) -> tuple[str, int]:
    for _ in range(16):
        tmp = f".{name}.tmp.{secrets.token_hex(6)}"
        try:
            return tmp, os.open(tmp, _CREATE, 0o600, dir_fd=dfd)
        except FileExistsError:
            continue
        except OSError as exc:
            if exc.errno != errno.ELOOP:
                raise
    raise FileExistsError(f"no free temporary name next to {name}")
