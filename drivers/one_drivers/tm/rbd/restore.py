"""TM ``restore``: ``onevm restore`` in place, a powered-off VM's disks back to a backup.

Each disk becomes a copy-on-write clone of the backup's snapshot (``<pool>/one-backup-<vm>-
<chain>-<disk>@<increment>``): instant at any size, on the same cluster. The clone is made under
a staging name, then the current disk is moved aside and the clone takes its name, then the old
disk goes; a re-run after a crash at any step finishes the swap. The disk keeps its ownership
record (what may delete it stays the same). A backup kept on another cluster than the disk's
(its backup datastore's CEPH_CONF) is copied into the staging image instead, read with the
backup datastore's Ceph access, then swapped in the same way.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable
from typing import Any

from one_drivers.ceph import backups, ownership
from one_drivers.ceph.cloning import release_parent
from one_drivers.ceph.copying import copy_extents, extents
from one_drivers.ceph.naming import ImageSpec, staging_name
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import (
    ceph_errors,
    clone,
    create,
    exists,
    open_image,
    parent,
    remove_image,
)
from one_drivers.ceph.session import same_cluster
from one_drivers.core import faults, log
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.datastore.rbdbackup.access import backup_settings
from one_drivers.tm.rbd.common import load, oned_for

OLD_SUFFIX = ".one-drivers-old"


def restore(call: Call) -> None:
    oned = oned_for(call).oned
    if oned is None:
        raise BadInput("restore needs oned")
    backup = oned.image(call.args["backup_image_id"])
    chain = backups.increment(backup, call.args["increment_id"])
    where: HostPath = call.args["vm_dir"]
    wanted = call.args["disk_id"]
    vm = oned_for(call).vm(call.args["vmid"])
    disk_ids = [d.disk_id for d in vm.disks() if wanted < 0 or d.disk_id == wanted]
    histories = vm.elem.findall("HISTORY_RECORDS/HISTORY/DS_ID")  # the system datastore now
    system_ds = (histories[-1].text or "").strip() or None if histories else None
    backup_ds = backup.opt("DATASTORE_ID")
    bsettings = (backup_settings(int(backup_ds), call.deadline,
                                 call.settings.float("ONED_TIMEOUT", 15), call.subject)
                 .over({"POOL_NAME": chain.pool}) if backup_ds is not None else None)
    restored = 0
    for disk_id in disk_ids:
        ctx = load(call, HostPath(where.host, f"{where.path.rstrip('/')}/disk.{disk_id}"),
                   datastore_id=system_ds)
        settings = ctx.settings.over({"POOL_NAME": ctx.spec.pool})
        source = ImageSpec(chain.pool, chain.image(disk_id), str(chain.n))
        remote_backup = bsettings if bsettings is not None and not same_cluster(
            bsettings, settings) else None
        with contextlib.ExitStack() as stack:
            pool = stack.enter_context(rbd_pool(settings, call.deadline, call.subject))
            stack.enter_context(ceph_errors(f"restoring {ctx.spec} from {chain}", call.subject))
            if remote_backup is None:  # read with the disk's own user, as the clone's QEMU
                bio = stack.enter_context(pool.other(chain.pool))
            else:
                bio = stack.enter_context(rbd_pool(remote_backup, call.deadline,
                                                   call.subject)).ioctx
            if not exists(bio, source.name):
                continue  # not in this backup (a volatile disk, a CD-ROM)
            make = _stream if remote_backup else _clone
            _swap(pool, ctx.spec, functools.partial(make, bio, source))
        restored += 1
        log.info(f"{ctx.spec} restored from {source}"
                 + (" (streamed from the backup datastore's cluster)" if remote_backup else ""))
    if not restored:
        raise ActionFailed(f"backup {chain} holds none of the VM's disks {disk_ids}")


Make = Callable[[Pool, str, dict[str, str], int], None]  # (pool, name, ownership, size)


def _clone(bio: Any, source: ImageSpec, pool: Pool, name: str, meta: dict[str, str],
           size: int) -> None:
    """The backup's snapshot on the disk's own cluster: a clone, instant at any size."""
    clone(bio, source, pool.ioctx, name, data_pool=pool.access.data_pool, meta=meta,
          grow_to=size)


def _stream(bio: Any, source: ImageSpec, pool: Pool, name: str, meta: dict[str, str],
            size: int) -> None:
    """The backup on another cluster: its data copied into a new image here."""
    with open_image(bio, source.name, snapshot=source.snap, read_only=True) as src:
        create(pool.ioctx, name, max(size, src.size()), data_pool=pool.access.data_pool,
               meta=meta)
        with open_image(pool.ioctx, name) as dst:
            copy_extents(src, dst, extents(src))


def _swap(pool: Pool, disk: ImageSpec, make: Make) -> None:
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
    if exists(io, new):  # an earlier attempt's copy: made again from this backup
        remove_image(pool.cluster, io, new, abandoned=True)
    make(pool, new, meta, size)
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
