"""Disk snapshots on RBD, shared by the DS (image) and TM (VM disk) drivers.

Semantics that keep every snapshot deletable after any sequence of reverts (upstream:
OpenNebula/one#4840, #6807, #2052): a revert rolls the image back in place
(``rollback_to_snap``), so snapshots never move to other images and no parent chains appear.
Images upstream's driver reverted have their older snapshots on "carriers" (parents named
``<vol>-<ids>``); those are found through the image's parents, reverted to by copying the
snapshot's data in place, and removed when their last snapshot goes.
"""

from __future__ import annotations

from one_drivers.ceph.naming import ImageSpec, carrier_pattern
from one_drivers.ceph.pool import Pool
from one_drivers.ceph.rbd_ops import (
    open_image,
    parent,
    remove_image,
    remove_snap,
    snap_names,
)
from one_drivers.ceph.stream import CHUNK, SparseWriter
from one_drivers.core import log
from one_drivers.core.errors import NotFound


def locate(pool: Pool, spec: ImageSpec, snap: str) -> ImageSpec | None:
    """The image holding ``snap``: the image itself or one of upstream's carriers above it."""
    is_carrier = carrier_pattern(spec.name)
    current: ImageSpec | None = ImageSpec(spec.pool, spec.name)
    while current is not None:
        with open_image(pool.ioctx, current.name, read_only=True) as image:
            if snap in snap_names(image):
                return ImageSpec(current.pool, current.name, snap)
            up = parent(image)
        if up is None or up.pool != spec.pool or not is_carrier.match(up.name):
            return None
        current = ImageSpec(up.pool, up.name)
    return None


def copy_snapshot_into(pool: Pool, source: ImageSpec, dst_name: str) -> None:
    """Make ``dst`` hold exactly what ``source`` (an image@snap) holds: discard, then copy the
    allocated extents."""
    with open_image(pool.ioctx, source.name, snapshot=source.snap, read_only=True) as src, \
            open_image(pool.ioctx, dst_name) as dst:
        size = src.size()
        if dst.size() != size:
            dst.resize(size)
        dst.discard(0, size)
        extents: list[tuple[int, int]] = []
        src.diff_iterate(0, size, None,
                         lambda off, length, present: extents.append((off, length))
                         if present else None)
        writer = SparseWriter(dst)
        for off, length in extents:
            for pos in range(off, off + length, CHUNK):
                n = min(CHUNK, off + length - pos)
                writer.write(pos, src.read(pos, n))
        writer.finish()


def revert(pool: Pool, spec: ImageSpec, snap: str) -> None:
    holder = locate(pool, spec, snap)
    if holder is None:
        raise NotFound(f"snapshot {snap} of {spec} does not exist")
    if holder.name == spec.name:
        with open_image(pool.ioctx, spec.name) as image:
            image.rollback_to_snap(snap)
        log.info(f"rolled {spec} back to snapshot {snap}")
    else:
        copy_snapshot_into(pool, holder, spec.name)
        log.info(f"restored {spec} from snapshot {holder} (an upstream carrier)")


def delete(pool: Pool, spec: ImageSpec, snap: str) -> bool:
    """Remove ``snap``; False when it was already gone. Empty carriers go with it."""
    holder = locate(pool, spec, snap)
    if holder is None:
        return False
    with open_image(pool.ioctx, holder.name) as image:
        remove_snap(pool.cluster, image, snap)
        empty = not snap_names(image)
    if holder.name != spec.name and empty and \
            remove_image(pool.cluster, pool.ioctx, holder.name) == "removed":
        log.info(f"removed {holder.pool}/{holder.name}: it carried no snapshot any more")
    return True


def flatten(pool: Pool, spec: ImageSpec, snap: str) -> None:
    """The image keeps the content of ``snap``; every snapshot and carrier goes."""
    revert(pool, spec, snap)
    carriers: list[str] = []
    is_carrier = carrier_pattern(spec.name)
    with open_image(pool.ioctx, spec.name) as image:
        up = parent(image)
        while up is not None and up.pool == spec.pool and is_carrier.match(up.name):
            carriers.append(up.name)
            with open_image(pool.ioctx, up.name, read_only=True) as carrier:
                up = parent(carrier)
        if carriers:
            image.flatten()
        for name in snap_names(image):
            remove_snap(pool.cluster, image, name)
    for name in carriers:
        remove_image(pool.cluster, pool.ioctx, name)

