"""Build a new image crash-safely: under a staging name, renamed when complete.

A crash (even SIGKILL) leaves at most the staging image, never a half-made image under the final
name; the next run removes the staging leftover and starts again. A run after success finds the
finished image (ours, for this OpenNebula image id) and does nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

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
    remove_image(pool.cluster, pool.ioctx, name)


def build_image(pool: Pool, dst: ImageSpec, *, meta: dict[str, str], identity: tuple[str, ...],
                make: Callable[[str, dict[str, str]], None], subject: str) -> bool:
    """Run ``make(staging_name, meta)`` and move the result to ``dst``. ``identity`` names the
    metadata fields that make an existing ``dst`` this very image (a finished earlier run).

    Returns False when the image was already there (nothing done).
    """
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
            remove_image(pool.cluster, pool.ioctx, staging)
        raise
    return True
