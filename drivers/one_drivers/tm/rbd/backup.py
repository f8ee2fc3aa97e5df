"""prebackup / postbackup (and their ``_live`` forms) for ``rbd`` disks.

prebackup takes ``one_backup_<n>`` on every disk the backup covers, all while the guest's file
systems are frozen (FS_FREEZE=AGENT) or the guest paused (SUSPEND) on the host where it runs, so
the disks agree with each other. A snapshot ``n`` left by an earlier, failed attempt is taken
again (it was never part of a backup); older backup snapshots other than the base ``n - 1`` of
an increment are dropped. Nothing is copied here for our backup datastore: it reads the
snapshots; for upstream's file datastores (rsync, restic) the files they copy are written from
the snapshots (:mod:`one_drivers.tm.rbd.backup_files`).

postbackup keeps what the next backup needs and nothing else: after a success, in INCREMENT mode
the new snapshot (the next increment's base), in FULL mode none; after a failure the new snapshot
goes and the previous base stays, so a failed backup never breaks the chain (#7937). User disk
snapshots are never touched (#8090).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from typing import Any

from one_drivers.ceph import backups
from one_drivers.ceph.rbd_ops import ceph_errors, open_image
from one_drivers.core import faults, log
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.errors import ActionFailed
from one_drivers.tm.rbd import backup_files
from one_drivers.tm.rbd.common import DiskContext, load


def _disks(call: Call) -> list[DiskContext]:
    from one_drivers.tm.rbd.placement import documents

    docs = documents(call)
    docs.vms[call.args["vmid"]] = call.doc  # the VM as oned gave it on stdin
    where: HostPath = call.args["vm_dir"]
    out = []
    for disk_id in backups.disk_ids(call.args["disks"]):
        out.append(load(call, HostPath(where.host, f"{where.path.rstrip('/')}/disk.{disk_id}")))
    return out


def _open_disks(call: Call, disks: list[DiskContext], stack: contextlib.ExitStack,
                snapshot: str | None = None) -> list[tuple[DiskContext, Any]]:
    """Each disk's image (at ``snapshot``, read-only), open; disks reached the same way share
    one Ceph session."""
    from one_drivers.ceph.pool import rbd_pool
    from one_drivers.ceph.session import CephAccess

    pools: dict[CephAccess, Any] = {}
    out = []
    for ctx in disks:
        settings = ctx.settings.over({"POOL_NAME": ctx.spec.pool})
        access = CephAccess.from_settings(settings)
        if access not in pools:
            pools[access] = stack.enter_context(rbd_pool(settings, call.deadline,
                                                         call.subject))
        with ceph_errors(f"opening {ctx.spec}", call.subject):
            out.append((ctx, stack.enter_context(open_image(
                pools[access].ioctx, ctx.spec.name, snapshot=snapshot,
                read_only=snapshot is not None))))
    return out


def _take(call: Call, disks: list[DiskContext], n: int, keep_base: int | None) -> None:
    """Everything is opened and an earlier attempt's snapshots dropped first: the guest stays
    frozen only while the snapshots are taken."""
    with contextlib.ExitStack() as stack:
        opened = _open_disks(call, disks, stack)
        for ctx, image in opened:
            with ceph_errors(f"dropping stale backup snapshots of {ctx.spec}", call.subject):
                for old, name in backups.backup_snaps(image).items():
                    if old != keep_base:  # an earlier attempt's n, or an abandoned chain's
                        image.remove_snap(name)
        with _quiesced(call, len(opened)):
            for ctx, image in opened:
                with ceph_errors(f"taking backup snapshot {n} of {ctx.spec}", call.subject):
                    image.create_snap(backups.snap_name(n))
                faults.point("prebackup:snapshot")
                log.info(f"{ctx.spec}@{backups.snap_name(n)} taken")


@contextlib.contextmanager
def _quiesced(call: Call, disks: int) -> Iterator[None]:
    """FS_FREEZE of the backup: the guest's file systems frozen through its agent (AGENT) or
    the guest paused (SUSPEND) while the snapshots are taken; thawed on every path.

    NONE on a live backup of several disks pauses the guest too (BACKUP_DISKS_AGREE): taken one
    after another, the snapshots of a running guest's disks would hold different moments (a
    write to the second disk that depends on one to the first, made after the first's
    snapshot). That is what an RBD group snapshot prevents by blocking I/O on every image at
    once; librbd 16 (Debian 12) cannot diff from a group snapshot, so increments could not be
    made from it, and a paused guest gives the same guarantee for the milliseconds it takes."""
    from one_drivers.tm.rbd.snapshots import _domain

    how = (call.doc.opt("BACKUPS/BACKUP_CONFIG/FS_FREEZE") or "NONE").upper()
    deploy_id = call.args["deploy_id"]
    if how == "NONE" and disks > 1 and call.action.endswith("_live") \
            and call.settings.bool("BACKUP_DISKS_AGREE", True):
        how = "SUSPEND"
    if how not in ("AGENT", "SUSPEND") or deploy_id in ("", "-"):
        yield
        return
    from one_drivers.core.retry import call_with_timeout

    host = call.args["vm_dir"].host
    timeout = call.deadline.cap(call.settings.float("FREEZE_TIMEOUT", 30), "freezing")
    dom = _domain(call, host, deploy_id)
    done = False
    try:
        if how == "AGENT":
            call_with_timeout(dom.fsFreeze, timeout=timeout, what="the guest's fsfreeze")
        else:
            call_with_timeout(dom.suspend, timeout=timeout, what="pausing the guest")
        done = True
        log.info(f"{'froze' if how == 'AGENT' else 'paused'} {deploy_id} for the snapshots")
    except Exception as exc:  # crash-consistent then, as upstream when it cannot freeze
        log.info(f"backup snapshots without FS_FREEZE={how}: {exc}")
    started = time.monotonic()
    try:
        yield
    finally:
        if done:
            thaw = dom.fsThaw if how == "AGENT" else dom.resume
            call_with_timeout(thaw, timeout=timeout, what="thawing the guest")
            log.info(f"{deploy_id} {'thawed' if how == 'AGENT' else 'resumed'} after "
                     f"{(time.monotonic() - started) * 1000:.0f} ms")


def prebackup(call: Call) -> None:
    p = backups.plan(call.doc)
    disks = _disks(call)
    if not all((ctx.settings.get("DISK_TYPE") or "RBD").upper() == "RBD" for ctx in disks):
        raise ActionFailed("only RBD disks can be backed up by tm/rbd")
    mad = backup_files.foreign_datastore(call)  # asked first: a failure takes nothing
    _take(call, disks, p.n, p.last if p.increment else None)
    if mad is not None:  # upstream's rsync / restic: they copy files from the host
        with contextlib.ExitStack() as stack:
            opened = _open_disks(call, disks, stack, snapshot=backups.snap_name(p.n))
            ids = backups.disk_ids(call.args["disks"])
            backup_files.write(call, mad, [(i, ctx, image) for i, (ctx, image)
                                           in zip(ids, opened, strict=True)], p)


prebackup_live = prebackup


def postbackup(call: Call) -> None:
    p = backups.plan(call.doc)
    bad = backups.failed(call.doc)
    with contextlib.ExitStack() as stack:
        for ctx, image in _open_disks(call, _disks(call), stack):
            with ceph_errors(f"dropping backup snapshots of {ctx.spec}", call.subject):
                snaps = backups.backup_snaps(image)
                if bad:  # keep the chain's base, drop what this attempt made
                    keep = {p.last} if p.increment else set()
                elif p.incremental:  # the newest is the next increment's base
                    keep = {max(snaps)} if snaps else set()
                else:
                    keep = set()
                for n, name in snaps.items():
                    if n not in keep:
                        image.remove_snap(name)
            log.info(f"{ctx.spec}: backup snapshots kept: {sorted(keep) or 'none'}")
    if backup_files.foreign_datastore(call) is not None:
        backup_files.remove(call)


postbackup_live = postbackup
