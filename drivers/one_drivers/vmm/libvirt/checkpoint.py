"""save and restore. With a Ceph system datastore (TM_MAD=rbd) the checkpoint lives in RBD as
``<POOL>/one-sys-<VM>-checkpoint``: saved to the local file libvirt needs, streamed into RBD
(data extents only, staging name then rename) and the file removed; restore streams it back,
restores, and removes the image only once the VM runs. Other system datastores keep the file.

Both are re-runnable: a save whose domain is already gone succeeds when the checkpoint exists; a
restore whose domain already runs succeeds and cleans what is left.
"""

from __future__ import annotations

import contextlib
import os
import xml.etree.ElementTree as ET
from typing import Any

from one_drivers.core import log
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.documents import VmmActionData
from one_drivers.core.errors import NotFound
from one_drivers.vmm.libvirt.common import PMSUSPENDED, SHUTOFF, host_hypervisor, resolved


def _data(call: Call) -> VmmActionData:
    data: VmmActionData = call.doc
    return data


def _ceph_settings(call: Call) -> Settings | None:
    """The system datastore's Ceph settings, None when it is not a Ceph one."""
    datastore = _data(call).datastore
    if (datastore.tm_mad or "") != "rbd":
        return None
    return resolved(call.settings).over(datastore.template)


def _image_name(call: Call) -> str:
    return f"one-sys-{_data(call).vm.id}-checkpoint"


def save(call: Call) -> None:
    path = call.args["checkpoint_file"]
    ceph = _ceph_settings(call)
    with host_hypervisor(call) as hv:
        dom = hv.domain(call.args["deploy_id"])
        if dom is not None and hv.state(dom) not in (None, SHUTOFF):
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                os.replace(path, f"{path}.old")  # an earlier checkpoint: kept until this works
            # as long as the action may take (SAVE_TIMEOUT, else ACTION_TIMEOUT)
            hv.call(dom.save, path, what="saving the VM's memory",
                    timeout=call.deadline.remaining())
        elif not (os.path.exists(path) or (ceph is not None and _in_rbd(call, ceph))):
            raise NotFound(f"domain {call.args['deploy_id']} is not running and there is no "
                           "checkpoint to keep")
    if ceph is not None and os.path.exists(path):
        _to_rbd(call, ceph, path)
        os.unlink(path)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(f"{path}.old")


def restore(call: Call) -> None:
    """The VM from its checkpoint, where the checkpoint now is: paths of the VM's directory in
    the saved domain are moved to the checkpoint's directory (the VM may come back on another
    system datastore), its snapshots are redefined, its clock set (SYNC_TIME). A guest that is
    only power-management suspended (S3) is woken up instead."""
    path = call.args["checkpoint_file"]
    ceph = _ceph_settings(call)
    with host_hypervisor(call) as hv:
        dom = hv.domain(call.args["deploy_id"])
        state = hv.state(dom) if dom is not None else None
        if dom is not None and state == PMSUSPENDED:
            hv.call(dom.pMWakeup, 0, what="waking the suspended guest")
            log.info(f"domain {call.args['deploy_id']} was suspended (S3): woken up")
            return
        if dom is not None and state not in (None, SHUTOFF):
            log.info(f"domain {call.args['deploy_id']} already runs: restored before")
        else:
            if ceph is not None and _in_rbd(call, ceph):
                _from_rbd(call, ceph, path)
            if not os.path.exists(path):
                raise NotFound(f"no checkpoint at {path}"
                               + (f" nor in RBD ({_image_name(call)})" if ceph else ""))
            xml = relocated(hv.call(hv.conn.saveImageGetXMLDesc, path, 0,
                                    what="reading the checkpoint's domain"),
                            os.path.dirname(os.path.abspath(path)))
            from one_drivers.vmm.libvirt.tpm import served, served_by

            swtpm = served_by(ET.fromstring(xml))  # noqa: S314 - libvirt's own XML
            with served(swtpm, call.deadline):
                dom = hv.call(hv.conn.restoreFlags, path, xml, 0,
                              what="restoring the VM's memory", timeout=call.deadline.remaining())
            from one_drivers.vmm.libvirt.guest_agent import sync_time
            from one_drivers.vmm.libvirt.snapshots import redefine_snapshots

            dom = hv.require(call.args["deploy_id"])
            redefine_snapshots(hv, dom, ET.fromstring(xml))  # noqa: S314 - libvirt's own XML
            sync_time(hv, call.args["deploy_id"])
    if ceph is not None:
        _drop_rbd(call, ceph)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def relocated(xml: str, vm_dir: str) -> str:
    """The saved domain with its VM directory (``one:system_datastore``) moved to ``vm_dir``:
    every path under the old directory now under the new one."""
    from one_drivers.vmm.libvirt.deployment import system_datastore_dir

    old = system_datastore_dir(ET.fromstring(xml))  # noqa: S314 - libvirt's own XML
    if not old or os.path.normpath(old) == os.path.normpath(vm_dir):
        return xml
    old, new = os.path.normpath(old), os.path.normpath(vm_dir)
    log.info(f"the VM's directory moved from {old} to {new}: its paths follow")
    return xml.replace(f">{old}<", f">{new}<").replace(f"{old}/", f"{new}/")


def _pool(call: Call, ceph: Settings) -> Any:
    from one_drivers.ceph.pool import rbd_pool

    return rbd_pool(ceph, call.deadline, call.subject)


def _in_rbd(call: Call, ceph: Settings) -> bool:
    from one_drivers.ceph.rbd_ops import ceph_errors, exists

    with _pool(call, ceph) as pool, ceph_errors("looking for the checkpoint", call.subject):
        return bool(exists(pool.ioctx, _image_name(call)))


def _to_rbd(call: Call, ceph: Settings, path: str) -> None:
    from one_drivers.ceph.build import build_image
    from one_drivers.ceph.naming import ImageSpec
    from one_drivers.ceph.ownership import stamp
    from one_drivers.ceph.rbd_ops import create, open_image
    from one_drivers.ceph.stream import copy_file_extents

    vm_id = _data(call).vm.id
    size = os.path.getsize(path)
    with _pool(call, ceph) as pool:

        def make(name: str, meta: dict[str, str]) -> None:
            create(pool.ioctx, name, size, data_pool=pool.access.data_pool, meta=meta)
            fd = os.open(path, os.O_RDONLY)
            try:
                with open_image(pool.ioctx, name) as image:
                    copy_file_extents(fd, size, image, what="checkpoint to RBD")
            finally:
                os.close(fd)

        # a new save replaces an older checkpoint of the same VM
        _drop_rbd(call, ceph)
        build_image(pool, ImageSpec(pool.name, _image_name(call)),
                    meta=stamp("checkpoint", vm=vm_id), identity=("vm",), make=make,
                    subject=call.subject, seconds=call.deadline.remaining())
    log.info(f"checkpoint of VM {vm_id} ({size >> 20} MiB) saved in {pool.name}/"
             f"{_image_name(call)}")


def _from_rbd(call: Call, ceph: Settings, path: str) -> None:
    from one_drivers.ceph.rbd_ops import ceph_errors, open_image
    from one_drivers.ceph.stream import image_chunks

    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp.{os.getpid()}"
    with _pool(call, ceph) as pool, ceph_errors("reading the checkpoint", call.subject), \
            open_image(pool.ioctx, _image_name(call), read_only=True) as image:
        size = image.size()
        with contextlib.suppress(FileNotFoundError):  # a crashed run's, never followed
            os.unlink(tmp)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            for offset, data in image_chunks(image, size):
                os.pwrite(fd, data, offset)
            os.ftruncate(fd, size)
        finally:
            os.close(fd)
    os.replace(tmp, path)


def _drop_rbd(call: Call, ceph: Settings) -> None:
    from one_drivers.ceph import ownership
    from one_drivers.ceph.rbd_ops import ceph_errors, exists, open_image, remove_image

    name = _image_name(call)
    with _pool(call, ceph) as pool, ceph_errors(f"removing {name}", call.subject):
        if not exists(pool.ioctx, name):
            return
        with open_image(pool.ioctx, name, read_only=True) as image:
            meta = ownership.read(image)
        if meta.get("vm") != str(_data(call).vm.id):
            log.info(f"{pool.name}/{name} is not our checkpoint: left alone")
            return
        remove_image(pool.cluster, pool.ioctx, name)
