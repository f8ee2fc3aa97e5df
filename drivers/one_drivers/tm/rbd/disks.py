"""TM disk actions: clone, ln, mkimage, mkswap, delete, resize, mvds, cpds.

Disks live in Ceph, not on the host: none of these touch the host (the VMM's deploy makes the VM
directory), so none pays for an ssh session.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager

from one_drivers.ceph import ownership
from one_drivers.ceph.build import build_image
from one_drivers.ceph.cloning import clone_image, release_parent, sweep_clone_snapshots
from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.ownership import stamp
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import (
    ceph_errors,
    create,
    exists,
    open_image,
    parent,
    refuse_if_watched,
    remove_image,
)
from one_drivers.core import faults, log
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.errors import ActionFailed, BadInput, NotFound
from one_drivers.tm.rbd.common import DiskContext, load

MIB = 1024 * 1024
LCM_DISK_RESIZE = 62  # a running VM's disk resize: libvirt's block resize grows the image


def _pool(call: Call, ctx: DiskContext, pool_name: str | None = None, *,
          creating: bool = False) -> AbstractContextManager[Pool]:
    settings = ctx.settings.over({"POOL_NAME": pool_name or ctx.spec.pool})
    return rbd_pool(settings, call.deadline, call.subject, creating=creating)


def _grow(pool: Pool, name: str, size_mb: int | None) -> None:
    if not size_mb:
        return
    with open_image(pool.ioctx, name) as image:
        if image.size() < size_mb * MIB:
            image.resize(size_mb * MIB)
            log.info(f"resized {pool.name}/{name} to {size_mb} MB")


def clone(call: Call) -> None:
    """The non-persistent disk ``SOURCE-<VM>-<DISK>`` as a copy-on-write clone of the image."""
    ctx = load(call, call.args["dst"])
    if ctx.kind != "clone" or ctx.source is None:
        raise BadInput(f"disk {ctx.disk.disk_id} is not a clone (CLONE={ctx.disk.opt('CLONE')})",
                       hint="oned sends LN for persistent disks")
    vmid, disk_id = call.args["vmid"], ctx.disk.disk_id
    meta = stamp("clone", vm=vmid, disk=disk_id, datastore=call.args["dsid"],
                 image=ctx.disk.image_id)
    with _pool(call, ctx, creating=True) as pool, \
            ceph_errors(f"cloning {ctx.source} to {ctx.spec}", call.subject):
        levels = clone_image(pool, ctx.source, ctx.spec, new_snap=f"vm{vmid}-{disk_id}",
                             meta=meta, identity={"vm": str(vmid), "disk": str(disk_id)},
                             max_depth=ctx.settings.int("CLONE_MAX_DEPTH", 5),
                             grow_to=(ctx.disk.size_mb or 0) * MIB)
    log.info(f"{ctx.spec}: copy-on-write clone of {ctx.source}"
             + (f" ({levels} level(s) deep)" if levels else " (flattened)"))


def ln(call: Call) -> None:
    """A persistent disk is the image itself: it only has to exist."""
    ctx = load(call, call.args["dst"])
    with _pool(call, ctx) as pool, ceph_errors(f"checking {ctx.spec}", call.subject):
        if not exists(pool.ioctx, ctx.spec.name):
            raise NotFound(f"persistent image {ctx.spec} does not exist")


def _volatile(call: Call, fs_of: Callable[[DiskContext], str | None]) -> None:
    ctx = load(call, call.args["dst"])
    fs = fs_of(ctx)
    if ctx.kind != "volatile":
        raise BadInput(f"disk {ctx.disk.disk_id} has a SOURCE: it is not a volatile disk")
    disk_type = (ctx.disk.opt("DISK_TYPE") or "RBD").upper()
    if disk_type != "RBD":  # oned takes it from the system datastore (FILE unless set there)
        raise BadInput(f"volatile disk {ctx.disk.disk_id} is DISK_TYPE {disk_type}: the "
                       "deployment file would look for a file in the VM directory, not the RBD "
                       "image this datastore makes",
                       hint=f'set DISK_TYPE="RBD" in system datastore {call.args["dsid"]}\'s '
                            "template (onedatastore update)")
    size = call.args["size_mb"] * MIB
    if size <= 0:
        raise BadInput(f"size is {call.args['size_mb']} MB")
    from pathlib import Path  # volatile disks only: formatting needs files

    from one_drivers.ceph.formatting import check_supported, format_into

    if fs:
        check_supported(fs, ctx.settings.get("SUPPORTED_FS"))
    vmid, disk_id = call.args["vmid"], ctx.disk.disk_id
    staging_dir = Path(ctx.settings.get("STAGING_DIR", "/var/tmp") or "/var/tmp")
    with _pool(call, ctx, creating=True) as pool:

        def make(name: str, meta: dict[str, str]) -> None:
            create(pool.ioctx, name, size, data_pool=pool.access.data_pool, meta=meta)
            if fs:
                format_into(pool.ioctx, name, size, fs, staging_dir, call.deadline)

        build_image(pool, ctx.spec, meta=stamp("volatile", vm=vmid, disk=disk_id,
                                               datastore=call.args["dsid"]),
                    identity=("vm", "disk"), make=make, subject=call.subject,
                    seconds=call.deadline.remaining())
    log.info(f"{ctx.spec}: {call.args['size_mb']} MB volatile disk"
             + (f" ({fs})" if fs else ""))


def mkimage(call: Call) -> None:
    """A volatile disk ``one-sys-<VM>-<DISK>``, formatted when the disk has FS (or is swap)."""
    if (call.args["format"] or "").lower() == "swap":
        _volatile(call, lambda ctx: "swap")
    else:
        _volatile(call, lambda ctx: (ctx.disk.opt("FS") or "").lower() or None)


def mkswap(call: Call) -> None:
    _volatile(call, lambda ctx: "swap")


def delete(call: Call) -> None:
    """A clone or volatile disk with its snapshots (RBD trash with CEPH_TRASH=yes); never a
    persistent image. For the VM directory: the directory on the host and the checkpoint."""
    where: HostPath = call.args["dst"]
    if where.disk_index is None:
        from one_drivers.tm.rbd.vmdir import delete_vm_dir  # the host side: ssh and friends

        delete_vm_dir(call, where)
        return
    try:
        ctx = load(call, where)
    except NotFound:
        log.info(f"VM {call.args['vmid']} is unknown to oned: nothing to delete")
        return
    if ctx.kind == "persistent":
        log.info(f"{ctx.spec} is the persistent image itself: kept")
        return
    import rbd

    with _pool(call, ctx) as pool, ceph_errors(f"removing {ctx.spec}", call.subject):
        if exists(pool.ioctx, ctx.spec.name):
            check_disk_is_ours(pool, ctx, call.args["vmid"])
        refuse_if_watched(pool.cluster, pool.ioctx, ctx.spec.name, call.deadline,
                          ctx.settings.float("WATCHER_WAIT", 10))
        deferred = (ctx.settings.get("DELETE_MODE", "now") or "now").lower() == "deferred"
        if ctx.settings.bool("CEPH_TRASH", False) or deferred:
            # deferred: out of sight now, snapshots and data reclaimed by trash-purge
            delay = 0 if deferred else ctx.settings.int("TRASH_DEFERMENT", 86400)
            try:
                rbd.RBD().trash_move(pool.ioctx, ctx.spec.name, delay)
            except rbd.ImageNotFound:
                _already_gone(ctx, pool)
                return
            log.info(f"moved {ctx.spec} to the RBD trash"
                     + (" (DELETE_MODE=deferred: trash-purge reclaims it)" if deferred
                        else f" for {delay} s"))
            return
        parents: list[ImageSpec | None] = []
        if remove_image(pool.cluster, pool.ioctx, ctx.spec.name,
                        opened=lambda image: parents.append(parent(image))) == "absent":
            _already_gone(ctx, pool)
            return
        faults.point("delete:removed")
        if parents and parents[0] is not None:
            release_parent(pool.cluster, parents[0])
    log.info(f"removed {ctx.spec}")


def check_disk_is_ours(pool: Pool, ctx: DiskContext, vmid: int) -> None:
    """Delete only this VM's disk: what we stamped for this VM and disk, or (made by
    upstream's driver) upstream's name for it. Anything else under that name is refused."""
    import re

    disk_id = ctx.disk.disk_id
    with open_image(pool.ioctx, ctx.spec.name, read_only=True) as image:
        meta = ownership.read(image)
    if meta and "vm" not in meta:
        # librbd copies image-meta into a clone: a clone upstream's TM made of an image we
        # imported carries the image's stamp, not one of its own; its name is what holds
        meta = {}
    if meta:
        if meta.get("vm") == str(vmid) and meta.get("disk") == str(disk_id):
            return
    elif re.fullmatch(rf"one-(sys|\d+)-{vmid}-{disk_id}", ctx.spec.name):
        return
    raise ActionFailed(f"{ctx.spec} is not VM {vmid} disk {disk_id}'s (not stamped for it, "
                       "not upstream's name for it): not removed",
                       hint="remove it by hand if it really belongs to this VM")


def _already_gone(ctx: DiskContext, pool: Pool) -> None:
    log.info(f"{ctx.spec} is already gone")
    if ctx.source is not None:  # a re-run after a crash: the clone snapshot may remain
        sweep_clone_snapshots(pool, ctx.source, min_age=ctx.settings.float("SWEEP_MIN_AGE", 300))


def resize(call: Call) -> None:
    ctx = load(call, call.args["disk"], datastore_id=call.args["dsid"])
    if ctx.vm.lcm_state == LCM_DISK_RESIZE:
        log.info("the VM is running: its block resize grows the image")
        return
    size_mb = call.args["size_mb"]
    with _pool(call, ctx) as pool, ceph_errors(f"resizing {ctx.spec}", call.subject):
        with open_image(pool.ioctx, ctx.spec.name) as image:
            if image.size() > size_mb * MIB:
                raise ActionFailed(f"{ctx.spec} is {image.size() // MIB} MB: it cannot shrink "
                                   f"to {size_mb} MB")
        _grow(pool, ctx.spec.name, size_mb)


def mvds(call: Call) -> None:
    """A persistent disk is the image: nothing to move back."""
    log.info(f"{call.args['source']}: nothing to copy, the disk is the image")


def cpds(call: Call) -> None:
    """disk-saveas: the disk's current state, or one of its snapshots, into the new image
    ``NEW_SOURCE`` (its name was reserved by the datastore's mkfs with FORMAT=save_as)."""
    from one_drivers.ceph.stream import CHUNK, SparseWriter  # only a copy needs them

    ctx = load(call, call.args["src"])
    new = ImageSpec.parse(call.args["new_source"], ctx.spec.pool)
    snap = None if call.args["snap_id"] == -1 else str(call.args["snap_id"])
    try:
        image_id: int | str = int(new.name.removeprefix("one-"))
    except ValueError:
        image_id = new.name
    with _pool(call, ctx, new.pool, creating=True) as pool:

        def make(name: str, meta: dict[str, str]) -> None:
            with pool.other(ctx.spec.pool) as src_ioctx, \
                    open_image(src_ioctx, ctx.spec.name, snapshot=snap, read_only=True) as src:
                size = src.size()
                create(pool.ioctx, name, size, data_pool=pool.access.data_pool, meta=meta)
                extents: list[tuple[int, int]] = []
                src.diff_iterate(0, size, None,
                                 lambda off, n, present: extents.append((off, n))
                                 if present else None)
                with open_image(pool.ioctx, name) as dst:
                    writer = SparseWriter(dst)
                    for off, length in extents:
                        for pos in range(off, off + length, CHUNK):
                            writer.write(pos, src.read(pos, min(CHUNK, off + length - pos)))
                    writer.finish()

        build_image(pool, new, meta=stamp("image", image=image_id, vm=call.args["vmid"],
                                          disk=ctx.disk.disk_id),
                    identity=("image",), make=make, subject=call.subject,
                    seconds=call.deadline.remaining())
    log.info(f"saved {ctx.spec}{'@' + snap if snap else ''} as {new}")
