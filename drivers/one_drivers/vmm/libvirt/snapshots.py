"""VM snapshots (snapshot_create / _revert / _delete), named ``snap-<id>`` as upstream does.

libvirt cannot take internal snapshots of raw RBD disks, which is what a Ceph VM has. For such a
VM a snapshot is taken while the guest is paused, so memory and disks agree: the memory state
through libvirt (an external memory snapshot, ``<vm dir>/snap-<id>.mem``) and every RBD disk as an
RBD snapshot ``one-vm-snap-<id>``. A small record (``snap-<id>.json``) in the VM's directory says
what belongs to it; it travels with the directory, so a snapshot survives migration and
redeploys. Revert destroys the domain, rolls the disks back and restores the memory (same UUID).
VMs with only file disks keep libvirt's internal snapshots, whose XML is copied to the VM's
directory and redefined on deploy.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

from one_drivers.core import log
from one_drivers.core.atomic import write_atomic
from one_drivers.core.contract import Call
from one_drivers.core.documents import VM, VmmActionData
from one_drivers.core.errors import ActionFailed, DriverError, NotFound
from one_drivers.vmm.libvirt.common import PAUSED, host_hypervisor, resolved
from one_drivers.vmm.libvirt.connection import Hypervisor
from one_drivers.vmm.libvirt.deployment import system_datastore_dir

REDEFINE = 1  # VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE
METADATA_ONLY = 2  # VIR_DOMAIN_SNAPSHOT_DELETE_METADATA_ONLY


def rbd_snap_name(snap: str) -> str:
    return f"one-vm-{snap}"  # snap-<id> -> one-vm-snap-<id>: never a disk snapshot's name


def _parse(xml: str) -> ET.Element:
    return ET.fromstring(xml)  # noqa: S314 - libvirt's own output


def rbd_disks(domain: ET.Element) -> list[dict[str, str]]:
    """target, pool and image of every RBD disk of a domain."""
    out = []
    for disk in domain.iterfind("devices/disk"):
        source = disk.find("source[@protocol='rbd']")
        target = disk.find("target")
        if source is not None and target is not None:
            pool, _, image = (source.get("name") or "").partition("/")
            out.append({"target": target.get("dev") or "", "pool": pool, "image": image})
    return out


def _vm_dir(call: Call, domain: ET.Element | None) -> str:
    found = system_datastore_dir(domain) if domain is not None else None
    if not found:  # the domain is gone (a revert interrupted): the deployment file says
        data: VmmActionData = call.doc
        deployment = data.opt("REMOTE_DEPLOYMENT_FILE")
        found = os.path.dirname(deployment) if deployment else None
    if not found:
        raise ActionFailed("cannot tell the VM's directory (no one:system_datastore metadata)")
    return found


def _record_path(vm_dir: str, name: str) -> str:
    return os.path.join(vm_dir, f"{name}.json")


def _load_record(vm_dir: str, name: str) -> dict[str, Any] | None:
    try:
        with open(_record_path(vm_dir, name), encoding="utf-8") as fh:
            record: dict[str, Any] = json.load(fh)
            return record
    except FileNotFoundError:
        return None


@contextlib.contextmanager
def _images(call: Call, disks: list[dict[str, str]]) -> Iterator[list[tuple[dict[str, str], Any]]]:
    """Open each RBD disk with the Ceph settings of the matching VM DISK (by TARGET)."""
    from one_drivers.ceph.pool import rbd_pool
    from one_drivers.ceph.rbd_ops import ceph_errors, open_image

    vm: VM = call.doc.vm
    by_target = {d.target: d for d in vm.disks() if d.target}
    with contextlib.ExitStack() as stack:
        stack.enter_context(ceph_errors("snapshotting the VM's RBD disks", call.subject))
        opened = []
        for disk in disks:
            vm_disk = by_target.get(disk["target"])
            settings = resolved(call.settings).over(vm_disk if vm_disk is not None else {})
            settings = settings.over({"POOL_NAME": disk["pool"]})
            pool = stack.enter_context(rbd_pool(settings, call.deadline, call.subject))
            opened.append((disk, stack.enter_context(open_image(pool.ioctx, disk["image"]))))
        yield opened


def snapshot_create(call: Call) -> str:
    name = f"snap-{call.args['snap_id']}"
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        domain = _parse(hv.retryable(dom.XMLDesc, 0, what="reading the domain XML"))
        disks = rbd_disks(domain)
        if not disks:
            return _internal_create(hv, dom, domain, name)
        vm_dir = _vm_dir(call, domain)
        if _load_record(vm_dir, name) is not None:
            log.info(f"snapshot {name} already exists")
            return name
        memory = os.path.join(vm_dir, f"{name}.mem")
        no_disks = "".join(f"<disk name='{t.get('dev')}' snapshot='no'/>"
                           for t in domain.iterfind("devices/disk/target"))
        xml = (f"<domainsnapshot><name>{name}</name><memory snapshot='external' "
               f"file='{memory}'/><disks>{no_disks}</disks></domainsnapshot>")
        hv.call(dom.suspend, what="pausing the guest")
        try:
            snap = hv.call(dom.snapshotCreateXML, xml, 0, what=f"saving the memory of {name}")
            with _images(call, disks) as images:
                for _disk, image in images:
                    if rbd_snap_name(name) not in {s["name"] for s in image.list_snaps()}:
                        image.create_snap(rbd_snap_name(name))
        finally:
            hv.call(dom.resume, what="resuming the guest")
        with contextlib.suppress(DriverError):  # our record is what counts, not libvirt's
            hv.call(snap.delete, METADATA_ONLY, what="dropping libvirt's snapshot metadata")
        _write_record(vm_dir, name, {"memory": memory, "disks": disks})
    return name


def _write_record(vm_dir: str, name: str, record: dict[str, Any]) -> None:
    write_atomic(_record_path(vm_dir, name), json.dumps(record))


def snapshot_revert(call: Call) -> None:
    name = call.args["snapshot"]
    with host_hypervisor(call) as hv:
        dom = hv.domain(call.args["deploy_id"])
        domain = _parse(hv.retryable(dom.XMLDesc, 0, what="reading the domain XML")) \
            if dom else None
        record = _load_record(_vm_dir(call, domain), name)
        if record is None:
            if dom is None:
                raise NotFound(f"domain {call.args['deploy_id']} does not exist")
            snap = hv.retryable(dom.snapshotLookupByName, name, 0, what=f"looking up {name}")
            hv.call(dom.revertToSnapshot, snap, 0, what=f"reverting to snapshot {name}")
            return
        if dom is not None:
            hv.retryable(dom.destroy, what="stopping the guest to revert it")
        with _images(call, record["disks"]) as images:
            for disk, image in images:
                image.rollback_to_snap(rbd_snap_name(name))
                log.info(f"{disk['pool']}/{disk['image']} rolled back to {rbd_snap_name(name)}")
        from one_drivers.vmm.libvirt.tpm import served, served_by

        saved = hv.call(hv.conn.saveImageGetXMLDesc, record["memory"], 0,
                        what=f"reading the domain saved with {name}")
        with served(served_by(_parse(saved)), call.deadline):
            hv.call(hv.conn.restore, record["memory"], what=f"restoring the memory of {name}",
                    timeout=call.deadline.remaining())
        restored = hv.require(call.args["deploy_id"])
        if hv.state(restored) == PAUSED:  # it was paused when the snapshot was taken
            hv.call(restored.resume, what="resuming the guest")


def snapshot_delete(call: Call) -> None:
    name = call.args["snapshot"]
    with host_hypervisor(call) as hv:
        dom = hv.domain(call.args["deploy_id"])
        domain = _parse(hv.retryable(dom.XMLDesc, 0, what="reading the domain XML")) \
            if dom else None
        vm_dir = _vm_dir(call, domain)
        record = _load_record(vm_dir, name)
        if record is not None:
            with _images(call, record["disks"]) as images:
                for _disk, image in images:
                    if rbd_snap_name(name) in {s["name"] for s in image.list_snaps()}:
                        image.remove_snap(rbd_snap_name(name))
            with contextlib.suppress(FileNotFoundError):
                os.unlink(record["memory"])
            os.unlink(_record_path(vm_dir, name))
            return
        if dom is not None:
            try:
                snap = hv.retryable(dom.snapshotLookupByName, name, 0, what=f"looking up {name}")
                hv.call(snap.delete, 0, what=f"deleting snapshot {name}")
            except NotFound:
                log.info(f"snapshot {name} is already gone")
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(vm_dir, f"{name}.xml"))


def _internal_create(hv: Hypervisor, dom: Any, domain: ET.Element, name: str) -> str:
    try:
        snap = hv.retryable(dom.snapshotLookupByName, name, 0, what=f"looking up {name}")
        log.info(f"snapshot {name} already exists")
    except NotFound:
        xml = f"<domainsnapshot><name>{name}</name></domainsnapshot>"
        snap = hv.call(dom.snapshotCreateXML, xml, 0, what=f"creating snapshot {name}")
    vm_dir = system_datastore_dir(domain)
    if vm_dir and os.path.isdir(vm_dir):
        xml = hv.retryable(snap.getXMLDesc, 0, what=f"reading snapshot {name}")
        write_atomic(os.path.join(vm_dir, f"{name}.xml"), xml)
    return name


def redefine_snapshots(hv: Hypervisor, dom: Any, root: ET.Element) -> int:
    """Re-register internal snapshots kept in the VM's directory with this host's libvirt."""
    vm_dir = system_datastore_dir(root)
    count = 0
    for path in sorted(glob.glob(os.path.join(vm_dir or "/nonexistent", "snap-*.xml"))):
        with open(path, encoding="utf-8") as fh:
            xml = fh.read()
        try:
            hv.call(dom.snapshotCreateXML, xml, REDEFINE, what=f"redefining {path}")
            count += 1
        except DriverError as exc:  # metadata only: the VM runs without it
            log.info(f"snapshot metadata {path} not redefined: {exc}")
    return count
