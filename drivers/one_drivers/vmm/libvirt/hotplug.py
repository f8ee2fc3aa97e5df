"""Live changes: disks and NICs in and out, the context CD-ROM swapped, vCPUs, memory and disk
sizes. Every plug is idempotent (a re-run finds the device already there) and every unplug is
verified: the guest must let the device go, or the action says so."""

from __future__ import annotations

import time
import xml.etree.ElementTree as ET
from typing import Any

from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.documents import VM, Disk, VmmActionData
from one_drivers.core.errors import ActionFailed, BadInput, NotFound
from one_drivers.vmm.libvirt.common import host_hypervisor, resolved
from one_drivers.vmm.libvirt.connection import Hypervisor
from one_drivers.vmm.libvirt.devices import disk_xml, find_device, nic_xml

LIVE = 1  # VIR_DOMAIN_AFFECT_LIVE
FORCE = 4  # VIR_DOMAIN_DEVICE_MODIFY_FORCE: eject even when the guest locked the tray
RESIZE_BYTES = 1  # VIR_DOMAIN_BLOCK_RESIZE_BYTES


def _vm(call: Call) -> VM:
    data: VmmActionData = call.doc
    return data.vm


def _live_xml(hv: Hypervisor, dom: Any) -> str:
    return str(hv.retryable(dom.XMLDesc, 0, what="reading the domain XML"))


def _attached_disk(vm: VM) -> Disk:
    for disk in vm.disks():
        if disk.bool("ATTACH", False):
            return disk
    raise BadInput("no DISK with ATTACH=YES in the VM document")


def attach_disk(call: Call) -> None:
    vm, a = _vm(call), call.args
    disk = _attached_disk(vm)
    iothreads = vm.template.opt("FEATURES/IOTHREADS") or "0"
    xml = disk_xml(vm.id, disk, a["target"], a["disk_path"], resolved(call.settings),
                   iothreads=int(iothreads) if iothreads.isdigit() else 0,
                   vcpus=vm.template.int("VCPU", 1),
                   default_queues=vm.template.opt("FEATURES/VIRTIO_BLK_QUEUES") or "")
    with host_hypervisor(call) as hv:
        dom = hv.require(a["deploy_id"])
        if find_device(_live_xml(hv, dom), "disk", target=a["target"]) is not None:
            log.info(f"disk {a['target']} is already attached")
            return
        hv.call(dom.attachDeviceFlags, xml, LIVE, what=f"attaching disk {a['target']}")


def _unplug(call: Call, hv: Hypervisor, dom: Any, kind: str, what: str, **key: str) -> None:
    device = find_device(_live_xml(hv, dom), kind, **key)
    if device is None:
        log.info(f"{what} is not attached: nothing to detach")
        return
    seconds = resolved(call.settings).float("DETACH_TIMEOUT", 20)
    started = time.monotonic()
    # libvirt itself waits a few seconds for the guest before returning: that counts too
    hv.call(dom.detachDeviceFlags, ET.tostring(device, encoding="unicode"), LIVE,
            what=f"detaching {what}")
    left = max(0.0, seconds - (time.monotonic() - started))
    if not hv.wait_until(lambda: find_device(_live_xml(hv, dom), kind, **key) is None,
                         seconds=left):
        raise ActionFailed(f"the guest did not release {what} within {seconds:g} s",
                           hint="the guest OS must support hot-unplug (ACPI); try again, "
                                "or power the VM off")


def detach_disk(call: Call) -> None:
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        _unplug(call, hv, dom, "disk", f"disk {call.args['target']}", target=call.args["target"])


def attach_nic(call: Call) -> None:
    a = call.args
    vm = _vm(call)
    nic = next((n for n in vm.nics() if n.mac.lower() == a["mac"].lower()), None)
    xml = nic_xml(nic, mac=a["mac"], bridge=a["bridge"], model=a["model"], vn_mad=a["vn_mad"],
                  target=a["target"], settings=resolved(call.settings),
                  vcpus=vm.template.int("VCPU", 1))
    with host_hypervisor(call) as hv:
        dom = hv.require(a["deploy_id"])
        if find_device(_live_xml(hv, dom), "interface", mac=a["mac"]) is not None:
            log.info(f"NIC {a['mac']} is already attached")
            return
        hv.call(dom.attachDeviceFlags, xml, LIVE, what=f"attaching NIC {a['mac']}")


def detach_nic(call: Call) -> None:
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        _unplug(call, hv, dom, "interface", f"NIC {call.args['mac']}", mac=call.args["mac"])


def _cdrom(call: Call, iso_path: str | None) -> None:
    target = call.args["target"]
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        device = find_device(_live_xml(hv, dom), "disk", target=target)
        if device is None or device.get("device") != "cdrom":
            raise NotFound(f"the domain has no CD-ROM {target}")
        for source in device.findall("source"):
            device.remove(source)
        if iso_path is not None:
            source = ET.Element("source", file=iso_path)
            device.insert(1, source)
        hv.call(dom.updateDeviceFlags, ET.tostring(device, encoding="unicode"), LIVE | FORCE,
                what=("inserting " + iso_path) if iso_path else f"ejecting CD-ROM {target}")


def prereconfigure(call: Call) -> None:
    """Eject the context CD-ROM before the TM rewrites its ISO."""
    _cdrom(call, None)


def reconfigure(call: Call) -> None:
    """Insert the new context ISO."""
    _cdrom(call, call.args["iso_path"])


def resize(call: Call) -> None:
    """vCPUs and memory of a running VM to the template's VCPU and MEMORY (MB)."""
    template = _vm(call).template
    vcpus = template.int("VCPU", 0) or None
    memory_mb = template.int("MEMORY", 0) or None
    with host_hypervisor(call) as hv:
        dom = hv.require(call.args["deploy_id"])
        if vcpus:
            maximum = int(hv.retryable(dom.vcpusFlags, hv.lv.VIR_DOMAIN_VCPU_MAXIMUM | LIVE,
                                  what="reading the vCPU maximum"))
            if vcpus > maximum:
                raise BadInput(f"VCPU={vcpus} exceeds the {maximum} the VM was started with",
                               hint="raise VCPU_MAX and restart the VM")
            hv.retryable(dom.setVcpusFlags, vcpus, LIVE, what=f"setting {vcpus} vCPUs")
        if memory_mb:
            # the balloon gives back up to the memory the VM started with, not beyond; more
            # needs DIMM hot-plug (MEMORY_RESIZE_MODE=HOTPLUG), which this driver does not do
            started_mb = int(hv.retryable(dom.maxMemory, what="reading the VM's memory")) // 1024
            if memory_mb > started_mb:
                mode = template.opt("MEMORY_RESIZE_MODE") or "BALLOON"
                raise BadInput(f"MEMORY={memory_mb} MB exceeds the {started_mb} MB the VM was "
                               f"started with (MEMORY_RESIZE_MODE={mode})",
                               hint="memory hot-plug (HOTPLUG) is not supported by this driver: "
                                    "resize it powered off")
            hv.retryable(dom.setMemoryFlags, memory_mb * 1024, LIVE,
                    what=f"setting memory to {memory_mb} MB")


def resize_disk(call: Call) -> None:
    """Grow a disk of the running VM (the TM has grown the image already)."""
    a = call.args
    disk = _vm(call).disk(a["disk_id"])
    if disk is None or not disk.target:
        raise BadInput(f"disk {a['disk_id']} has no TARGET in the VM document")
    with host_hypervisor(call) as hv:
        dom = hv.require(a["deploy_id"])
        hv.retryable(dom.blockResize, disk.target, a["size_mb"] << 20, RESIZE_BYTES,
                what=f"resizing disk {disk.target} to {a['size_mb']} MB")
