"""DS ``snap_revert``, ``snap_delete``, ``snap_flatten`` on a persistent image's snapshots
(IMAGE/TARGET_SNAPSHOT names the OpenNebula snapshot id)."""

from __future__ import annotations

from one_drivers.ceph import snapshots
from one_drivers.ceph.naming import snapshot_name
from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.datastore.rbd.common import ds_settings, source_spec


def _run(call: Call, verb: str) -> None:
    settings = ds_settings(call)
    spec = source_spec(call, settings)
    snap = snapshot_name(call.doc.image.target_snapshot)
    with rbd_pool(settings.over({"POOL_NAME": spec.pool}), call.deadline, call.subject) as pool, \
            ceph_errors(f"{verb} snapshot {snap} of {spec}", call.subject):
        if verb == "reverting to":
            snapshots.revert(pool, spec, snap)
        elif verb == "deleting":
            if not snapshots.delete(pool, spec, snap):
                log.info(f"snapshot {snap} of {spec} is already gone")
        else:
            snapshots.flatten(pool, spec, snap)


def snap_revert(call: Call) -> None:
    _run(call, "reverting to")


def snap_delete(call: Call) -> None:
    _run(call, "deleting")


def snap_flatten(call: Call) -> None:
    _run(call, "flattening to")
