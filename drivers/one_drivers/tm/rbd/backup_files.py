"""Backups of rbd disks into upstream's file backup datastores (``rsync``, ``restic``).

Those datastores' ``backup`` copies a directory from the host: ``<vm dir>/backup`` (or
``$BACKUP_BASE_PATH/<vmid>/backup``), on the host the VM runs on or its backup bridge
(LAST_BRIDGE), holding ``vm.xml`` (the VM document, base64) and ``disk.<disk id>.<n>`` per disk:
qcow2, the whole disk for a full backup or a chain's first, and for increment ``n`` only what
changed since ``n - 1``, with no backing file (their restore rebuilds the chain with
``qemu-img rebase``). TM prebackup writes them when the VM's backup datastore is not ours;
postbackup removes the directory, whatever the outcome.

Each file is streamed from the backup snapshot to the host in one pass (:mod:`one_drivers.core.
qcow2`): the only bytes on the host are the files the datastore asked for, and an increment
reads only the changed extents (upstream writes a raw export or a diff file next to them).
"""

from __future__ import annotations

import base64
import functools
import re
from typing import IO, Any

from one_drivers.ceph import backups, copying
from one_drivers.core import log, qcow2, remote
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.errors import BadInput
from one_drivers.core.sparsefile import write_stream
from one_drivers.tm.rbd.common import DiskContext, host_python, send_to_host

OURS = frozenset({"rbdbackup"})


def foreign_datastore(call: Call) -> str | None:
    """The DS_MAD of the VM's backup datastore when it is not ours (None: ours, or a VM
    document from before LAST_DATASTORE_ID, which only our datastore's backups can be)."""
    from one_drivers.tm.rbd.placement import documents

    ds_id = call.doc.opt("BACKUPS/BACKUP_CONFIG/LAST_DATASTORE_ID")
    if ds_id is None:
        return None
    try:
        mad = documents(call).datastore(int(ds_id)).ds_mad or ""
    except ValueError:
        raise BadInput(f"LAST_DATASTORE_ID {ds_id!r} is not a datastore id") from None
    return None if mad in OURS else mad


def backup_dir(call: Call) -> HostPath:
    """Where the files go: the host or bridge, and a directory that can only be a VM's."""
    from one_drivers.tm.rbd.vmdir import vm_dir_of

    vmid: int = call.args["vmid"]
    where: HostPath = call.args["vm_dir"]
    host = call.doc.opt("BACKUPS/BACKUP_CONFIG/LAST_BRIDGE") or where.host
    base = call.settings.get("BACKUP_BASE_PATH")
    if base:
        if not base.startswith("/") or ".." in base.split("/"):
            raise BadInput(f"BACKUP_BASE_PATH {base!r} is not an absolute path")
        path = f"{base.rstrip('/')}/{vmid}/backup"
    else:
        path = f"{vm_dir_of(where, vmid)}/backup"
    if not re.fullmatch(rf"/.+/{vmid}/backup", path):
        raise BadInput(f"{path} is not a backup directory of VM {vmid}")
    return HostPath(remote.check_host(host), path)


def _clear(call: Call, where: HostPath) -> None:
    timeout = call.deadline.cap(call.settings.float("SSH_TIMEOUT", 60), f"clearing {where}")
    remote.run(where.host, ["rm", "-rf", "--", where.path], timeout=timeout, idempotent=True)


def write(call: Call, mad: str, disks: list[tuple[int, DiskContext, Any]],
          plan: backups.Plan) -> None:
    """The directory ``mad``'s backup reads: ``vm.xml`` and ``disk.<id>.<n>`` from each open
    disk's backup snapshot (an earlier attempt's directory goes first)."""
    where = backup_dir(call)
    _clear(call, where)
    python = host_python(call)
    doc = base64.encodebytes((call.raw_stdin or "").encode())
    timeout = call.deadline.cap(call.deadline.remaining(), f"writing {where}")
    send_to_host(HostPath(where.host, f"{where.path}/vm.xml"), python,
                 lambda out: write_stream(out, len(doc), [(0, doc)]), timeout)
    since = backups.snap_name(plan.last) if plan.increment else None
    for disk_id, ctx, image in disks:
        spans = copying.extents(image, since)
        lay = qcow2.plan(image.size(), qcow2.kinds_from_extents(image.size(), spans))
        target = HostPath(where.host, f"{where.path}/disk.{disk_id}.{plan.n}")
        send_to_host(target, python, functools.partial(_qcow2_file, lay, image),
                     call.deadline.cap(call.deadline.remaining(), f"writing {target}"))
        log.info(f"{ctx.spec}@{backups.snap_name(plan.n)} -> {target} for {mad} "
                 f"({len(lay.data)} clusters{' changed' if since else ''})")


def _qcow2_file(lay: qcow2.Layout, image: Any, out: IO[bytes]) -> None:
    write_stream(out, lay.file_size, qcow2.chunks(lay, image.read))


def remove(call: Call) -> None:
    """postbackup's part: the directory goes, whether the datastore took it or not."""
    where = backup_dir(call)
    _clear(call, where)
    log.info(f"removed {where}")
