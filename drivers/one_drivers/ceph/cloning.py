"""Copy-on-write clones, shared by DS ``clone`` and TM ``clone``.

A clone hangs from a snapshot of its source named ``one-drivers-clone-...`` (clone v2: never
protected). Clones of an unchanged source share its newest such snapshot; a changed source gets a
new one, so a clone never sees stale data (upstream's single ``@snap`` did: OpenNebula/one#6207).
Chains deeper than the cap are flattened at once. No staging name (a rename costs as much as the
clone): a clone interrupted before its ownership metadata is recognised by its parent, one of our
clone snapshots of the source. When a clone goes, :func:`release_parent` drops its snapshot if
nothing else hangs from it and collects a source hidden in the trash.
"""

from __future__ import annotations

from typing import Any

from one_drivers.ceph import ownership
from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.pool import Pool
from one_drivers.ceph.rbd_ops import (
    children,
    clone,
    collect_parent,
    depth,
    exists,
    open_image,
    parent,
    snap_names,
    user_snaps,
)
from one_drivers.core import faults, log
from one_drivers.core.errors import ActionFailed

CLONE_SNAP_PREFIX = "one-drivers-clone-"


def reusable_snapshot(source: Any) -> str | None:
    """The newest clone snapshot of ``source`` if nothing changed since it was taken.

    With fast-diff the object map says which objects changed, without reading them: one small
    read instead of a snapshot (a monitor round trip). Without a valid fast-diff we do not guess.
    """
    import rbd

    if not source.features() & rbd.RBD_FEATURE_FAST_DIFF or \
            source.flags() & rbd.RBD_FLAG_FAST_DIFF_INVALID:
        return None
    ours = [s for s in user_snaps(source) if s["name"].startswith(CLONE_SNAP_PREFIX)]
    if not ours:
        return None
    newest = max(ours, key=lambda s: s["id"])
    if newest["size"] != source.size():
        return None
    changed: list[int] = []
    source.diff_iterate(0, source.size(), newest["name"],
                        lambda off, length, exists: changed.append(off),
                        include_parent=False, whole_object=True)
    return None if changed else str(newest["name"])


def _adopt(pool: Pool, dst: ImageSpec, src: ImageSpec, source_meta: dict[str, str],
           meta: dict[str, str], identity: dict[str, str]) -> None:
    """``dst`` exists: fine if it is this clone (done, or interrupted before its metadata).

    librbd copies the parent's image-meta into a clone, so an interrupted clone carries the
    source's ownership record (or none), never one of its own.
    """
    with open_image(pool.ioctx, dst.name) as image:
        mine = ownership.read(image)
        if mine and all(mine.get(k) == v for k, v in identity.items()):
            return
        up = parent(image)
        if (not mine or mine == source_meta) and up is not None and \
                (up.pool, up.name) == (src.pool, src.name) and \
                (up.snap or "").startswith(CLONE_SNAP_PREFIX):
            ownership.apply(image, meta)  # our interrupted clone
            return
    raise ActionFailed(f"RBD image {dst} already exists and is not ours",
                       hint="it was left there by something else: check and remove it by hand")


def clone_image(pool: Pool, src: ImageSpec, dst: ImageSpec, *, new_snap: str,
                meta: dict[str, str], identity: dict[str, str], max_depth: int,
                grow_to: int = 0) -> int:
    """Clone ``src`` (an image) as ``dst`` in ``pool``; returns the chain depth of the result."""
    import rbd

    with pool.other(src.pool) as src_ioctx:
        with open_image(src_ioctx, src.name) as source:
            is_clone = parent(source) is not None
            reused = reusable_snapshot(source)
            snap = reused or f"{CLONE_SNAP_PREFIX}{new_snap}"
            if grow_to <= source.size():  # the snapshot has the image's size
                grow_to = 0
            origin = ImageSpec(src.pool, src.name, snap)
            try:  # the common case first: nothing there yet
                if snap not in snap_names(source):
                    source.create_snap(snap)
                    faults.point("clone:snapshot-taken")
                try:
                    clone(src_ioctx, origin, pool.ioctx, dst.name,
                          data_pool=pool.access.data_pool, meta=meta, grow_to=grow_to)
                except rbd.ImageNotFound:
                    if not reused:
                        raise
                    # a delete released the shared snapshot under us: take our own
                    snap = f"{CLONE_SNAP_PREFIX}{new_snap}"
                    origin = ImageSpec(src.pool, src.name, snap)
                    if snap not in snap_names(source):
                        source.create_snap(snap)
                    clone(src_ioctx, origin, pool.ioctx, dst.name,
                          data_pool=pool.access.data_pool, meta=meta, grow_to=grow_to)
            except rbd.ImageExists:
                _adopt(pool, dst, src, ownership.read(source), meta, identity)
        levels = depth(pool.cluster, src_ioctx, src.name) + 1 if is_clone else 1
        if levels <= max_depth:
            return levels
        log.info(f"clone chain would be {levels} deep (max {max_depth}): flattening {dst}")
        with open_image(pool.ioctx, dst.name) as new:
            up = parent(new)
            if up is not None:
                new.flatten()
        if up is not None and up.snap:
            release_parent(pool.cluster, up)
    return 0


def sweep_clone_snapshots(pool: Pool, source: ImageSpec, min_age: float = 300) -> int:
    """Remove our clone snapshots of ``source`` that nothing hangs from: what a delete that
    crashed after removing its clone left. Young ones are spared: a clone may be about to use
    them."""
    import datetime

    import rbd

    now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # librbd: naive UTC
    removed = 0
    with pool.other(source.pool) as ioctx:
        if not exists(ioctx, source.name):
            return 0
        with open_image(ioctx, source.name) as image:
            for snap in user_snaps(image):
                name = snap["name"]
                try:
                    if not name.startswith(CLONE_SNAP_PREFIX) or children(image, name):
                        continue
                    age = (now - image.get_snap_timestamp(snap["id"])).total_seconds()
                    if age >= min_age:
                        image.remove_snap(name)
                        removed += 1
                except rbd.ImageNotFound:
                    continue  # removed meanwhile by a concurrent delete
    return removed


def release_parent(cluster: Any, par: ImageSpec) -> None:
    """Drop our clone snapshot on ``par`` once nothing hangs from it; purge a hidden parent."""
    import rbd

    if par.snap and par.snap.startswith(CLONE_SNAP_PREFIX):
        ioctx = cluster.open_ioctx(par.pool)
        try:
            with open_image(ioctx, par.name) as image:
                if par.snap in snap_names(image) and not children(image, par.snap):
                    image.remove_snap(par.snap)
        except rbd.ImageNotFound:
            pass  # the image, or the snapshot, went with a concurrent delete: fine
        finally:
            ioctx.close()
    collect_parent(cluster, par)
