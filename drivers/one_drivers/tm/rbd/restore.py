"""TM ``restore``: ``onevm restore`` in place, a powered-off VM's disks back to a backup.

Each disk becomes a copy-on-write clone of the backup's snapshot (``<pool>/one-backup-<vm>-
<chain>-<disk>@<increment>``): instant at any size, on the same cluster. The clone is made under
a staging name, then the current disk is moved aside and the clone takes its name, then the old
disk goes; a re-run after a crash at any step finishes the swap. The disk keeps its ownership
record (what may delete it stays the same). A backup on another cluster than the disk's is
refused with a clear line (a streamed copy is not done yet).
"""

from __future__ import annotations

from typing import Any

from one_drivers.ceph import backups, ownership
from one_drivers.ceph.cloning import release_parent
from one_drivers.ceph.naming import ImageSpec, staging_name
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import (
    ceph_errors,
    clone,
    exists,
    open_image,
    parent,
    remove_image,
)
from one_drivers.core import faults, log
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.tm.rbd.common import load, oned_for

OLD_SUFFIX = ".one-drivers-old"


def restore(call: Call) -> None:
    oned = oned_for(call).oned
    if oned is None:
        raise BadInput("restore needs oned")
    backup = oned.image(call.args["backup_image_id"])
    chain = backups.increment(backup, call.args["increment_id"])
    inc = chain.n
    where: HostPath = call.args["vm_dir"]
    wanted = call.args["disk_id"]
    vm = oned_for(call).vm(call.args["vmid"])
    disk_ids = [d.disk_id for d in vm.disks() if wanted < 0 or d.disk_id == wanted]
    histories = vm.elem.findall("HISTORY_RECORDS/HISTORY/DS_ID")  # the system datastore now
    system_ds = (histories[-1].text or "").strip() or None if histories else None
    restored = 0
    for disk_id in disk_ids:
        ctx = load(call, HostPath(where.host, f"{where.path.rstrip('/')}/disk.{disk_id}"),
                   datastore_id=system_ds)
        settings = ctx.settings.over({"POOL_NAME": ctx.spec.pool})
        with rbd_pool(settings, call.deadline, call.subject) as pool, \
                ceph_errors(f"restoring {ctx.spec} from {chain}", call.subject), \
                pool.other(chain.pool) as bio:
            if not exists(bio, chain.image(disk_id)):
                continue  # not in this backup (a volatile disk, a CD-ROM)
            _swap(pool, bio, ctx.spec, ImageSpec(chain.pool, chain.image(disk_id), str(chain.n)))
        restored += 1
        log.info(f"{ctx.spec} restored from {chain.pool}/{chain.image(disk_id)}@{chain.n}")
    if not restored:
        raise ActionFailed(f"backup {backups.BackupId(chain.pool, chain.base, inc)} holds none "
                           f"of the VM's disks {disk_ids} in the disks' cluster",
                           hint="a backup kept on another Ceph cluster cannot be restored in "
                                "place yet: restore it to new images")


def _swap(pool: Pool, bio: Any, disk: ImageSpec, source: ImageSpec) -> None:
    import rbd

    io = pool.ioctx
    new, old = staging_name(disk.name), disk.name + OLD_SUFFIX
    if not exists(io, disk.name) and exists(io, new):  # a crash after moving the old aside
        rbd.RBD().rename(io, new, disk.name)
    if not exists(io, disk.name):
        raise ActionFailed(f"{disk} does not exist: nothing to restore into")
    with open_image(io, disk.name, read_only=True) as current:
        meta = ownership.read(current)
        size = current.size()
    if exists(io, new):  # an earlier attempt's clone: made again from this backup
        remove_image(pool.cluster, io, new, abandoned=True)
    clone(bio, source, io, new, data_pool=pool.access.data_pool, meta=meta, grow_to=size)
    faults.point("restore:cloned")
    if exists(io, old):
        remove_image(pool.cluster, io, old, abandoned=True)
    rbd.RBD().rename(io, disk.name, old)
    faults.point("restore:moved-aside")
    rbd.RBD().rename(io, new, disk.name)
    parents: list[ImageSpec | None] = []
    remove_image(pool.cluster, io, old, opened=lambda image: parents.append(parent(image)))
    if parents and parents[0] is not None:  # the old disk's clone snapshot, if it was the last
        release_parent(pool.cluster, parents[0])
