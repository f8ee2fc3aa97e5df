"""What every TM action of the ``rbd`` driver shares.

TM action lines carry only ``host:path``, ids and sizes; the disk's Ceph attributes (inherited from
its image datastore: POOL_NAME, CEPH_USER, CEPH_KEY, CEPH_CONF, CEPH_TRASH...) come from the VM
document and EC_POOL_NAME from the datastore, both read from oned (:mod:`one_drivers.core.oned`).
Settings layer: defaults < driver config file < datastore template < disk attributes.
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, NamedTuple

from one_drivers.ceph.naming import ImageSpec
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call, HostPath
from one_drivers.core.documents import VM, Datastore, Disk
from one_drivers.core.errors import ActionFailed, BackendUnavailable, BadInput
from one_drivers.core.retry import action_timeout

if TYPE_CHECKING:
    from one_drivers.tm.rbd.placement import Documents


class DiskContext(NamedTuple):
    vm: VM
    datastore: Datastore
    disk: Disk
    settings: Settings
    spec: ImageSpec  # the RBD image this disk is
    kind: str  # clone | persistent | volatile
    source: ImageSpec | None  # the image a clone or persistent disk comes from


def host_python(call: Call) -> str:
    """The program started on a host: only the driver's configuration file chooses it (the
    datastore and disk layers are not asked)."""
    return call.settings.get("HOST_PYTHON") or sys.executable


def send_to_host(where: HostPath, python: str, write: Callable[[IO[bytes]], None],
                 timeout: float, *, monitor: str = "") -> None:
    """Stream a file to ``host:path`` through the host's sparse receiver, in one ssh session
    (it makes the directory, writes a temporary name, renames when complete). ``monitor``: a
    disk of a local system datastore, whose directory is marked for the host's monitoring."""
    import subprocess

    from one_drivers.core import remote

    argv = [python, "-m", "one_drivers.core.sparsefile", "receive", where.path]
    if monitor:
        argv += ["--monitor", monitor]
    proc = remote.popen(where.host, argv, stdin=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        if proc.stdin is not None:
            write(proc.stdin)
            proc.stdin.close()
    except BrokenPipeError:
        pass  # the host side ended: its exit status says why
    err = proc.stderr.read() if proc.stderr is not None else b""
    rc = proc.wait(timeout=timeout)
    if rc != 0:
        lines = err.decode(errors="replace").strip().splitlines()
        last = lines[-1] if lines else f"exit {rc}"
        if rc == remote.SSH_UNREACHABLE:
            raise BackendUnavailable(f"cannot reach {where.host} over ssh ({last})",
                                     hint="check the host is up and oneadmin's ssh key")
        raise ActionFailed(f"writing {where} failed: {last}")


def oned_for(call: Call) -> Documents:
    """oned's documents for this call: asked once, or as the front-end relayed them."""
    from one_drivers.tm.rbd.placement import documents

    return documents(call)


def disk_image(vmid: int, disk: Disk, settings: Settings) -> tuple[ImageSpec, str,
                                                                    ImageSpec | None]:
    """The RBD image of a VM disk, upstream's names: ``SOURCE`` for a persistent disk,
    ``SOURCE-<VM>-<DISK>`` for a clone, ``<POOL>/one-sys-<VM>-<DISK>`` for a volatile one."""
    if disk.source is None:
        pool = settings.get("POOL_NAME", "one") or "one"
        return ImageSpec(pool, f"one-sys-{vmid}-{disk.disk_id}"), "volatile", None
    source = ImageSpec.parse(disk.source, settings.get("POOL_NAME"))
    if disk.clone:
        return (ImageSpec(source.pool, f"{source.name}-{vmid}-{disk.disk_id}"), "clone",
                source)
    return source, "persistent", source


def load(call: Call, where: HostPath, *, datastore_id: int | str | None = "dsid") -> DiskContext:
    """The VM, datastore and disk an action line names (``where`` ends in ``disk.<i>``).
    ``datastore_id`` None: the line has no datastore (resize may not), use the disk alone."""
    vmid = call.args["vmid"]
    index = where.disk_index
    if index is None:
        raise BadInput(f"{where} does not name a disk (expected .../disk.<i>)")
    oned = oned_for(call)
    vm = oned.vm(vmid)
    ds_id = call.args["dsid"] if datastore_id == "dsid" else datastore_id
    datastore = (oned.datastore(int(ds_id)) if ds_id is not None
                 else Datastore(ET.Element("DATASTORE")))
    disk = vm.disk(index)
    if disk is None:
        raise BadInput(f"VM {vmid} has no DISK with DISK_ID={index}",
                       hint="the VM template and the transfer line disagree")
    ds_layer = call.settings.over(datastore.template)
    timeout = action_timeout(call.action, ds_layer, call.deadline.seconds)
    if timeout != call.deadline.seconds:  # the datastore's own limit for this action
        call.deadline.retime(timeout)
    settings = ds_layer.over(disk)
    spec, kind, source = disk_image(vmid, disk, settings)
    return DiskContext(vm, datastore, disk, settings, spec, kind, source)
