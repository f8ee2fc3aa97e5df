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


def disk_xml(vm_id: int, disk: Disk, target: str, host_path: str, settings: Settings, *,
             iothreads: int = 0, vcpus: int = 1, default_queues: str = "") -> str:
    """The ``<disk>`` of a DISK, as the deployment file has it: an RBD network disk with cephx
    for Ceph disks, else the file the TM placed at ``host_path``; cache, io and discard; on the
    virtio bus its I/O thread (of the VM's FEATURES/IOTHREADS) and queues (VIRTIO_BLK_QUEUES,
    auto: one per vCPU); its LUKS secret."""
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
    bus = bus_for(target, disk)
    if bus == "virtio" and not cdrom:
        _virtio_options(driver, disk, iothreads, vcpus, default_queues)
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
    ET.SubElement(elem, "target", dev=target, bus=bus)
    if disk.opt("LUKS_SECRET"):
        encryption = ET.SubElement(elem, "encryption", format="luks")
        ET.SubElement(encryption, "secret", type="passphrase", uuid=disk.opt("LUKS_SECRET") or "")
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


def _virtio_options(driver: ET.Element, disk: Disk, iothreads: int, vcpus: int,
                    default_queues: str) -> None:
    if iothreads > 0:
        wanted = disk.opt("IOTHREAD") or ""
        chosen = int(wanted) if wanted.isdigit() and 0 < int(wanted) <= iothreads \
            else disk.disk_id % iothreads + 1
        driver.set("iothread", str(chosen))
    queues = disk.opt("VIRTIO_BLK_QUEUES") or default_queues
    if queues.lower() == "auto":
        queues = str(max(1, vcpus))
    if queues:
        if not queues.isdigit():
            raise BadInput(f"disk {disk.disk_id}: VIRTIO_BLK_QUEUES={queues!r} is not a number "
                           "or auto")
        driver.set("queues", queues)


BANDWIDTH = (("inbound", "INBOUND"), ("outbound", "OUTBOUND"))
RATES = (("average", "AVG_BW"), ("peak", "PEAK_BW"), ("burst", "PEAK_KB"))


def nic_xml(nic: Nic | None, *, mac: str, bridge: str, model: str, vn_mad: str, target: str,
            settings: Settings, vcpus: int = 1) -> str:
    """The ``<interface>`` attach_nic plugs, as the deployment file has it for the same NIC:
    an Open vSwitch port for OVS networks (the VNM driver's ``pre`` has already configured
    it), a Linux bridge port otherwise; its model and virtio queues, its traffic filter (FILTER
    or DEFAULT_ATTACH_NIC_FILTER, for a NIC with an IP) and its bandwidth limits."""
    elem = ET.Element("interface", type="bridge")
    ET.SubElement(elem, "mac", address=mac)
    ET.SubElement(elem, "source", bridge=bridge)
    bridge_type = (nic.opt("BRIDGE_TYPE") if nic is not None else None) or ""
    if vn_mad in OVS_DRIVERS or bridge_type.startswith("openvswitch"):
        ET.SubElement(elem, "virtualport", type="openvswitch")
    ET.SubElement(elem, "target", dev=target)
    if model in ("", "-"):
        model = (nic.opt("MODEL") if nic is not None else None) \
            or settings.get("DEFAULT_ATTACH_NIC_MODEL") or "virtio"
    ET.SubElement(elem, "model", type=model)
    opt = nic.opt if nic is not None else (lambda _name: None)
    queues = opt("VIRTIO_QUEUES") or settings.get("DEFAULT_ATTACH_VIRTIO_QUEUES") or ""
    if queues.lower() == "auto":
        queues = str(max(1, vcpus))
    if queues and model == "virtio":
        if not queues.isdigit():
            raise BadInput(f"NIC {mac}: VIRTIO_QUEUES={queues!r} is not a number or auto")
        ET.SubElement(elem, "driver", name="vhost", queues=queues)
    ip, filt = opt("IP"), opt("FILTER") or settings.get("DEFAULT_ATTACH_NIC_FILTER")
    if ip and filt:
        ref = ET.SubElement(elem, "filterref", filter=filt)
        for address in (ip, opt("VROUTER_IP")):
            if address:
                ET.SubElement(ref, "parameter", name="IP", value=address)
    limits: dict[str, dict[str, str]] = {}
    for direction, prefix in BANDWIDTH:
        rates = {attr: opt(f"{prefix}_{suffix}") for attr, suffix in RATES}
        for attr, value in rates.items():
            if value and not value.isdigit():
                raise BadInput(f"NIC {mac}: {prefix}_{dict(RATES)[attr]}={value!r} is not a "
                               "number")
        if any(rates.values()):
            limits[direction] = {k: v for k, v in rates.items() if v}
    if limits:
        bandwidth = ET.SubElement(elem, "bandwidth")
        for direction, given in limits.items():
            ET.SubElement(bandwidth, direction, given)
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
