"""Build a new image crash-safely: under a staging name, renamed when complete.

A crash (even SIGKILL) leaves at most the staging image, never a half-made image under the final
name; the next run removes the staging leftover and starts again. A run after success finds the
finished image (ours, for this OpenNebula image id) and does nothing.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator

from one_drivers.ceph import ownership
from one_drivers.ceph.naming import ImageSpec, staging_name
from one_drivers.ceph.pool import Pool
from one_drivers.ceph.rbd_ops import ceph_errors, exists, open_image, remove_image
from one_drivers.core import faults, log
from one_drivers.core.errors import ActionFailed


def finished(pool: Pool, dst: ImageSpec, identity: dict[str, str]) -> bool:
    """True when ``dst`` is already ours with this ``identity`` (image id, or VM and disk);
    refuse to touch anyone else's."""
    import rbd

    try:
        with open_image(pool.ioctx, dst.name, read_only=True) as image:
            meta = ownership.read(image)
    except rbd.ImageNotFound:
        return False
    if meta and all(meta.get(k) == v for k, v in identity.items()):
        return True
    raise ActionFailed(f"RBD image {dst} already exists and is not ours",
                       hint="it was left there by something else: "
                       "check and remove it by hand, it is not ours to delete")


def drop_staging(pool: Pool, name: str) -> None:
    """Remove an earlier run's staging image, if it is ours."""
    if not exists(pool.ioctx, name):
        return
    with open_image(pool.ioctx, name, read_only=True) as image:
        # the staging suffix is ours alone: unstamped means a crash right after its creation
        ours = bool(ownership.read(image)) or not ownership.stamped(image)
    if not ours:
        raise ActionFailed(f"RBD image {pool.name}/{name} is in the way and is not ours",
                           hint="remove it by hand")
    log.info(f"removing {pool.name}/{name} left by an interrupted run")
    # our build claim proves its builder gone: a watch it left is stale, not a user's
    remove_image(pool.cluster, pool.ioctx, name, abandoned=True)


def _token(seconds: float) -> bytes:
    """Who builds, and until when: host, pid, the process's start time, expiry (epoch)."""
    import socket
    import time

    with open("/proc/self/stat", "rb") as fh:
        started = fh.read().rsplit(b")", 1)[1].split()[19].decode()
    return f"{socket.gethostname()} {os.getpid()} {started} {int(time.time() + seconds)}".encode()


def _stale(token: bytes) -> bool:
    """The holder is provably gone: its deadline passed, or it ran here and its process (that
    pid with that start time) is no more."""
    import socket
    import time

    try:
        host, pid, started, expires = token.decode().split()
        if int(expires) < time.time():
            return True
        if host != socket.gethostname():
            return False
        with open(f"/proc/{int(pid)}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode() != started
    except FileNotFoundError:
        return True
    except (ValueError, IndexError, OSError):
        return False


def abandoned(pool: Pool, dst: ImageSpec) -> bool:
    """Whether nobody builds ``dst`` now: no claim on it, or its holder is provably gone (what
    lets a sweep remove staging images whose names it did not choose)."""
    import rados

    try:
        held = pool.ioctx.read(f"one-drivers.build.{dst.name}", 256)
    except rados.ObjectNotFound:
        return True
    return _stale(held)


@contextlib.contextmanager
def building(pool: Pool, dst: ImageSpec, subject: str, seconds: float) -> Iterator[None]:
    """One build of ``dst`` at a time. A small RADOS object named after it is created
    exclusively and holds who builds it until when; a second, concurrent run fails with a clear
    line instead of destroying the first one's staging image. A holder that is provably gone
    (killed on this host, or past its deadline) is replaced at once, so a re-run after a crash
    converges. Removal compares the content first: a run only ever removes its own claim."""
    import rados

    obj = f"one-drivers.build.{dst.name}"
    token = _token(seconds)
    for _ in range(2):
        op = pool.ioctx.create_write_op()
        try:
            op.new(rados.LIBRADOS_CREATE_EXCLUSIVE)
            op.write_full(token)
            pool.ioctx.operate_write_op(op, obj)
            break
        except rados.ObjectExists:
            pass
        finally:
            pool.ioctx.release_write_op(op)
        try:
            held = pool.ioctx.read(obj, 256)
        except rados.ObjectNotFound:
            continue
        if not _stale(held):
            host, pid = [*held.decode(errors="replace").split(), "?", "?"][:2]
            raise ActionFailed(f"another action (pid {pid} on {host}) is building {dst} "
                               "right now", hint="wait for it to finish; this run changed nothing")
        log.info(f"taking over {dst} from a run that is gone ({held.decode(errors='replace')})")
        _remove_if(pool, obj, held)
    else:
        raise ActionFailed(f"could not claim {dst} for building", hint="retry")
    try:
        yield
    finally:
        with contextlib.suppress(rados.Error):
            _remove_if(pool, obj, token)


def _remove_if(pool: Pool, obj: str, content: bytes) -> None:
    """Remove ``obj`` only if it still holds ``content`` (one atomic operation)."""
    import rados

    op = pool.ioctx.create_write_op()
    try:
        op.cmpext(content, 0)
        op.remove()
        pool.ioctx.operate_write_op(op, obj)
    except (rados.ObjectNotFound, rados.Error):
        pass
    finally:
        pool.ioctx.release_write_op(op)


def build_image(pool: Pool, dst: ImageSpec, *, meta: dict[str, str], identity: tuple[str, ...],
                make: Callable[[str, dict[str, str]], None], subject: str,
                seconds: float) -> bool:
    """Run ``make(staging_name, meta)`` and move the result to ``dst``. ``identity`` names the
    metadata fields that make an existing ``dst`` this very image (a finished earlier run).
    ``seconds``: how long the build may hold its lock (the action's deadline).

    Returns False when the image was already there (nothing done).
    """
    with ceph_errors(f"locking {dst}", subject), building(pool, dst, subject, seconds):
        return _build(pool, dst, meta, identity, make, subject)


def _build(pool: Pool, dst: ImageSpec, meta: dict[str, str], identity: tuple[str, ...],
           make: Callable[[str, dict[str, str]], None], subject: str) -> bool:
    import rbd

    with ceph_errors(f"checking {dst}", subject):
        if finished(pool, dst, {k: meta[k] for k in identity}):
            log.info(f"{dst} is already there: nothing to do")
            return False
        staging = staging_name(dst.name)
        drop_staging(pool, staging)
    try:
        with ceph_errors(f"writing {pool.name}/{staging}", subject):
            make(staging, meta)
        faults.point("build:made")
        with ceph_errors(f"renaming {pool.name}/{staging} to {dst.name}", subject):
            rbd.RBD().rename(pool.ioctx, staging, dst.name)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_image(pool.cluster, pool.ioctx, staging, abandoned=True)
        raise
    return True
