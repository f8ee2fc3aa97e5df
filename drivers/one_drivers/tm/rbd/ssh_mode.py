"""The ``.ssh`` variants (TM_MAD_SYSTEM=ssh): a Ceph image datastore with a local (ssh) system
datastore. Disks become raw files in the VM directory on the host, exported from RBD, and are
written back on mvds / cpds. Only data extents travel (:mod:`one_drivers.core.sparsefile`), so
sparse images stay sparse on the host and back.
"""

from __future__ import annotations

import subprocess
from typing import Any

from one_drivers.ceph.build import build_image
from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.ownership import stamp
from one_drivers.ceph.pool import Pool, rbd_pool
from one_drivers.ceph.rbd_ops import ceph_errors, create, open_image
from one_drivers.ceph.stream import image_chunks
from one_drivers.core import log, remote
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.core.sparsefile import read_stream, write_stream
from one_drivers.tm.rbd.common import DiskContext, host_python, load, send_to_host

MIB = 1024 * 1024


def export_to_host(call: Call, ctx: DiskContext, pool: Pool, spec: ImageSpec,
                   where: HostPath, grow_to: int = 0) -> None:
    timeout = call.deadline.cap(call.deadline.remaining(), f"exporting {spec}")
    with pool.other(spec.pool) as ioctx, open_image(ioctx, spec.name, snapshot=spec.snap,
                                                    read_only=True) as image:
        size = max(image.size(), grow_to)
        send_to_host(where, host_python(call),
                     lambda out: write_stream(out, size, image_chunks(image, image.size())),
                     timeout, monitor="ssh")


def import_from_host(call: Call, ctx: DiskContext, where: HostPath, image: Any) -> int:
    """Make ``image`` hold exactly the host file's content; returns its size."""
    from one_drivers.ceph.stream import SparseWriter

    timeout = call.deadline.cap(call.deadline.remaining(), f"reading {where}")
    argv = [host_python(call), "-m", "one_drivers.core.sparsefile", "send", where.path]
    proc = remote.popen(where.host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        size, records = read_stream(proc.stdout)  # type: ignore[arg-type]
        if image.size() != size:
            image.resize(size)
        image.discard(0, size)
        writer = SparseWriter(image)
        for offset, data in records:
            writer.write(offset, data)
        writer.finish()
    except Exception as exc:
        proc.kill()
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        raise ActionFailed(f"reading {where} failed: {err.splitlines()[-1] if err else exc}"
                           ) from None
    if proc.wait(timeout=timeout) != 0:
        raise ActionFailed(f"reading {where} failed")
    return int(size)


def clone_ssh(call: Call) -> None:
    """The image's content as a raw file on the host (grown to the disk's SIZE)."""
    ctx = load(call, call.args["dst"])
    if ctx.source is None:
        raise BadInput(f"disk {ctx.disk.disk_id} has no SOURCE image")
    with rbd_pool(ctx.settings.over({"POOL_NAME": ctx.source.pool}), call.deadline,
                  call.subject) as pool, ceph_errors(f"exporting {ctx.source}", call.subject):
        export_to_host(call, ctx, pool, ctx.source, call.args["dst"],
                       grow_to=(ctx.disk.size_mb or 0) * MIB)
    log.info(f"{ctx.source} exported to {call.args['dst']}")


def ln_ssh(call: Call) -> None:
    """A persistent image as a file on the host; mvds.ssh writes it back."""
    clone_ssh(call)


def mvds_ssh(call: Call) -> None:
    """The host file back into the persistent image."""
    ctx = load(call, call.args["src"])
    target = ImageSpec.parse(call.args["source"], ctx.spec.pool)
    with rbd_pool(ctx.settings.over({"POOL_NAME": target.pool}), call.deadline,
                  call.subject) as pool, ceph_errors(f"writing {target}", call.subject), \
            open_image(pool.ioctx, target.name) as image:
        size = import_from_host(call, ctx, call.args["src"], image)
    log.info(f"{call.args['src']} ({size // MIB} MB) written back to {target}")


def cpds_ssh(call: Call) -> None:
    """disk-saveas from the host file into the new image NEW_SOURCE."""
    if call.args["snap_id"] != -1:
        raise BadInput("a snapshot of a disk on an ssh system datastore is a file of the "
                       "system datastore's TM, not an RBD snapshot",
                       hint="save the current state (snapshot -1)")
    ctx = load(call, call.args["src"])
    new = ImageSpec.parse(call.args["new_source"], ctx.spec.pool)
    with rbd_pool(ctx.settings.over({"POOL_NAME": new.pool}), call.deadline,
                  call.subject, creating=True) as pool:

        def make(name: str, meta: dict[str, str]) -> None:
            create(pool.ioctx, name, 0, data_pool=pool.access.data_pool, meta=meta)
            with open_image(pool.ioctx, name) as image:
                import_from_host(call, ctx, call.args["src"], image)

        build_image(pool, new, meta=stamp("image", image=new.name.removeprefix("one-"),
                                          vm=call.args["vmid"], disk=ctx.disk.disk_id),
                    identity=("image",), make=make, subject=call.subject,
                    seconds=call.deadline.remaining())
    log.info(f"saved {call.args['src']} as {new}")


def resize_ssh(call: Call) -> None:
    where: HostPath = call.args["disk"]
    size = call.args["size_mb"] * MIB
    timeout = call.deadline.cap(call.settings.float("SSH_TIMEOUT", 60), "resizing")
    current = remote.run(where.host, ["stat", "-c", "%s", "--", where.path], timeout=timeout)
    if int(current.stdout.decode().strip() or 0) > size:
        raise ActionFailed(f"{where} cannot shrink to {call.args['size_mb']} MB")
    remote.run(where.host, ["truncate", "-s", str(size), "--", where.path], timeout=timeout)
    log.info(f"resized {where} to {call.args['size_mb']} MB")


def delete_ssh(call: Call) -> None:
    """The disk is a file in the VM directory: the ssh system datastore removes that."""
    log.info(f"{call.args['dst']}: removed with the VM directory by the system datastore")
