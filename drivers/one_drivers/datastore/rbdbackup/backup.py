"""backup, increment_flatten and rm of the ``rbdbackup`` datastore (layout: :mod:`one_drivers.
ceph.backups`).

backup runs on the front-end after the TM's prebackup took ``one_backup_<n>`` on each disk: a
full backup (FULL mode, or an INCREMENT chain's first) makes one image per disk under a staging
name with the disk's allocated data and snapshot ``n``, renamed when complete; an increment
writes into the chain's images only what changed between ``one_backup_<n-1>`` and
``one_backup_<n>`` on the disk (data read, holes discarded) and snapshots ``n``. A re-run after a
crash first rolls an image back to ``n - 1`` when an interrupted increment had started writing,
and an increment already committed is not written twice. The disks are read with their own
datastore's Ceph user, the backups written with the backup datastore's: the two may be
different clusters.
"""

from __future__ import annotations

import math
import re
import secrets
from collections.abc import Callable
from typing import Any

from one_drivers.ceph import backups, ownership
from one_drivers.ceph.backups import BackupId
from one_drivers.ceph.copying import copy_extents, extents
from one_drivers.ceph.naming import ImageSpec, staging_name
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, open_image, remove_image
from one_drivers.core import faults, log
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.documents import VM, Disk
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.core.oned import Oned
from one_drivers.core.xmlview import XmlView
from one_drivers.datastore.rbdbackup import running

MIB = 1 << 20


def _settings(call: Call) -> Settings:
    return call.settings.over(call.doc.datastore.template)


def _oned(call: Call) -> Oned:
    return Oned(timeout=call.deadline.cap(call.settings.float("ONED_TIMEOUT", 15), "asking oned"))


def _disk_settings(call: Call, vm: VM, disk: Disk) -> Settings:
    """The disk's own Ceph access (inherited from its datastore onto the DISK); a volatile
    disk's pool is its system datastore's."""
    from one_drivers.core.registry import get_driver

    base = Settings([get_driver("tm", "rbd").default_values()], subject=call.subject)
    if disk.source is None:  # volatile: POOL_NAME and access of the system datastore
        base = base.over(_oned(call).datastore(call.args["dsid"]).template)
    return base.over(disk)


def _sweep_staging(pool: Pool, vmid: int) -> None:
    """A crashed full backup of this VM left its staging images (one backup per VM at a time:
    oned never runs two)."""
    import rbd

    pattern = re.compile(rf"^one-backup-{vmid}-[a-z0-9]+-\d+{re.escape(staging_name(''))}$")
    for name in rbd.RBD().list(pool.ioctx):
        if pattern.match(name):
            with open_image(pool.ioctx, name, read_only=True) as image:
                meta = ownership.read(image)
            if meta.get("kind") == "backup" and meta.get("vm") == str(vmid):
                log.info(f"removing {pool.name}/{name} left by an interrupted backup")
                remove_image(pool.cluster, pool.ioctx, name, abandoned=True)


def _chain(call: Call, plan: backups.Plan, pool_name: str) -> BackupId:
    if not plan.increment:
        return BackupId(pool_name, f"one-backup-{call.args['vmid']}-{secrets.token_hex(4)}", 0)
    source = _oned(call).image(plan.chain_image).source or ""
    chain = BackupId.parse(source)
    return chain._replace(n=plan.n)


def backup(call: Call) -> str:
    from one_drivers.ceph.build import build_image
    from one_drivers.ceph.session import CephAccess, CephSession

    vm: VM = call.doc.vm
    vmid = call.args["vmid"]
    plan = backups.plan(vm)
    settings = _settings(call)
    chain = _chain(call, plan, settings.get("POOL_NAME", "one-backups") or "one-backups")
    snap, base = backups.snap_name(plan.n), backups.snap_name(plan.n - 1)
    total = 0
    with running.registered(call.settings, vmid), \
            rbd_pool(settings.over({"POOL_NAME": chain.pool}), call.deadline, call.subject,
                     creating=True) as bpool:
        if not plan.increment:
            _sweep_staging(bpool, vmid)
        for disk_id in backups.disk_ids(call.args["disks"]):
            disk = vm.disk(disk_id)
            if disk is None:
                raise BadInput(f"VM {vmid} has no DISK_ID={disk_id}")
            from one_drivers.tm.rbd.common import disk_image

            dset = _disk_settings(call, vm, disk)
            spec, _, _ = disk_image(vmid, disk, dset)
            access = CephAccess.from_settings(dset.over({"POOL_NAME": spec.pool}))
            target = ImageSpec(chain.pool, chain.image(disk_id))
            with CephSession(access, call.deadline, subject=call.subject) as src_ceph, \
                    ceph_errors(f"reading {spec}@{snap}", call.subject):
                src_io = src_ceph.cluster.open_ioctx(spec.pool)
                try:
                    with open_image(src_io, spec.name, snapshot=snap, read_only=True) as src:
                        if plan.increment:
                            total += _increment(bpool, target, src, base, plan.n, call)
                        else:
                            total += _full(bpool, target, src, plan.n, call, build_image,
                                           ownership.stamp("backup", vm=vmid, disk=disk_id,
                                                           chain=chain.base))
                finally:
                    src_io.close()
            faults.point("backup:disk-done")
            log.info(f"disk {disk_id}: {spec}@{snap} -> {target}@{plan.n}")
        _keep_template(bpool, chain, vm)
    return f"{chain} {max(1, math.ceil(total / MIB))} raw"


VM_META = "one_drivers_vm_{n}"  # the VM's template at backup n, for a restore to new images


def _keep_template(pool: Pool, chain: BackupId, vm: VM) -> None:
    """The VM's TEMPLATE as it was at this backup, on the chain's first image (what a restore
    to new images makes the VM template from); a backup's own metadata, not snapshotted."""
    import xml.etree.ElementTree as ET

    first = sorted(backups.chain_images(pool.ioctx, chain.base))[:1]
    template = vm.elem.find("TEMPLATE")
    if not first or template is None:
        return
    with open_image(pool.ioctx, first[0]) as image:
        image.metadata_set(VM_META.format(n=chain.n), ET.tostring(template, encoding="unicode"))


def _full(pool: Pool, target: ImageSpec, src: Any, n: int, call: Call,
          build_image: Callable[..., bool], meta: dict[str, str]) -> int:
    from one_drivers.ceph.rbd_ops import create

    written = [0]

    def make(name: str, stamp: dict[str, str]) -> None:
        create(pool.ioctx, name, src.size(), data_pool=pool.access.data_pool, meta=stamp)
        with open_image(pool.ioctx, name) as dst:
            written[0] = copy_extents(src, dst, extents(src))
            dst.create_snap(str(n))

    build_image(pool, target, meta=meta, identity=("vm", "disk", "chain"), make=make,
                subject=call.subject, seconds=call.deadline.remaining())
    return written[0]


def _increment(pool: Pool, target: ImageSpec, src: Any, base: str, n: int, call: Call) -> int:
    with ceph_errors(f"writing increment {n} into {target}", call.subject), \
            open_image(pool.ioctx, target.name) as dst:
        have = {s["name"] for s in dst.list_snaps()}
        if str(n) in have:
            log.info(f"{target}@{n} is already there")
            return 0
        if str(n - 1) not in have:
            raise ActionFailed(f"{target} has no increment {n - 1} to continue from",
                               hint="the chain is broken: take a full backup (reset the "
                                    "VM's incremental chain)")
        _take_over(dst, target)
        dirty: list[int] = []  # an interrupted run wrote after n - 1: start again from it
        dst.diff_iterate(0, dst.size(), str(n - 1), lambda off, ln, ex: dirty.append(off),
                         whole_object=True)  # whether, not where: the object map answers
        if dirty:
            log.info(f"{target}: rolling back an interrupted increment to {n - 1}")
            dst.rollback_to_snap(str(n - 1))
        if src.size() > dst.size():
            dst.resize(src.size())
        written = copy_extents(src, dst, extents(src, base))
        faults.point("backup:increment-written")
        dst.create_snap(str(n))
    return written


def _take_over(image: Any, target: ImageSpec) -> None:
    """An interrupted backup of this VM may still hold the image's exclusive lock (its watch
    outlives it for a while): the chain is this VM's alone and oned runs one backup of a VM at
    a time, so the holder is that dead attempt. Its lock is broken, which fences it in Ceph
    (blocklisted) should it be alive after all, rather than waiting for its watch to expire."""
    for owner in list(image.lock_get_owners()):
        log.info(f"{target}: taking over the lock of an interrupted backup ({owner['owner']})")
        image.lock_break(owner["mode"], owner["owner"])


def increment_flatten(call: Call) -> str:
    """KEEP_LAST for an INCREMENT chain: the oldest increments go, the first kept one becomes
    the full backup. Snapshot ``n`` is already the whole disk at ``n``: only older snapshots are
    dropped, nothing is copied."""
    image = call.doc.image
    keep = int(call.doc.opt("EXTRA_DATA/KEEP_LAST") or 0)
    incs = sorted(((int(i.opt("ID") or -1), i.opt("SOURCE") or "")
                   for i in image.children("BACKUP_INCREMENTS/INCREMENT", XmlView)),
                  key=lambda x: x[0])
    kept = incs if keep <= 0 or len(incs) <= keep else incs[-keep:]
    first = BackupId.parse(kept[0][1]) if kept else None
    size = 0
    if first is not None:
        with rbd_pool(_settings(call).over({"POOL_NAME": first.pool}), call.deadline,
                      call.subject) as pool, ceph_errors("dropping old increments", call.subject):
            for name in backups.chain_images(pool.ioctx, first.base):
                with open_image(pool.ioctx, name) as img:
                    for s in list(img.list_snaps()):
                        if s["name"].isdigit() and int(s["name"]) < first.n:
                            img.remove_snap(s["name"])
                with open_image(pool.ioctx, name, snapshot=str(first.n), read_only=True) as img:
                    size += sum(n for _, n, _ in extents(img))
    chain = ",".join(f"{i}:{src}" for i, src in kept)
    return f"{max(1, math.ceil(size / MIB))} {chain}"


def rm(call: Call) -> None:
    """A backup image: every image of its chain, with all its increments."""
    source = call.doc.image.source or ""
    chain = BackupId.parse(source)
    with rbd_pool(_settings(call).over({"POOL_NAME": chain.pool}), call.deadline,
                  call.subject) as pool, ceph_errors(f"removing {chain}", call.subject):
        for name in list(backups.chain_images(pool.ioctx, chain.base)):
            with open_image(pool.ioctx, name, read_only=True) as image:
                meta = ownership.read(image)
            if meta.get("kind") != "backup" or meta.get("chain") != chain.base:
                log.info(f"{pool.name}/{name} is not this chain's: kept")
                continue
            remove_image(pool.cluster, pool.ioctx, name)
            log.info(f"removed {pool.name}/{name}")


def stat(call: Call) -> str:
    """The size in MB of the backup a PATH names: one disk's (``rbd://backup[-<datastore>]/
    <pool>/<image>@<n>``, what a restore gives) or a whole backup's (``<pool>/one-backup-<vm>-
    <chain>@<n>``, a BACKUP image's SOURCE: its disks summed), read in this datastore."""
    from one_drivers.datastore.rbd.sources import parse_rbd_url

    path = call.doc.image.path or call.doc.image.source or ""
    if path.lower().startswith("rbd://"):
        spec = parse_rbd_url(path)
        pool_name, names, snap = spec.pool, [spec.name], spec.snap
        if snap is None:
            raise BadInput(f"{path} names no backup snapshot (@<n>)")
    else:
        chain = BackupId.parse(path)
        pool_name, names, snap = chain.pool, None, str(chain.n)
    total = 0
    with rbd_pool(_settings(call).over({"POOL_NAME": pool_name}), call.deadline,
                  call.subject) as pool, ceph_errors(f"reading {path}", call.subject):
        if names is None:
            names = sorted(backups.chain_images(pool.ioctx, BackupId.parse(path).base))
        if not names:
            raise BadInput(f"{path}: no such backup in {pool_name}")
        for name in names:
            with open_image(pool.ioctx, name, snapshot=snap, read_only=True) as image:
                total += image.size()
    return str(math.ceil(total / MIB))
