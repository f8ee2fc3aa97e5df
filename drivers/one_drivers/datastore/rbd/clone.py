"""DS ``clone`` (``oneimage clone``): instant, as a copy-on-write clone, yet independent.

Upstream does a full ``rbd copy`` (OpenNebula/one#881). We snapshot the source
(``one-drivers-clone-<NEW_ID>``, clone v2: no protection) and clone it; clones of an unchanged
source share its newest clone snapshot. The source stays deletable at any time: ``rm`` hides a
source that still has clones in the RBD trash and it is collected when its last clone goes.
Chains deeper than CLONE_MAX_DEPTH (default 5, as cinder) are flattened at once, so reads never
walk a long parent chain.

No staging name here (a rename costs as much as the clone): a clone interrupted before it got its
ownership metadata is recognised by its parent, one of our clone snapshots of the source.
Every step after the clone converges when re-run.
"""

from __future__ import annotations

from typing import Any

from one_drivers.ceph import ownership
from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import (
    ceph_errors,
    children,
    depth,
    open_image,
    parent,
    snap_names,
    user_snaps,
)
from one_drivers.ceph.rbd_ops import (
    clone as rbd_clone,
)
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed
from one_drivers.datastore.rbd.common import answer, ds_settings, target

CLONE_SNAP_PREFIX = "one-drivers-clone-"


def reusable_snapshot(source: Any) -> str | None:
    """The newest clone snapshot of ``source`` if nothing changed since it was taken.

    Golden images are cloned again and again; taking a snapshot per clone costs a monitor round
    trip each time. With fast-diff (the object map says which objects changed, without reading
    them) the check is one small read. Without a valid fast-diff we do not guess.
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


def adopt_existing(pool: Pool, dst: ImageSpec, origin: ImageSpec, meta: dict[str, str],
                   image_id: int) -> bool:
    """True if ``dst`` exists and is this clone (finished, or interrupted before its metadata);
    False if it does not exist; an error if it is someone else's."""
    import rbd

    try:
        with open_image(pool.ioctx, dst.name) as image:
            if ownership.read(image).get("image") == str(image_id):
                return True
            up = parent(image)
            if up is not None and (up.pool, up.name) == (origin.pool, origin.name) and \
                    (up.snap or "").startswith(CLONE_SNAP_PREFIX):  # our interrupted clone
                ownership.apply(image, meta)
                return True
    except rbd.ImageNotFound:
        return False
    raise ActionFailed(f"RBD image {dst} already exists and is not one-drivers' image "
                       f"{image_id}", hint="it was left there by something else: check and "
                       "remove it by hand, it is not ours to delete")


def clone(call: Call) -> str:
    settings = ds_settings(call)
    image = call.doc.image
    dst = target(call, settings)
    # oned passes the source image's SOURCE as the new image's PATH
    src = ImageSpec.parse(image.text("PATH"), settings.get("POOL_NAME"))
    max_depth = settings.int("CLONE_MAX_DEPTH", 5)
    meta = ownership.stamp("image", datastore=call.doc.datastore.id, image=image.id)

    with rbd_pool(settings, call.deadline, call.subject) as pool, \
            ceph_errors(f"cloning {src} to {dst}", call.subject), \
            pool.other(src.pool) as src_ioctx:
        import rbd

        with open_image(src_ioctx, src.name) as source:
            is_clone = parent(source) is not None
            snap = reusable_snapshot(source) or f"{CLONE_SNAP_PREFIX}{image.id}"
            origin = ImageSpec(src.pool, src.name, snap)
            try:  # the common case first: nothing there yet
                if snap not in snap_names(source):
                    source.create_snap(snap)
                rbd_clone(src_ioctx, origin, pool.ioctx, dst.name,
                          data_pool=pool.access.data_pool, meta=meta)
            except rbd.ImageExists:
                adopt_existing(pool, dst, origin, meta, image.id)
        levels = depth(pool.cluster, src_ioctx, src.name) + 1 if is_clone else 1
        if levels <= max_depth:
            log.info(f"cloned {src} copy-on-write ({levels} level(s) deep)")
            return answer(dst)
        log.info(f"clone chain would be {levels} deep (CLONE_MAX_DEPTH={max_depth}): flattening")
        with open_image(pool.ioctx, dst.name) as new:
            if parent(new) is not None:
                new.flatten()
        with open_image(src_ioctx, src.name) as source:
            if origin.snap in snap_names(source) and not children(source, origin.snap):
                source.remove_snap(origin.snap)
    return answer(dst)
