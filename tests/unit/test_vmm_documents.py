"""The VMM driver's pure parts: monitors from ceph.conf, deployment rewriting, device XML."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from one_drivers.core.config import Settings
from one_drivers.core.documents import Disk, Nic
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.core.xmlview import parse_xml
from one_drivers.lab.documents import elements
from one_drivers.vmm.libvirt.deployment import ceph_monitors, prepare, system_datastore_dir
from one_drivers.vmm.libvirt.devices import disk_xml, find_device, nic_xml

DOMAIN = """<domain type='kvm' xmlns:one='http://opennebula.org/xmlns/libvirt/1.0'>
<name>one-42</name><devices>
<disk type='network' device='disk'><source protocol='rbd' name='one/one-7-42-0'>
<host name='mon1' port='6789'/></source><target dev='vda'/></disk>
</devices><metadata><one:vm><one:system_datastore>/var/lib/one//datastores/0/42
</one:system_datastore></one:vm></metadata></domain>"""


@pytest.mark.parametrize(("line", "expected"), [
    ("mon_host = [v2:10.0.0.1:3300,v1:10.0.0.1:6789] [v2:10.0.0.2:3300,v1:10.0.0.2:6789]",
     [("10.0.0.1", "6789"), ("10.0.0.2", "6789")]),
    ("mon host = 10.0.0.1, 10.0.0.2:16789 mon3", [("10.0.0.1", "6789"),
                                                 ("10.0.0.2", "16789"), ("mon3", "6789")]),
    ("mon_host = [v2:127.0.0.1:13300,v1:127.0.0.1:16789]", [("127.0.0.1", "16789")]),
    ("mon_host = [2001:db8::1]:6789", [("[2001:db8::1]", "6789")]),
])
def test_monitors_from_ceph_conf(tmp_path, line, expected):
    conf = tmp_path / "ceph.conf"
    conf.write_text(f"[global]\nfsid = x\n{line}\n")
    assert ceph_monitors(str(conf)) == expected
    assert ceph_monitors(str(tmp_path / "missing.conf")) == []


def test_prepare_sets_type_lists_every_monitor_and_keeps_metadata(tmp_path):
    conf = tmp_path / "ceph.conf"
    conf.write_text("mon_host = mon1:6789,mon2:6789,mon3:6789\n")
    root = prepare(DOMAIN, Settings([{"DOMAIN_TYPE": "qemu", "CEPH_CONF": str(conf)}]))
    assert root.get("type") == "qemu"
    hosts = [h.get("name") for h in root.iter("host")]
    assert hosts == ["mon1", "mon2", "mon3"], "upstream writes one monitor (#1955)"
    assert system_datastore_dir(root) == "/var/lib/one//datastores/0/42"
    assert "<one:system_datastore>" in ET.tostring(root, encoding="unicode")
    with pytest.raises(BadInput, match="DOMAIN_TYPE='xen'"):
        prepare(DOMAIN, Settings([{"DOMAIN_TYPE": "xen"}]))


def tag_memory(root: ET.Element) -> None:
    ET.SubElement(root, "memoryBacking")


def test_deploy_tweaks_python_and_executables(tmp_path):
    tweaks = tmp_path / "tweaks"
    tweaks.mkdir()
    script = tweaks / "10-cpu"
    script.write_text("#!/bin/sh\nsed 's|</devices>|</devices><cpu mode=\"host-model\"/>|'\n")
    script.chmod(0o755)
    settings = Settings([{"DEPLOY_TWEAKS": f"{__name__}:tag_memory",
                          "DEPLOY_TWEAKS_DIR": str(tweaks), "CEPH_CONF": "/nonexistent"}])
    root = prepare(DOMAIN, settings)
    assert root.find("memoryBacking") is not None and root.find("cpu") is not None
    script.write_text("#!/bin/sh\necho 'no cpu pinning here' >&2\nexit 2\n")
    with pytest.raises(ActionFailed, match=r"deploy tweak 10-cpu failed .exit 2.: no cpu pinning"):
        prepare(DOMAIN, settings)
    with pytest.raises(ActionFailed, match="cannot be loaded"):
        prepare(DOMAIN, Settings([{"DEPLOY_TWEAKS": "no.such.module:fn"}]))


def disk(**attrs: object) -> Disk:
    return Disk(parse_xml(f"<DISK>{elements({'DISK_ID': 1, **attrs})}</DISK>", what="disk"))


def test_rbd_disk_xml_with_cephx_iotune_and_bus():
    xml = disk_xml(42, disk(TYPE="RBD", SOURCE="one/one-7", CLONE="YES", CEPH_USER="libvirt",
                            CEPH_SECRET="s-uuid", CEPH_HOST="m1:6789 m2", TOTAL_IOPS_SEC=500,
                            READ_BYTES_SEC_MAX=10, CACHE="writeback"),
                   "sdb", "/d/0/42/disk.1", Settings([{}]))
    elem = ET.fromstring(xml)
    assert elem.find("source").get("name") == "one/one-7-42-1"
    assert [(h.get("name"), h.get("port")) for h in elem.iter("host")] == [("m1", "6789"),
                                                                          ("m2", "6789")]
    assert elem.find("auth").get("username") == "libvirt"
    assert elem.find("auth/secret").get("uuid") == "s-uuid"
    assert elem.find("target").get("bus") == "scsi"
    assert elem.find("driver").get("cache") == "writeback"
    assert elem.find("iotune/total_iops_sec").text == "500"
    assert elem.find("iotune/read_bytes_sec_max").text == "10"
    with pytest.raises(BadInput, match="CEPH_USER but no CEPH_SECRET"):
        disk_xml(42, disk(TYPE="RBD", SOURCE="one/one-7", CEPH_USER="x"), "vdb", "", Settings([]))
    with pytest.raises(BadInput, match="TOTAL_IOPS_SEC='fast'"):
        disk_xml(42, disk(TYPE="FILE", TOTAL_IOPS_SEC="fast"), "vdb", "/x", Settings([]))


def test_file_cdrom_and_nic_xml():
    cd = ET.fromstring(disk_xml(42, disk(TYPE="CDROM"), "hdb", "/d/0/42/disk.2", Settings([])))
    assert cd.get("device") == "cdrom" and cd.find("readonly") is not None
    assert cd.find("source").get("file") == "/d/0/42/disk.2" and cd.find("target").get(
        "bus") == "ide"
    nic = Nic(parse_xml("<NIC><NIC_ID>1</NIC_ID><MAC>02:00:00:00:00:01</MAC>"
                        "<VIRTIO_QUEUES>4</VIRTIO_QUEUES></NIC>", what="nic"))
    xml = nic_xml(nic, mac="02:00:00:00:00:01", bridge="br0", model="-", vn_mad="ovsdb",
                  target="one-42-1", settings=Settings([{"DEFAULT_ATTACH_NIC_MODEL": "e1000"}]))
    elem = ET.fromstring(xml)
    assert elem.find("virtualport").get("type") == "openvswitch"
    assert elem.find("model").get("type") == "e1000" and elem.find("driver") is None
    plain = ET.fromstring(nic_xml(None, mac="m", bridge="br1", model="virtio", vn_mad="bridge",
                                  target="t", settings=Settings([])))
    assert plain.find("virtualport") is None
    live = f"<domain><devices>{xml}{cd_xml()}</devices></domain>"
    assert find_device(live, "interface", mac="02:00:00:00:00:01") is not None
    assert find_device(live, "disk", target="hdb") is not None
    assert find_device(live, "disk", target="vdz") is None


def cd_xml() -> str:
    return disk_xml(42, disk(TYPE="CDROM"), "hdb", "/x.iso", Settings([]))


def test_an_attached_nic_carries_what_the_deployment_file_would():
    """Bandwidth limits, the traffic filter with the NIC's addresses, the model and virtio queues
    (auto: one per vCPU), exactly as oned writes them into a deployment file."""
    nic = Nic(parse_xml("<NIC><NIC_ID>2</NIC_ID><MAC>02:00:00:00:00:02</MAC><IP>10.0.0.5</IP>"
                        "<VROUTER_IP>10.0.0.1</VROUTER_IP><MODEL>virtio</MODEL>"
                        "<VIRTIO_QUEUES>auto</VIRTIO_QUEUES><INBOUND_AVG_BW>1000</INBOUND_AVG_BW>"
                        "<INBOUND_PEAK_KB>512</INBOUND_PEAK_KB>"
                        "<OUTBOUND_PEAK_BW>2000</OUTBOUND_PEAK_BW></NIC>", what="nic"))
    elem = ET.fromstring(nic_xml(
        nic, mac="02:00:00:00:00:02", bridge="br0", model="-", vn_mad="ovsdb", target="t",
        settings=Settings([{"DEFAULT_ATTACH_NIC_FILTER": "clean-traffic"}]), vcpus=3))
    assert elem.find("model").get("type") == "virtio"
    assert elem.find("driver").attrib == {"name": "vhost", "queues": "3"}
    ref = elem.find("filterref")
    assert ref.get("filter") == "clean-traffic"
    assert [p.get("value") for p in ref.iter("parameter")] == ["10.0.0.5", "10.0.0.1"]
    assert elem.find("bandwidth/inbound").attrib == {"average": "1000", "burst": "512"}
    assert elem.find("bandwidth/outbound").attrib == {"peak": "2000"}
    # no IP: no filter; nothing set: no bandwidth
    bare = ET.fromstring(nic_xml(None, mac="m", bridge="b", model="e1000", vn_mad="bridge",
                                 target="t", settings=Settings([{"DEFAULT_ATTACH_NIC_FILTER":
                                                                 "clean-traffic"}])))
    assert bare.find("filterref") is None and bare.find("bandwidth") is None
    # tenant input that is not a number is refused, never written
    bad = Nic(parse_xml("<NIC><MAC>m</MAC><INBOUND_AVG_BW>1' x='y</INBOUND_AVG_BW></NIC>",
                        what="nic"))
    with pytest.raises(BadInput, match="INBOUND_AVG_BW"):
        nic_xml(bad, mac="m", bridge="b", model="virtio", vn_mad="ovsdb", target="t",
                settings=Settings([]))


def test_a_disk_of_a_ssh_system_datastore_is_attached_as_the_file_it_is():
    """TM_MAD_SYSTEM=ssh: oned turns an RBD image's disk into TYPE=FILE, DISK_TYPE=FILE (the
    TM copied it into the VM directory): attached as that file, not as the RBD image."""
    elem = ET.fromstring(disk_xml(42, disk(TYPE="FILE", DISK_TYPE="FILE", SOURCE="one/one-7",
                                           TM_MAD="rbd", CLONE="YES"),
                                  "vdc", "/var/lib/one/datastores/0/42/disk.3", Settings([])))
    assert elem.get("type") == "file"
    assert elem.find("source").get("file") == "/var/lib/one/datastores/0/42/disk.3"


def test_an_attached_disk_carries_iothread_queues_and_its_luks_secret():
    elem = ET.fromstring(disk_xml(42, disk(TYPE="FILE", IOTHREAD="2", VIRTIO_BLK_QUEUES="auto",
                                           LUKS_SECRET="9b1f-luks", CACHE="writeback",
                                           IO="native", DISCARD="ignore"),
                                  "vdc", "/x", Settings([]), iothreads=2, vcpus=4))
    driver = elem.find("driver")
    assert (driver.get("iothread"), driver.get("queues")) == ("2", "4")
    assert (driver.get("cache"), driver.get("io"), driver.get("discard")) == (
        "writeback", "native", "ignore")
    assert elem.find("encryption").get("format") == "luks"
    assert elem.find("encryption/secret").attrib == {"type": "passphrase", "uuid": "9b1f-luks"}
    # an IOTHREAD out of range is spread over the VM's threads; no iothreads: none
    spread = ET.fromstring(disk_xml(42, disk(TYPE="FILE", IOTHREAD="9"), "vdc", "/x",
                                    Settings([]), iothreads=2)).find("driver")
    assert spread.get("iothread") in ("1", "2")
    plain = ET.fromstring(disk_xml(42, disk(TYPE="FILE"), "sdb", "/x", Settings([]),
                                   iothreads=2, default_queues="2")).find("driver")
    assert plain.get("iothread") is None and plain.get("queues") is None, "virtio only"
