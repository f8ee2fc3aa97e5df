"""DS ``clone`` (``oneimage clone``): instant, as a copy-on-write clone, yet independent.

Upstream does a full ``rbd copy`` (OpenNebula/one#881). Ours is a clone v2 of the source (see
:mod:`one_drivers.ceph.cloning`). The source stays deletable at any time: ``rm`` hides a source
that still has clones in the RBD trash and it is collected when its last clone goes. Chains deeper
than CLONE_MAX_DEPTH (default 5, as cinder) are flattened at once.
"""

from __future__ import annotations

from one_drivers.ceph import ownership
from one_drivers.ceph.cloning import clone_image
from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.datastore.rbd.common import answer, ds_settings, target


def clone(call: Call) -> str:
    settings = ds_settings(call)
    image = call.doc.image
    dst = target(call, settings)
    # oned passes the source image's SOURCE as the new image's PATH
    src = ImageSpec.parse(image.text("PATH"), settings.get("POOL_NAME"))
    meta = ownership.stamp("image", datastore=call.doc.datastore.id, image=image.id)
    with rbd_pool(settings, call.deadline, call.subject, creating=True) as pool, \
            ceph_errors(f"cloning {src} to {dst}", call.subject):
        levels = clone_image(pool, src, dst, new_snap=str(image.id), meta=meta,
                             identity={"image": str(image.id)},
                             max_depth=settings.int("CLONE_MAX_DEPTH", 5))
    log.info(f"cloned {src} copy-on-write ({levels} level(s) deep)" if levels
             else f"copied {src} (flattened: the clone chain was too deep)")
    return answer(dst)
