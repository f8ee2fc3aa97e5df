"""DS ``clone`` (``oneimage clone``): instant, as a copy-on-write clone, yet independent.

Upstream does a full ``rbd copy`` (OpenNebula/one#881). We snapshot the source
(``one-drivers-clone-<NEW_ID>``, clone v2: no protection) and clone it. The source stays deletable
at any time: ``rm`` hides a source that still has clones in the RBD trash and it is collected when
its last clone goes. Chains deeper than CLONE_MAX_DEPTH (default 5, as cinder) are flattened at
once, so reads never walk a long parent chain.
"""

from __future__ import annotations

from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import children, depth, open_image, parent, snap_names
from one_drivers.ceph.rbd_ops import clone as rbd_clone
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.datastore.rbd.build import build_image
from one_drivers.datastore.rbd.common import answer, ds_settings, target

CLONE_SNAP_PREFIX = "one-drivers-clone-"


def clone(call: Call) -> str:
    settings = ds_settings(call)
    image = call.doc.image
    dst = target(call, settings)
    # oned passes the source image's SOURCE as the new image's PATH
    src = ImageSpec.parse(image.text("PATH"), settings.get("POOL_NAME"))
    snap = f"{CLONE_SNAP_PREFIX}{image.id}"
    max_depth = settings.int("CLONE_MAX_DEPTH", 5)

    with rbd_pool(settings, call.deadline, call.subject) as pool:

        def make(name: str, meta: dict[str, str]) -> None:
            with pool.other(src.pool) as src_ioctx:
                with open_image(src_ioctx, src.name) as source:
                    if snap not in snap_names(source):
                        source.create_snap(snap)
                    is_clone = parent(source) is not None
                levels = depth(pool.cluster, src_ioctx, src.name) + 1 if is_clone else 1
                rbd_clone(src_ioctx, ImageSpec(src.pool, src.name, snap), pool.ioctx, name,
                          data_pool=pool.access.data_pool, meta=meta)
                if levels <= max_depth:
                    log.info(f"cloned {src} copy-on-write ({levels} level(s) deep)")
                    return
                log.info(f"clone chain would be {levels} deep (CLONE_MAX_DEPTH={max_depth}): "
                         "flattening")
                with open_image(pool.ioctx, name) as new:
                    new.flatten()
                with open_image(src_ioctx, src.name) as source:
                    if not children(source, snap):
                        source.remove_snap(snap)

        build_image(pool, dst, image_id=image.id, datastore_id=call.doc.datastore.id,
                    make=make, subject=call.subject)
    return answer(dst)
