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
from one_drivers.core import log
from one_drivers.core.errors import ActionFailed


def finished(pool: Pool, dst: ImageSpec, image_id: int) -> bool:
    """True when ``dst`` is already our image for ``image_id``; refuse to touch anyone else's."""
    import rbd

    try:
        with open_image(pool.ioctx, dst.name, read_only=True) as image:
            meta = ownership.read(image)
    except rbd.ImageNotFound:
        return False
    if meta.get("image") == str(image_id):
        return True
    raise ActionFailed(f"RBD image {dst} already exists and is not one-drivers' image "
                       f"{image_id}", hint="it was left there by something else: "
                       "check and remove it by hand, it is not ours to delete")


def drop_staging(pool: Pool, name: str) -> None:
    """Remove an earlier run's staging image, if it is ours."""
    if not exists(pool.ioctx, name):
        return
    with open_image(pool.ioctx, name, read_only=True) as image:
        ours = bool(ownership.read(image))
    if not ours:
        raise ActionFailed(f"RBD image {pool.name}/{name} is in the way and is not ours",
                           hint="remove it by hand")
    log.info(f"removing {pool.name}/{name} left by an interrupted run")
    remove_image(pool.cluster, pool.ioctx, name)


def build_image(pool: Pool, dst: ImageSpec, *, image_id: int, datastore_id: int,
                make: Callable[[str, dict[str, str]], None], subject: str) -> bool:
    """Run ``make(staging_name, metadata)`` and move the result to ``dst``.

    Returns False when the image was already there (nothing done).
    """
    import rbd

    with ceph_errors(f"checking {dst}", subject):
        if finished(pool, dst, image_id):
            log.info(f"{dst} is already there: nothing to do")
            return False
        staging = staging_name(dst.name)
        drop_staging(pool, staging)
    meta = ownership.stamp("image", datastore=datastore_id, image=image_id)
    try:
        with ceph_errors(f"writing {pool.name}/{staging}", subject):
            make(staging, meta)
        with ceph_errors(f"renaming {pool.name}/{staging} to {dst.name}", subject):
            rbd.RBD().rename(pool.ioctx, staging, dst.name)
    except BaseException:
        with contextlib.suppress(Exception):
            remove_image(pool.cluster, pool.ioctx, staging)
        raise
    return True
