"""VM snapshots (snapshot_create / _revert / _delete), named ``snap-<id>`` as upstream does.

libvirt keeps snapshot metadata per host; a copy of each snapshot's XML goes to the VM's
directory (``one:system_datastore``), and deploy, restore and migration redefine them, so the
snapshots survive the VM moving to another host.
"""

from __future__ import annotations

import contextlib
import glob
import os
import xml.etree.ElementTree as ET
from typing import Any

from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import DriverError, NotFound
from one_drivers.vmm.libvirt.common import host_hypervisor
from one_drivers.vmm.libvirt.connection import Hypervisor
from one_drivers.vmm.libvirt.deployment import system_datastore_dir

REDEFINE = 1  # VIR_DOMAIN_SNAPSHOT_CREATE_REDEFINE


def _vm_dir(hv: Hypervisor, dom: Any) -> str | None:
    xml = hv.call(dom.XMLDesc, 0, what="reading the domain XML")
    return system_datastore_dir(ET.fromstring(xml))  # noqa: S314 - libvirt's own output


def _save_metadata(hv: Hypervisor, dom: Any, snap: Any, name: str) -> None:
    vm_dir = _vm_dir(hv, dom)
    if not vm_dir or not os.path.isdir(vm_dir):
        return
    xml = hv.call(snap.getXMLDesc, 0, what=f"reading snapshot {name}")
    tmp = os.path.join(vm_dir, f".{name}.xml.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(xml)
    os.replace(tmp, os.path.join(vm_dir, f"{name}.xml"))


def redefine_snapshots(hv: Hypervisor, dom: Any, root: ET.Element) -> int:
    """Re-register the snapshots kept in the VM's directory with this host's libvirt."""
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


def snapshot_create(call: Call) -> str:
    name = f"snap-{call.args['snap_id']}"
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        try:
            snap = hv.call(dom.snapshotLookupByName, name, 0, what=f"looking up {name}")
            log.info(f"snapshot {name} already exists")
        except NotFound:
            xml = f"<domainsnapshot><name>{name}</name></domainsnapshot>"
            snap = hv.call(dom.snapshotCreateXML, xml, 0, what=f"creating snapshot {name}")
        _save_metadata(hv, dom, snap, name)
    return name


def snapshot_revert(call: Call) -> None:
    name = call.args["snapshot"]
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        snap = hv.call(dom.snapshotLookupByName, name, 0, what=f"looking up snapshot {name}")
        hv.call(dom.revertToSnapshot, snap, 0, what=f"reverting to snapshot {name}")


def snapshot_delete(call: Call) -> None:
    name = call.args["snapshot"]
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        vm_dir = _vm_dir(hv, dom)
        try:
            snap = hv.call(dom.snapshotLookupByName, name, 0, what=f"looking up {name}")
            hv.call(snap.delete, 0, what=f"deleting snapshot {name}")
        except NotFound:
            log.info(f"snapshot {name} is already gone")
        if vm_dir:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(vm_dir, f"{name}.xml"))
