"""Files in places someone else might control.

A directory is *trusted* for a user when nobody but that user and root can change what its path
leads to: every directory on the way is owned by root or the user and not writable by group or
others (a sticky, world-writable directory such as /tmp is fine on the way, not as the end: its
other users cannot rename what they do not own, but they can create names in it). Symlinks on
the way are followed only when root or the user owns them. The check walks the path with
``O_NOFOLLOW`` directory descriptors, so what was checked is what is used: callers get the final
descriptor and create their files relative to it.

Root writes only in directories trusted for root; a driver user keeps its private state in
directories it owns with mode 0700 (see SECURITY.md).
"""

from __future__ import annotations

import contextlib
import errno
import os
import stat
from collections.abc import Iterator

from one_drivers.core.errors import ActionFailed

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_MAX_LINKS = 16


class Untrusted(ActionFailed):
    """A path that someone other than root or the expected owner could change."""


def _owned_ok(st: os.stat_result, uid: int) -> bool:
    return st.st_uid in (0, uid)


def _check_dir(st: os.stat_result, uid: int, where: str, *, final: bool) -> None:
    if not stat.S_ISDIR(st.st_mode):
        raise Untrusted(f"{where} is not a directory")
    if not _owned_ok(st, uid):
        raise Untrusted(f"{where} is owned by uid {st.st_uid}, not by root or uid {uid}",
                        hint="fix its owner, or configure a directory only they own")
    writable_by_others = st.st_mode & 0o022
    sticky = st.st_mode & stat.S_ISVTX
    if writable_by_others and (final or not sticky):
        raise Untrusted(f"{where} is writable by other users (mode {st.st_mode & 0o7777:o})",
                        hint="remove group/other write permission, or choose another directory")


def open_trusted_dir(path: str, *, uid: int | None = None, create_mode: int | None = None,
                     private: bool = False) -> int:
    """A descriptor of directory ``path`` once every step of it is trusted for ``uid``
    (default: the effective user). ``create_mode``: create missing directories with this mode
    (owned by the effective user). ``private``: the directory itself must be owned by ``uid``
    and accessible to nobody else (0700)."""
    owner = os.geteuid() if uid is None else uid
    if not os.path.isabs(path):
        raise Untrusted(f"{path!r} is not an absolute path")
    parts = [p for p in path.split("/") if p not in ("", ".")]
    fd = os.open("/", _DIR_FLAGS)
    where = "/"
    links = 0
    try:
        _check_dir(os.fstat(fd), owner, where, final=not parts)
        while parts:
            name = parts.pop(0)
            if name == "..":
                raise Untrusted(f"{path!r} contains '..'")
            nxt = os.path.join(where, name)
            try:
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except FileNotFoundError:
                if create_mode is None:
                    raise
                with contextlib.suppress(FileExistsError):
                    os.mkdir(name, create_mode, dir_fd=fd)
                child = os.open(name, _DIR_FLAGS, dir_fd=fd)
            except OSError as exc:
                if exc.errno not in (errno.ELOOP, errno.ENOTDIR):
                    raise
                st = os.lstat(name, dir_fd=fd)
                if not stat.S_ISLNK(st.st_mode):
                    raise Untrusted(f"{nxt} is not a directory") from None
                if not _owned_ok(st, owner):
                    raise Untrusted(f"{nxt} is a symlink owned by uid {st.st_uid}") from None
                links += 1
                if links > _MAX_LINKS:
                    raise Untrusted(f"too many symlinks in {path!r}") from None
                target = os.readlink(name, dir_fd=fd)
                rest = [p for p in target.split("/") if p not in ("", ".")]
                parts = rest + parts
                if target.startswith("/"):
                    os.close(fd)
                    fd = os.open("/", _DIR_FLAGS)
                    where = "/"
                continue
            os.close(fd)
            fd, where = child, nxt
            _check_dir(os.fstat(fd), owner, where, final=not parts)
        if private:
            st = os.fstat(fd)
            if st.st_uid != owner or st.st_mode & 0o077:
                raise Untrusted(f"{path} must be owned by uid {owner} with mode 0700 "
                                f"(it is uid {st.st_uid}, mode {st.st_mode & 0o7777:o})",
                                hint="remove it or fix its owner and mode")
        return fd
    except BaseException:
        os.close(fd)
        raise


@contextlib.contextmanager
def _closing(fd: int) -> Iterator[int]:
    try:
        yield fd
    finally:
        os.close(fd)


def trusted_dir(path: str, **kwargs: object) -> contextlib.AbstractContextManager[int]:
    return _closing(open_trusted_dir(path, **kwargs))  # type: ignore[arg-type]


def is_trusted_dir(path: str, uid: int | None = None) -> bool:
    try:
        with trusted_dir(path, uid=uid):
            return True
    except (OSError, Untrusted):
        return False


def read_trusted_file(path: str, *, uid: int = 0, limit: int = 1 << 20) -> bytes | None:
    """The content of a configuration file only root (or ``uid``) can change: its directory is
    trusted, the file is not a symlink, owned by root or ``uid`` and not writable by others.
    None when it does not exist."""
    directory, name = os.path.split(path)
    try:
        dfd = open_trusted_dir(directory, uid=uid)
    except FileNotFoundError:
        return None
    with _closing(dfd):
        try:
            fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=dfd)
        except FileNotFoundError:
            return None
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise Untrusted(f"{path} is a symlink") from None
            raise
        with os.fdopen(fd, "rb") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise Untrusted(f"{path} is not a regular file")
            if not _owned_ok(st, uid) or st.st_mode & 0o022:
                raise Untrusted(f"{path} can be changed by others (uid {st.st_uid}, "
                                f"mode {st.st_mode & 0o7777:o})")
            data = fh.read(limit + 1)
    if len(data) > limit:
        raise Untrusted(f"{path} is larger than {limit} bytes")
    return data
