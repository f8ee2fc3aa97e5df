"""TM disk snapshots: snap_create, snap_revert, snap_delete.

Snapshots are named by their OpenNebula id and a revert rolls the disk back in place (no carrier
images, no parent chains), so every snapshot is independent of the others and stays deletable
after any sequence of reverts (upstream: OpenNebula/one#4840, #6807, #5185). That is what
ALLOW_ORPHANS=YES tells oned, which then lets any snapshot be deleted, the active one and one
with "children" included.
"""

from __future__ import annotations

import os
from typing import Any

from one_drivers.ceph import snapshots
from one_drivers.ceph.naming import snapshot_name
from one_drivers.ceph.pool import rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, open_image, snap_names
from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.tm.rbd.common import DiskContext, load


def _run(call: Call, verb: str, ctx: DiskContext | None = None) -> None:
    ctx = ctx or load(call, call.args["disk"])
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


def _domain(call: Call, host: str, deploy_id: str) -> Any:
    """The VM's libvirt domain on ``host`` (bounded: libvirt.open has no timeout of its own)."""
    import libvirt

    from one_drivers.core import remote
    from one_drivers.core.retry import call_with_timeout

    if remote.is_local(host):
        uri = call.settings.get("LIBVIRT_URI") or os.environ.get("LIBVIRT_DEFAULT_URI")
    else:
        uri = (call.settings.get("LIBVIRT_REMOTE_URI") or "qemu+ssh://{host}/system").format(
            host=host)
    timeout = call.deadline.cap(call.settings.float("LIBVIRT_TIMEOUT", 30), "opening libvirt")
    conn = call_with_timeout(libvirt.open, uri, timeout=timeout, what=f"libvirt at {uri}")
    return conn.lookupByUUIDString(deploy_id)


def snap_create_live(call: Call) -> None:
    """A snapshot of a running VM's disk, its file systems frozen through the guest agent when
    the VM has one (thawed on every path). Without an agent the snapshot is crash-consistent,
    as upstream's is when freezing fails."""
    from one_drivers.core.retry import call_with_timeout

    ctx = load(call, call.args["disk"])
    deploy_id = ctx.vm.deploy_id
    dom: Any = None
    frozen = False
    timeout = call.deadline.cap(call.settings.float("FREEZE_TIMEOUT", 30), "freezing")
    if deploy_id:
        try:
            dom = _domain(call, call.args["disk"].host, deploy_id)
            call_with_timeout(dom.fsFreeze, timeout=timeout, what="the guest's fsfreeze")
            frozen = True
            log.info(f"froze the file systems of {deploy_id}")
        except Exception as exc:  # no agent, no domain: a crash-consistent snapshot
            log.info(f"taking a crash-consistent snapshot: could not freeze the guest ({exc})")
    try:
        _run(call, "taking", ctx)
    finally:
        if frozen:
            call_with_timeout(dom.fsThaw, timeout=timeout, what="the guest's fsthaw")
            log.info(f"thawed the file systems of {deploy_id}")


def snap_revert(call: Call) -> None:
    _run(call, "reverting to")


def snap_delete(call: Call) -> None:
    _run(call, "deleting")
