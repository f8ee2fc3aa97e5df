"""TM disk snapshots: snap_create, snap_revert, snap_delete.

OpenNebula's core keeps the snapshot tree (ALLOW_ORPHANS=mixed); the storage only has to make
every operation the core allows work: snapshots are named by their OpenNebula id, a revert rolls
the disk back in place (no carrier images, no parent chains), so every snapshot stays deletable
after any sequence of reverts (upstream: OpenNebula/one#4840, #6807, #5185).
"""

from __future__ import annotations

from one_drivers.ceph import snapshots
from one_drivers.ceph.naming import snapshot_name
from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, open_image, snap_names
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.tm.rbd.common import load


def _run(call: Call, verb: str) -> None:
    ctx = load(call, call.args["disk"])
    snap = snapshot_name(call.args["snap_id"])
    settings = ctx.settings.over({"POOL_NAME": ctx.spec.pool})
    with rbd_pool(settings, call.deadline, call.subject) as pool, \
            ceph_errors(f"{verb} snapshot {snap} of {ctx.spec}", call.subject):
        if verb == "taking":
            with open_image(pool.ioctx, ctx.spec.name) as image:
                if snap in snap_names(image):
                    log.info(f"{ctx.spec}@{snap} already exists")
                else:
                    image.create_snap(snap)
        elif verb == "reverting to":
            snapshots.revert(pool, ctx.spec, snap)
        elif not snapshots.delete(pool, ctx.spec, snap):
            log.info(f"snapshot {snap} of {ctx.spec} is already gone")


def snap_create(call: Call) -> None:
    _run(call, "taking")


def snap_revert(call: Call) -> None:
    _run(call, "reverting to")


def snap_delete(call: Call) -> None:
    _run(call, "deleting")
