"""Device XML for hot-plug, built from the VM document's DISK and NIC attributes (pure)."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from one_drivers.core.config import Settings
from one_drivers.core.documents import Disk, Nic
from one_drivers.core.errors import BadInput
from one_drivers.tm.rbd.common import disk_image
from one_drivers.vmm.libvirt.deployment import ceph_monitors

BUSES = {"vd": "virtio", "sd": "scsi", "hd": "ide", "xvd": "xen"}
# DISK attributes -> libvirt <iotune> elements (OpenNebula/one#7590: upstream dropped some)
IOTUNE = ("TOTAL_BYTES_SEC", "READ_BYTES_SEC", "WRITE_BYTES_SEC", "TOTAL_IOPS_SEC",
          "READ_IOPS_SEC", "WRITE_IOPS_SEC", "TOTAL_BYTES_SEC_MAX", "READ_BYTES_SEC_MAX",
          "WRITE_BYTES_SEC_MAX", "TOTAL_IOPS_SEC_MAX", "READ_IOPS_SEC_MAX", "WRITE_IOPS_SEC_MAX",
          "TOTAL_BYTES_SEC_MAX_LENGTH", "READ_BYTES_SEC_MAX_LENGTH", "WRITE_BYTES_SEC_MAX_LENGTH",
          "TOTAL_IOPS_SEC_MAX_LENGTH", "READ_IOPS_SEC_MAX_LENGTH", "WRITE_IOPS_SEC_MAX_LENGTH",
          "SIZE_IOPS_SEC")
OVS_DRIVERS = ("ovsdb", "ovswitch", "ovswitch_vxlan")


def bus_for(target: str, disk: Disk) -> str:
    bus = disk.opt("BUS")
    if bus:
        return bus
    for prefix in sorted(BUSES, key=len, reverse=True):
        if target.startswith(prefix):
            return BUSES[prefix]
    raise BadInput(f"disk {disk.disk_id}: cannot tell the bus of target {target!r}")


def disk_xml(vm_id: int, disk: Disk, target: str, host_path: str, settings: Settings) -> str:
    """The ``<disk>`` of a DISK: an RBD network disk with cephx for Ceph disks, else the file
    the TM placed at ``host_path``."""
    cfg = settings.over(disk)
    cdrom = disk.type == "CDROM"
    rbd = disk.type in ("RBD", "RBD_CDROM") or (disk.opt("DISK_TYPE") or "").upper() == "RBD"
    elem = ET.Element("disk", type="network" if rbd else "file",
                      device="cdrom" if cdrom or disk.type == "RBD_CDROM" else "disk")
    fmt = "raw" if rbd else (disk.opt("DRIVER") or disk.opt("FORMAT") or "raw")
    driver = ET.SubElement(elem, "driver", name="qemu", type=fmt)
    if not cdrom:
        driver.set("cache", cfg.get("CACHE") or cfg.get("DEFAULT_ATTACH_CACHE") or "none")
        driver.set("discard", cfg.get("DISCARD") or cfg.get("DEFAULT_ATTACH_DISCARD") or "unmap")
    if cfg.get("IO"):
        driver.set("io", cfg.get("IO") or "")
    if rbd:
        spec, _, _ = disk_image(vm_id, disk, cfg)
        source = ET.SubElement(elem, "source", protocol="rbd", name=f"{spec.pool}/{spec.name}")
        hosts = [tuple([*h.rsplit(":", 1), "6789"][:2]) for h in
                 (disk.opt("CEPH_HOST") or "").split()] or ceph_monitors(
                     cfg.get("CEPH_CONF") or "/etc/ceph/ceph.conf")
        for name, port in hosts:
            ET.SubElement(source, "host", name=name, port=port)
        if disk.opt("CEPH_USER"):
            secret = disk.opt("CEPH_SECRET")
            if not secret:
                raise BadInput(f"disk {disk.disk_id} has CEPH_USER but no CEPH_SECRET",
                               hint="set CEPH_SECRET (the libvirt secret's UUID) on the "
                                    "datastore")
            auth = ET.SubElement(elem, "auth", username=disk.opt("CEPH_USER") or "")
            ET.SubElement(auth, "secret", type="ceph", uuid=secret)
    else:
        ET.SubElement(elem, "source", file=host_path)
    ET.SubElement(elem, "target", dev=target, bus=bus_for(target, disk))
    tune = [(name, disk.opt(name)) for name in IOTUNE if disk.opt(name)]
    if tune:
        iotune = ET.SubElement(elem, "iotune")
        for name, value in tune:
            if not (value or "").isdigit():
                raise BadInput(f"disk {disk.disk_id}: {name}={value!r} is not a number")
            ET.SubElement(iotune, name.lower()).text = value
    if disk.bool("READONLY", False) or cdrom:
        ET.SubElement(elem, "readonly")
    if disk.opt("SERIAL"):
        ET.SubElement(elem, "serial").text = disk.opt("SERIAL")
    return ET.tostring(elem, encoding="unicode")


def nic_xml(nic: Nic | None, *, mac: str, bridge: str, model: str, vn_mad: str, target: str,
            settings: Settings) -> str:
    """The ``<interface>`` attach_nic plugs: an Open vSwitch port for OVS networks (the VNM
    driver's ``pre`` has already configured it), a Linux bridge port otherwise."""
    elem = ET.Element("interface", type="bridge")
    ET.SubElement(elem, "mac", address=mac)
    ET.SubElement(elem, "source", bridge=bridge)
    bridge_type = (nic.opt("BRIDGE_TYPE") if nic is not None else None) or ""
    if vn_mad in OVS_DRIVERS or bridge_type.startswith("openvswitch"):
        ET.SubElement(elem, "virtualport", type="openvswitch")
    ET.SubElement(elem, "target", dev=target)
    if model in ("", "-"):
        model = settings.get("DEFAULT_ATTACH_NIC_MODEL") or "virtio"
    ET.SubElement(elem, "model", type=model)
    queues = nic.opt("VIRTIO_QUEUES") if nic is not None else None
    if queues and queues.isdigit() and model == "virtio":
        ET.SubElement(elem, "driver", name="vhost", queues=queues)
    return ET.tostring(elem, encoding="unicode")


def find_device(domain_xml: str, kind: str, *, target: str | None = None,
                mac: str | None = None) -> ET.Element | None:
    """The live ``<disk>`` with target dev ``target`` or ``<interface>`` with ``mac``."""
    root = ET.fromstring(domain_xml)  # noqa: S314 - libvirt's own output
    for dev in root.iterfind(f"devices/{kind}"):
        if target is not None and dev.find(f"target[@dev='{target}']") is not None:
            return dev
        found = dev.find("mac")
        if mac is not None and found is not None and \
                (found.get("address") or "").lower() == mac.lower():
            return dev
    return None
