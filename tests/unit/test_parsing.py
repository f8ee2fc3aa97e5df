"""Pure parsing logic of the Ceph layer, the DS sources and the TM transfer runner."""

import struct

import pytest

from one_drivers.ceph.naming import ImageSpec, carrier_pattern
from one_drivers.ceph.stream import parse_rate
from one_drivers.core.config import Settings
from one_drivers.core.documents import Disk
from one_drivers.core.errors import BadInput
from one_drivers.core.xmlview import parse_xml
from one_drivers.datastore.rbd.sources import (
    check_path_allowed,
    header_virtual_size,
    parse_rbd_url,
    redact,
    refuse_references,
    sniff_format,
)
from one_drivers.tm.rbd.common import disk_image
from one_drivers.tm.transfer import parse_line


@pytest.mark.parametrize(("spec", "expected"), [
    ("one/one-7", ImageSpec("one", "one-7")),
    ("fast/one-7-42-0@3", ImageSpec("fast", "one-7-42-0", "3")),
    ("one-7", ImageSpec("one", "one-7")),  # with the default pool
    ("mkt/apps/one-app-3-0a1b2c3d@app", ImageSpec("mkt", "one-app-3-0a1b2c3d", "app", "apps")),
])
def test_image_spec_parse(spec, expected):
    assert ImageSpec.parse(spec, "one") == expected


@pytest.mark.parametrize("spec", ["one/", "/one-7", "one/one 7", "one/$(id)", "one/a@b;c",
                                  "one-7", "one//x", "a/b/c/d", "one/n s/x"])
def test_image_spec_rejects_what_is_not_a_name(spec):
    with pytest.raises(BadInput):
        ImageSpec.parse(spec)


def test_carriers_are_not_vm_disks():
    carriers = carrier_pattern("one-11")
    assert carriers.match("one-11-0") and carriers.match("one-11-0:1:4")
    assert not carriers.match("one-11-42-0") and not carriers.match("one-110-0")


@pytest.mark.parametrize(("value", "rate"), [
    (None, None), ("", None), ("0", None), ("1000", 1000.0), ("10K", 10240.0),
    ("2M", 2 * 1024 * 1024.0), ("1G", 1024.0 ** 3), ("5MB", 5 * 1024 * 1024.0)])
def test_parse_rate(value, rate):
    assert parse_rate(value) == rate


def test_sniff_formats_and_header_sizes():
    qcow2 = b"QFI\xfb" + bytes(20) + struct.pack(">Q", 10 << 30) + bytes(100)
    assert sniff_format(qcow2) == "qcow2" and header_virtual_size("qcow2", qcow2) == 10 << 30
    vmdk = b"KDMV" + bytes(8) + struct.pack("<Q", 2048) + bytes(100)
    assert sniff_format(vmdk) == "vmdk" and header_virtual_size("vmdk", vmdk) == 2048 * 512
    vdi = bytearray(0x200)
    vdi[0x40:0x44] = b"\x7f\x10\xda\xbe"
    vdi[0x170:0x178] = struct.pack("<Q", 1 << 30)
    assert sniff_format(bytes(vdi)) == "vdi" and header_virtual_size("vdi", bytes(vdi)) == 1 << 30
    assert sniff_format(b"\x00" * 512) == "raw"
    assert header_virtual_size("vhdx", b"vhdxfile") is None
    assert header_virtual_size("qcow2", b"QFI") is None  # too short: unknown, not a crash


def test_rbd_urls_name_an_image_and_never_credentials():
    assert parse_rbd_url("rbd://host/one/one-7@snap") == ImageSpec("one", "one-7", "snap")
    for url in ("rbd://admin@host/one/one-7", "rbd://host/one/one-7?CEPH_USER=admin",
                "rbd://host/one/one-7?CEPH_KEY=/etc/ceph/ceph.client.admin.keyring",
                "rbd://host/one/one-7?CEPH_CONF=/etc/other.conf", "rbd://a:b@host/one/x"):
        with pytest.raises(BadInput, match="carry no user, key or configuration"):
            parse_rbd_url(url)


def test_urls_in_messages_carry_no_password():
    assert redact("http://user:pw@example.org:8080/a.img") == \
        "http://user:***@example.org:8080/a.img"
    assert redact("http://example.org/a.img") == "http://example.org/a.img"


def test_headers_that_name_other_files_are_refused():
    import struct

    qcow2 = bytearray(512)
    qcow2[0:4] = b"QFI\xfb"
    struct.pack_into(">I", qcow2, 4, 3)
    refuse_references("qcow2", bytes(qcow2), "x")  # positive control: self-contained
    struct.pack_into(">Q", qcow2, 8, 0x200)
    with pytest.raises(BadInput, match="backing file"):
        refuse_references("qcow2", bytes(qcow2), "x")
    struct.pack_into(">Q", qcow2, 8, 0)
    struct.pack_into(">Q", qcow2, 72, 0x4)
    with pytest.raises(BadInput, match="external file"):
        refuse_references("qcow2", bytes(qcow2), "x")
    with pytest.raises(BadInput, match="descriptor"):
        refuse_references("vmdk", b"# Disk DescriptorFile\nRW 8 FLAT \"/etc/shadow\" 0\n", "x")
    vmdk = bytearray(4096)
    vmdk[0:4] = b"KDMV"
    struct.pack_into("<QQ", vmdk, 28, 1, 2)
    desc = b'createType="monolithicSparse"\nRW 8 SPARSE "x.vmdk"\n'
    vmdk[512:512 + len(desc)] = desc
    refuse_references("vmdk", bytes(vmdk), "x")
    delta = b'createType="monolithicSparse"\nparentFileNameHint="/etc/shadow"\n'
    vmdk[512:512 + len(delta)] = delta
    with pytest.raises(BadInput, match="delta"):
        refuse_references("vmdk", bytes(vmdk), "x")


def test_restricted_and_safe_dirs(tmp_path):
    safe = tmp_path / "safe"
    safe.mkdir()
    settings = Settings([{"RESTRICTED_DIRS": "/", "SAFE_DIRS": str(safe)}])
    check_path_allowed(safe / "disk.img", settings)  # real paths: resolved by the caller's fd
    with pytest.raises(BadInput, match="restricted directory"):
        check_path_allowed(tmp_path / "disk.img", settings)
    with pytest.raises(BadInput):  # .. cannot climb out of a safe dir
        check_path_allowed(safe / ".." / "disk.img", settings)
    check_path_allowed(tmp_path / "x", Settings([{}]))  # no restriction configured


def test_transfer_lines():
    assert parse_line("  # a comment", 1) is None and parse_line("", 2) is None
    assert parse_line("CLONE rbd fe:one/one-7 n1:/d/0/42/disk.0 42 100", 3) == (
        "clone", "rbd", ["fe:one/one-7", "n1:/d/0/42/disk.0", "42", "100"])
    assert parse_line("CLONE.ssh rbd a b 1 2", 4)[0] == "clone.ssh"
    for bad in ("CLONE", "CLONE ../x a b", "CLO;NE rbd a"):
        with pytest.raises(BadInput):
            parse_line(bad, 5)


def disk(xml):
    return Disk(parse_xml(f"<DISK>{xml}</DISK>", what="t"))


def test_disk_image_names_as_upstream():
    settings = Settings([{"POOL_NAME": "one"}])
    clone = disk("<DISK_ID>0</DISK_ID><SOURCE>fast/one-7</SOURCE><CLONE>YES</CLONE>")
    assert disk_image(42, clone, settings)[:2] == (ImageSpec("fast", "one-7-42-0"), "clone")
    persistent = disk("<DISK_ID>1</DISK_ID><SOURCE>one/one-8</SOURCE><CLONE>NO</CLONE>")
    assert disk_image(42, persistent, settings)[:2] == (ImageSpec("one", "one-8"), "persistent")
    volatile = disk("<DISK_ID>2</DISK_ID><TYPE>fs</TYPE>")
    assert disk_image(42, volatile, settings)[:2] == (ImageSpec("one", "one-sys-42-2"),
                                                      "volatile")


def test_image_spec_prints_its_namespace():
    assert str(ImageSpec("mkt", "x", "app", "apps")) == "mkt/apps/x@app"
    assert str(ImageSpec("one", "one-7")) == "one/one-7"
