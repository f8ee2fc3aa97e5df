"""The libvirt VMM driver against the lab's real libvirtd + QEMU (TCG), Ceph and OVS, through the
installed remotes as one_vmm_exec runs them: argv with ``<vmid> <host>`` appended, the deployment
file or the VMM_DRIVER_ACTION_DATA document on stdin."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from one_drivers.lab.console import GuestConsole
from one_drivers.lab.documents import domain_xml, elements, lab_ds_template, vm_doc
from tests.helpers import last_line

READY = "one-lab-guest: ready"
HOST = "node1"


@pytest.fixture(scope="module")
def vmm_remotes(tmp_path_factory):
    """Remotes with a short ACPI_TIMEOUT, as an operator would set in libvirt.conf."""
    from one_drivers.core.remotes import install

    dest = tmp_path_factory.mktemp("vmm-remotes")
    install(dest, python=sys.executable)
    conf = dest / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + "\nACPI_TIMEOUT=4\nDETACH_TIMEOUT=10\n")
    return dest


@pytest.fixture(scope="module")
def guest_raw(lab_env, tmp_path_factory):
    from one_drivers.lab.lab import Lab

    raw = tmp_path_factory.mktemp("guest") / "disk.raw"
    subprocess.run(["qemu-img", "convert", "-O", "raw", str(Lab().guest.build_disk()), str(raw)],
                   check=True, timeout=120)
    return raw


class Vm:
    """One test VM: its RBD root disk, its directory, its documents and the driver's shims."""

    def __init__(self, env: dict[str, str], remotes: Path, ioctx, raw: Path, root: Path) -> None:
        import rbd

        self.env, self.remotes, self.ioctx = env, remotes, ioctx
        self.id = 3000 + int(uuid.uuid4().hex[:3], 16)
        self.dir = root / str(self.id)
        self.dir.mkdir()
        self.disk = f"one-{self.id}-{uuid.uuid4().hex[:4]}"
        rbd.RBD().create(ioctx, self.disk, raw.stat().st_size)
        with rbd.Image(ioctx, self.disk) as image:
            image.write(raw.read_bytes(), 0)
        self.images = [self.disk]
        self.console = GuestConsole(self.dir / "console")
        self.deploy_id = ""

    def domain(self, **kw) -> str:
        return domain_xml(self.env, self.id, str(self.dir), str(self.dir / "console"),
                          rbd_disks=[(f"one/{self.disk}", "vda")], **kw)

    def action_data(self, *, disks=(), nics=(), template: dict | None = None,
                    tm_mad: str = "rbd") -> str:
        vm = vm_doc(self.id, list(disks), nics=list(nics), extra=elements(template or {}))
        ds = lab_ds_template(self.env, POOL_NAME=self.env["ONE_LAB_CEPH_POOL"])
        return (f"<VMM_DRIVER_ACTION_DATA><HOST>{HOST}</HOST><DEPLOY_ID>{self.deploy_id}"
                f"</DEPLOY_ID>{vm}<DATASTORE><ID>0</ID><NAME>system</NAME><TM_MAD>{tm_mad}"
                f"</TM_MAD><TEMPLATE>{elements(ds)}</TEMPLATE></DATASTORE>"
                "</VMM_DRIVER_ACTION_DATA>")

    def run(self, action: str, *argv: str, stdin: str | None = None, env: dict | None = None
            ) -> subprocess.CompletedProcess[str]:
        """The action as one_vmm_exec runs it; stdin defaults to the action data document."""
        data = self.action_data() if stdin is None else stdin
        return subprocess.run([str(self.remotes / "vmm" / "libvirt" / action), *argv,
                               str(self.id), HOST], input=data, capture_output=True,
                              text=True, timeout=300, check=False,
                              env={**os.environ, **(env or {})})

    def ok(self, action: str, *argv: str, stdin: str | None = None) -> str:
        res = self.run(action, *argv, stdin=stdin)
        assert res.returncode == 0, res.stderr
        return res.stdout.strip()

    def deploy(self, **kw) -> str:
        self.deploy_id = self.ok("deploy", str(self.dir / "deployment.0"), HOST,
                                 stdin=self.domain(**kw))
        return self.deploy_id

    def state(self) -> int | None:
        import libvirt

        conn = libvirt.open(self.env["LIBVIRT_DEFAULT_URI"])
        try:
            return int(conn.lookupByUUIDString(self.deploy_id).state()[0])
        except libvirt.libvirtError:
            return None
        finally:
            conn.close()

    def close(self) -> None:
        import libvirt
        import rbd

        conn = libvirt.open(self.env["LIBVIRT_DEFAULT_URI"])
        try:
            for dom in conn.listAllDomains():
                if dom.name() == f"one-{self.id}":
                    dom.destroy()
        except libvirt.libvirtError:
            pass
        finally:
            conn.close()
        for name in [*self.images, f"one-sys-{self.id}-checkpoint"]:
            with contextlib.suppress(rbd.ImageNotFound):
                with rbd.Image(self.ioctx, name) as image:
                    for snap in list(image.list_snaps()):
                        image.remove_snap(snap["name"])
                rbd.RBD().remove(self.ioctx, name)


@pytest.fixture
def vm(lab_env, vmm_remotes, ceph_admin, guest_raw, tmp_path):
    v = Vm(lab_env, vmm_remotes, ceph_admin[1], guest_raw, tmp_path)
    yield v
    v.close()


def test_deploy_from_rbd_shutdown_deploy_again_cancel(vm, lab_env):
    import base64

    bridge, mac, target = f"dv{uuid.uuid4().hex[:6]}", "02:00:00:0d:00:01", f"one-{vm.id}-0"
    nic = {"NIC_ID": 0, "NETWORK_ID": 1, "VN_MAD": "ovsdb", "BRIDGE": bridge, "MAC": mac,
           "TARGET": target, "VLAN_ID": 77, "FILTER_MAC_SPOOFING": "YES"}
    vnm_doc = base64.b64encode(vm_doc(vm.id, [], nics=[nic]).encode())
    pre = subprocess.run([str(vm.remotes / "vnm" / "ovsdb" / "pre")], input=vnm_doc,
                         capture_output=True, timeout=60, check=False)
    assert pre.returncode == 0, pre.stderr
    first = vm.deploy(nics=[(bridge, mac, target)])
    assert len(first) == 36 and vm.state() == 1
    vm.console.wait_for(READY)
    assert "vda" in vm.console.run("ls /sys/block").split()
    assert "eth0" in vm.console.run("ls /sys/class/net").split()
    tag = subprocess.run(["ovs-vsctl", "get", "Port", target, "tag"], capture_output=True,
                         text=True, check=True, timeout=20).stdout.strip()
    assert tag == "77", "the port the VNM driver prepared, kept by libvirt"
    assert vm.deploy() == first, "a re-run answers the running domain"
    written = (vm.dir / "deployment.0").read_text()
    assert 'type="qemu"' in written and "<one:system_datastore>" in written
    res = vm.run("shutdown", first, HOST)
    assert res.returncode == 0, res.stderr
    assert vm.state() is None and "ignored ACPI" not in res.stderr, "the guest shut itself down"
    again = vm.deploy()
    assert again != first and vm.state() == 1
    vm.console.wait_for(READY)
    vm.ok("reboot", again, HOST)
    vm.ok("reset", again, HOST)
    vm.ok("cancel", again, HOST)
    assert vm.state() is None
    for action in ("cancel", "shutdown"):  # already gone: success, as upstream's scripts
        res = vm.run(action, again, HOST)
        assert res.returncode == 0 and "already gone" in res.stderr
    res = vm.run("reboot", again, HOST)
    assert res.returncode == 6 and f"domain {again} does not exist" in last_line(res.stderr)
    clean = subprocess.run([str(vm.remotes / "vnm" / "ovsdb" / "clean"), HOST], input=vnm_doc,
                           capture_output=True, timeout=60, check=False)
    assert clean.returncode == 0, clean.stderr
    assert bridge not in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                        text=True, check=True).stdout.split()


def test_shutdown_of_a_guest_ignoring_acpi_is_bounded(vm):
    vm.deploy(acpi=False)
    vm.console.wait_for(READY)
    res = vm.run("shutdown", vm.deploy_id, HOST)  # bounded by the subprocess timeout
    assert res.returncode == 0, res.stderr
    assert vm.state() is None, "destroyed after ACPI_TIMEOUT"
    assert f"domain {vm.deploy_id} ignored ACPI for 4 s: destroying it" in res.stderr, \
        "it waited its ACPI_TIMEOUT, then destroyed the guest"


def test_save_and_restore_to_a_file_checkpoint(vm, ceph_admin):
    """A system datastore that is not Ceph keeps the checkpoint as the file libvirt wrote."""
    from tests.helpers import rbd_names

    vm.deploy()
    vm.console.wait_for(READY)
    vm.console.run("echo kept > /tmp/mark")
    checkpoint = vm.dir / "checkpoint"
    data = vm.action_data(tm_mad="ssh")
    vm.ok("save", vm.deploy_id, str(checkpoint), HOST, stdin=data)
    assert vm.state() is None and checkpoint.stat().st_size > 1 << 20
    assert f"one-sys-{vm.id}-checkpoint" not in rbd_names(ceph_admin[1])
    vm.ok("restore", str(checkpoint), HOST, vm.deploy_id, stdin=data)
    assert vm.console.run("cat /tmp/mark") == "kept"
    res = vm.run("restore", str(vm.dir / "nothing"), HOST, str(uuid.uuid4()), stdin=data)
    assert res.returncode == 6 and "no checkpoint at" in last_line(res.stderr)


def test_save_and_restore_through_rbd(vm, ceph_admin):
    from tests.helpers import rbd_names

    vm.deploy()
    vm.console.wait_for(READY)
    vm.console.run("echo remembered > /tmp/mark")
    checkpoint = vm.dir / "checkpoint"
    data = vm.action_data()
    vm.ok("save", vm.deploy_id, str(checkpoint), HOST, stdin=data)
    assert vm.state() is None and not checkpoint.exists()
    assert f"one-sys-{vm.id}-checkpoint" in rbd_names(ceph_admin[1])
    vm.ok("save", vm.deploy_id, str(checkpoint), HOST, stdin=data)  # re-run: still fine
    vm.ok("restore", str(checkpoint), HOST, vm.deploy_id, stdin=data)
    assert vm.state() == 1
    assert vm.console.run("cat /tmp/mark") == "remembered", "memory came back"
    assert f"one-sys-{vm.id}-checkpoint" not in rbd_names(ceph_admin[1])
    assert not checkpoint.exists()
    vm.ok("restore", str(checkpoint), HOST, vm.deploy_id, stdin=data)  # re-run: running


def test_hotplug_disk_and_nic_the_guest_sees_them(vm, ceph_admin, lab_env):
    import rbd

    vm.deploy()
    vm.console.wait_for(READY)
    extra = f"one-{vm.id}-extra"
    rbd.RBD().create(ceph_admin[1], extra, 32 << 20)
    vm.images.append(extra)
    disk = {"DISK_ID": 1, "TYPE": "RBD", "SOURCE": f"one/{extra}", "ATTACH": "YES",
            "CEPH_USER": lab_env["ONE_LAB_CEPH_USER"],
            "CEPH_SECRET": lab_env["ONE_LAB_CEPH_SECRET"],
            "CEPH_HOST": lab_env["ONE_LAB_CEPH_MON"], "TARGET": "vdb",
            "TOTAL_IOPS_SEC": "500", "CACHE": "writeback"}
    data = vm.action_data(disks=[disk])
    argv = (vm.deploy_id, str(vm.dir / "disk.1"), "vdb", "1", "bXNn")
    vm.ok("attach_disk", *argv, stdin=data)
    vm.ok("attach_disk", *argv, stdin=data)  # re-run: already there
    assert vm.console.wait_until_output("ls /sys/block", "vdb")
    assert vm.console.run("cat /sys/block/vdb/size") == str((32 << 20) // 512)
    live = vm_xml(lab_env, vm.deploy_id)
    assert "<total_iops_sec>500</total_iops_sec>" in live and "cache='writeback'" in live
    with rbd.Image(ceph_admin[1], extra) as image:
        image.resize(64 << 20)
    vm.ok("resize_disk", vm.deploy_id, "1", "64", "bXNn", HOST, stdin=data)
    assert vm.console.wait_until_output("cat /sys/block/vdb/size", str((64 << 20) // 512))
    vm.ok("detach_disk", vm.deploy_id, str(vm.dir / "disk.1"), "vdb", "1", stdin=data)
    assert "vdb" not in vm.console.run("ls /sys/block").split()
    # a NIC on a lab OVS bridge
    bridge = f"hp{uuid.uuid4().hex[:6]}"
    subprocess.run(["ovs-vsctl", "add-br", bridge, "--", "set", "bridge", bridge,
                    "datapath_type=netdev"], check=True, timeout=20)
    try:
        mac = "02:00:00:0b:00:01"
        argv = (vm.deploy_id, mac, bridge, "virtio", "ovsdb", f"one-{vm.id}-1")
        # its limits as the deployment file would carry them (hot-plug as complete as deploy)
        nic_data = vm.action_data(nics=[{"NIC_ID": 1, "MAC": mac, "BRIDGE": bridge,
                                         "VN_MAD": "ovsdb", "TARGET": f"one-{vm.id}-1",
                                         "INBOUND_AVG_BW": 1000, "INBOUND_PEAK_KB": 64,
                                         "OUTBOUND_AVG_BW": 2000}])
        vm.ok("attach_nic", *argv, stdin=nic_data)
        assert vm.console.wait_until_output("ls /sys/class/net", "eth0")
        import xml.etree.ElementTree as ET

        live_nic = next(i for i in ET.fromstring(vm_xml(lab_env, vm.deploy_id)).iterfind(
            "devices/interface") if i.find("mac").get("address") == mac)
        assert live_nic.find("bandwidth/inbound").attrib == {"average": "1000", "burst": "64"}
        assert live_nic.find("bandwidth/outbound").get("average") == "2000"
        assert f"one-{vm.id}-1" in subprocess.run(["ovs-vsctl", "list-ports", bridge],
                                                  capture_output=True, text=True,
                                                  check=True).stdout
        vm.ok("detach_nic", vm.deploy_id, mac, stdin=data)
        assert "eth0" not in vm.console.run("ls /sys/class/net").split()
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)


def test_context_cdrom_swap_and_live_resize(vm, lab_env):
    isos = []
    for n in (1, 2):
        src = vm.dir / f"ctx{n}"
        src.mkdir()
        (src / "context.sh").write_text(f"GENERATION={n}\n")
        iso = vm.dir / f"context{n}.iso"
        subprocess.run(["xorriso", "-as", "mkisofs", "-quiet", "-V", "CONTEXT", "-o", str(iso),
                        str(src)], check=True, capture_output=True, timeout=60)
        isos.append(iso)
    vm.deploy(cdrom=str(isos[0]))
    vm.console.wait_for(READY)
    read = "mount -t iso9660 /dev/sr0 /mnt 2>&1 && cat /mnt/context.sh; umount /mnt 2>/dev/null"
    assert vm.console.run(read) == "GENERATION=1"
    data = vm.action_data()
    vm.ok("prereconfigure", vm.deploy_id, "hda", stdin=data)
    vm.ok("reconfigure", vm.deploy_id, "hda", str(isos[1]), stdin=data)
    assert vm.console.run(read) == "GENERATION=2"
    resized = vm.action_data(template={"VCPU": 2, "MEMORY": 160})
    vm.ok("resize", vm.deploy_id, stdin=resized)
    import libvirt

    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    try:
        dom = conn.lookupByUUIDString(vm.deploy_id)
        assert dom.vcpusFlags(libvirt.VIR_DOMAIN_AFFECT_LIVE) == 2
        deadline = time.monotonic() + 20  # the guest's balloon driver answers in a second or two
        while dom.info()[2] != 160 * 1024 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert dom.info()[2] == 160 * 1024, "the guest gave the memory back"
    finally:
        conn.close()
    assert vm.console.wait_until_output("ls /sys/devices/system/cpu", "cpu1")
    too_many = vm.run("resize", vm.deploy_id, stdin=vm.action_data(template={"VCPU": 4}))
    assert too_many.returncode == 3 and "VCPU=4 exceeds the 2" in last_line(too_many.stderr)
    too_much = vm.run("resize", vm.deploy_id, stdin=vm.action_data(
        template={"MEMORY": 512, "MEMORY_RESIZE_MODE": "HOTPLUG"}))
    assert too_much.returncode == 3 and "MEMORY=512 MB exceeds the 192 MB the VM was started " \
        "with (MEMORY_RESIZE_MODE=HOTPLUG)" in last_line(too_much.stderr)


def test_bad_input_is_one_plain_line(vm, tmp_path):
    res = vm.run("deploy", str(vm.dir / "deployment.0"), HOST, stdin="not xml")
    assert res.returncode == 3 and "stdin is not well-formed XML" in last_line(res.stderr)
    missing = vm.domain().replace(vm.disk, "one-does-not-exist")
    res = vm.run("deploy", str(vm.dir / "deployment.0"), HOST, stdin=missing)
    assert res.returncode == 1, res.stderr
    assert "one-does-not-exist" in last_line(res.stderr) and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1
    gone = str(uuid.uuid4())
    assert vm.run("shutdown", gone, HOST).returncode == 0
    # libvirtd unreachable: a clear error (a hang would end at the subprocess timeout)
    res = vm.run("cancel", gone, HOST,
                 env={"LIBVIRT_DEFAULT_URI": f"qemu:///system?socket={tmp_path}/none"})
    assert res.returncode == 4 and "cannot reach libvirt" in last_line(res.stderr)


def vm_xml(env: dict[str, str], deploy_id: str) -> str:
    import libvirt

    conn = libvirt.open(env["LIBVIRT_DEFAULT_URI"])
    try:
        return str(conn.lookupByUUIDString(deploy_id).XMLDesc(0))
    finally:
        conn.close()


def test_vm_snapshots_of_an_rbd_vm_revert_and_delete(vm, ceph_admin, lab_env):
    import rbd

    from one_drivers.lab.documents import disk_attrs

    vm.deploy()
    vm.console.wait_for(READY)
    disks = [disk_attrs(lab_env, 0, TYPE="RBD", SOURCE=f"one/{vm.disk}", TARGET="vda")]
    data = vm.action_data(disks=disks)
    vm.console.run("mkdir -p /mnt/d && mount /dev/vda /mnt/d && echo first > /mnt/d/f && sync "
                   "&& echo first > /tmp/m")
    assert vm.ok("snapshot_create", vm.deploy_id, "0", stdin=data) == "snap-0"
    assert vm.ok("snapshot_create", vm.deploy_id, "0", stdin=data) == "snap-0"  # re-run
    with rbd.Image(ceph_admin[1], vm.disk, read_only=True) as image:
        assert "one-vm-snap-0" in {s["name"] for s in image.list_snaps()}
    assert (vm.dir / "snap-0.mem").exists() and (vm.dir / "snap-0.json").exists()
    vm.console.run("echo second > /mnt/d/f && sync && echo second > /tmp/m")
    vm.ok("snapshot_revert", vm.deploy_id, "snap-0", stdin=data)
    assert vm.state() == 1, "running again, same deploy id"
    assert vm.console.run("cat /tmp/m") == "first", "memory went back"
    assert vm.console.run("cat /mnt/d/f") == "first", "the disk went back with it"
    vm.ok("snapshot_delete", vm.deploy_id, "snap-0", stdin=data)
    vm.ok("snapshot_delete", vm.deploy_id, "snap-0", stdin=data)  # re-run: already gone
    with rbd.Image(ceph_admin[1], vm.disk, read_only=True) as image:
        assert not list(image.list_snaps())
    assert not (vm.dir / "snap-0.mem").exists() and not (vm.dir / "snap-0.json").exists()


@pytest.fixture
def two_hosts(lab_env, vmm_remotes, tmp_path):
    """Remotes whose LIBVIRT_REMOTE_URI reaches the lab's second libvirtd (the ssh host's), and
    a VM directory on both hosts (/var/lib/one/datastores is private to each)."""
    import shutil

    from one_drivers.core.remotes import install

    remotes = tmp_path / "remotes"
    install(remotes, python=sys.executable)
    conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + f"\nLIBVIRT_REMOTE_URI={lab_env['ONE_LAB_HOST_LIBVIRT_URI']}"
                    f"\nMIGRATE_URI={lab_env['ONE_LAB_HOST_MIGRATE_URI']}"
                    "\nMIGRATE_AUTO_CONVERGE=yes\n")
    made = []
    yield remotes, made
    for path in made:
        shutil.rmtree(path, ignore_errors=True)


def test_live_migration_between_two_hosts(vm, two_hosts, lab_env, tmp_path):
    import shutil

    import libvirt

    from one_drivers.core import remote
    from one_drivers.core.remotes import install
    from one_drivers.lab.lab import Lab
    from one_drivers.lab.proc import read_pid

    remotes, made = two_hosts
    host2 = read_pid(Lab().libvirt2.pidfile)
    assert os.readlink(f"/proc/{host2}/ns/net") != os.readlink("/proc/self/ns/net"), \
        "the second host has a network of its own"
    assert os.readlink(f"/proc/{host2}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
    ds_dir = f"/var/lib/one/datastores/199/{vm.id}"
    here, there = Path(ds_dir), Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / "199" / str(vm.id)
    for d in (here, there):  # what TM premigrate does: the VM directory on both hosts
        d.mkdir(parents=True, exist_ok=True)
        made.append(d)
    vm.dir = here
    vm.console = GuestConsole(here / "console")
    vm.deploy(guest_agent=True)
    vm.console.wait_for(READY)
    vm.console.run("echo travelling > /tmp/m")
    vm.console.wait_for("one-lab-guest: guest agent on")
    vm.console.run("date -u -s '2001-02-03 04:05:06' >/dev/null")  # SYNC_TIME sets it back
    # a destination that cannot be reached: a clear error, the source untouched
    unreachable = tmp_path / "unreachable"
    install(unreachable, python=sys.executable)
    conf = unreachable / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + f"\nLIBVIRT_REMOTE_URI=qemu:///system?socket={tmp_path}/x\n")
    vm.remotes = unreachable
    res = vm.run("migrate", vm.deploy_id, "one-lab-host", HOST)
    assert res.returncode == 4 and "cannot reach libvirt" in last_line(res.stderr)
    assert vm.state() == 1 and vm.console.run("cat /tmp/m") == "travelling"
    vm.remotes = remotes
    from one_drivers.lab.documents import disk_attrs

    disks = [disk_attrs(lab_env, 0, TYPE="RBD", SOURCE=f"one/{vm.disk}", TARGET="vda")]
    data = vm.action_data(disks=disks)
    vm.ok("snapshot_create", vm.deploy_id, "0", stdin=data)
    for name in ("snap-0.json", "snap-0.mem"):  # TM premigrate copies the VM directory
        shutil.copy2(here / name, there / name)
    res = vm.run("migrate", vm.deploy_id, "one-lab-host", HOST)
    assert res.returncode == 0, res.stderr
    assert vm.state() is None, "gone from the source"
    dst = libvirt.open(lab_env["ONE_LAB_HOST_LIBVIRT_URI"])
    try:
        moved = dst.lookupByUUIDString(vm.deploy_id)
        assert moved.state()[0] == 1
        on_dst = GuestConsole(there / "console")
        assert on_dst.run("cat /tmp/m") == "travelling", \
            "the guest answers on the destination, memory intact"
        assert "set the guest's clock" in res.stderr, res.stderr
        assert on_dst.run("date -u +%Y") == str(time.gmtime().tm_year), "SYNC_TIME"
        # the snapshot taken before the move reverts there, run on that host as oned does
        on_dst.run("echo moved > /tmp/m")
        host_conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
        host_conf.write_text(host_conf.read_text()
                             + f"\nLIBVIRT_URI={lab_env['ONE_LAB_HOST_LIBVIRT_URI']}\n")
        reverted = remote.run(lab_env["ONE_LAB_SSH_HOST"],
                              [str(remotes / "vmm" / "libvirt" / "snapshot_revert"),
                               vm.deploy_id, "snap-0", str(vm.id), "one-lab-host"],
                              input=data.encode(), timeout=120)
        assert reverted.returncode == 0
        moved = dst.lookupByUUIDString(vm.deploy_id)
        assert on_dst.run("cat /tmp/m") == "travelling", "reverted on the new host"
        # from the destination to itself: refused before anything moves
        same = vm.run("migrate", vm.deploy_id, "one-lab-host", HOST,
                      env={"LIBVIRT_DEFAULT_URI": lab_env["ONE_LAB_HOST_LIBVIRT_URI"]})
        assert same.returncode == 3 and "is this very host" in last_line(same.stderr)
        assert moved.state()[0] == 1
        moved.destroy()
    finally:
        dst.close()


def test_live_migration_keeps_the_vms_network(vm, two_hosts, lab_env):
    """oned's order for a VM with NICs: VNM pre on the destination, migrate, VNM post there, VNM
    clean on the source. The destination is the second lab host with an Open vSwitch of its own
    in its own network namespace: the guest answers there on its VLAN, anti-spoofing holds
    there, and nothing of the VM is left on the source's switch."""
    import base64

    import libvirt

    from one_drivers.lab import netns

    remotes, made = two_hosts
    h2 = lab_env["ONE_LAB_HOST_NETNS"]
    from one_drivers.lab.lab import Lab

    on_host2 = {**os.environ, **Lab().ovs2.driver_env()}
    bridge = f"mg{uuid.uuid4().hex[:6]}"

    def nic(vm_id: int, last: int) -> dict[str, object]:
        return {"NIC_ID": 0, "NETWORK_ID": 1, "VN_MAD": "ovsdb", "BRIDGE": bridge,
                "MAC": f"02:00:0a:4d:00:{last:02x}", "IP": f"10.77.0.{last}",
                "TARGET": f"one-{vm_id}-0", "VLAN_ID": 77, "FILTER_IP_SPOOFING": "YES",
                "FILTER_MAC_SPOOFING": "YES"}

    guest, peer1, peer2 = nic(vm.id, 10), nic(vm.id + 5000, 20), nic(vm.id + 6000, 30)

    def vnm(action: str, n: dict[str, object], *argv: str, host2: bool = False) -> None:
        """A VNM action for the VM owning NIC ``n``, on the first host or the second."""
        doc = vm_doc(int(str(n["TARGET"]).split("-")[1]), [], nics=[n])
        proc = subprocess.run([*(["ip", "netns", "exec", h2] if host2 else []),
                               str(remotes / "vnm" / "ovsdb" / action), *argv],
                              input=base64.b64encode(doc.encode()), capture_output=True,
                              timeout=120, check=False, env=on_host2 if host2 else None)
        assert proc.returncode == 0, (action, proc.stderr.decode())

    def vsctl(*args: str, host2: bool = False) -> str:
        db = [f"--db={lab_env['ONE_LAB_HOST_OVSDB']}"] if host2 else []
        return subprocess.run(["ovs-vsctl", *db, "--timeout=10", *args], capture_output=True,
                              text=True, check=True, timeout=20).stdout.strip()

    ds_dir = f"/var/lib/one/datastores/199/{vm.id}"
    here, there = Path(ds_dir), Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / "199" / str(vm.id)
    for d in (here, there):  # what TM premigrate does: the VM directory on both hosts
        d.mkdir(parents=True, exist_ok=True)
        made.append(d)
    vm.dir, vm.console, vm.remotes = here, GuestConsole(here / "console"), remotes
    fakes: list[netns.FakeNic] = []
    dst = libvirt.open(lab_env["ONE_LAB_HOST_LIBVIRT_URI"])
    try:
        vnm("pre", peer1)  # a peer VM on the source host
        fakes.append(netns.plug(str(peer1["TARGET"]), str(peer1["MAC"]), ["10.77.0.20/24"]))
        vnm("post", peer1, "peer1", HOST)
        vnm("pre", guest)
        vm.deploy(nics=[(bridge, str(guest["MAC"]), str(guest["TARGET"]))])
        vnm("post", guest, vm.deploy_id, HOST)
        vm.console.wait_for(READY)
        vm.console.run("ip addr add 10.77.0.10/24 dev eth0; ip link set eth0 up")
        assert fakes[0].ping("10.77.0.10", count=5), "the guest answers on the source"

        vnm("pre", peer2, host2=True)  # a peer VM on the destination host
        fakes.append(netns.plug(str(peer2["TARGET"]), str(peer2["MAC"]), ["10.77.0.30/24"],
                                host_netns=h2))
        vnm("post", peer2, "peer2", "one-lab-host", host2=True)
        vnm("pre", guest, host2=True)
        res = vm.run("migrate", vm.deploy_id, "one-lab-host", HOST)
        assert res.returncode == 0, res.stderr
        vnm("post", guest, vm.deploy_id, "one-lab-host", host2=True)
        vnm("clean", guest, HOST)

        assert dst.lookupByUUIDString(vm.deploy_id).state()[0] == 1
        assert vsctl("get", "Port", str(guest["TARGET"]), "tag", host2=True) == "77"
        assert fakes[1].ping("10.77.0.10", count=5), "the guest answers on the destination"
        on_dst = GuestConsole(there / "console")
        on_dst.run("ip addr add 10.77.0.99/24 dev eth0")  # an address it was not given
        assert not fakes[1].ping("10.77.0.99", count=3), "spoofing is dropped there too"
        assert fakes[1].ping("10.77.0.10", count=3)
        assert str(guest["TARGET"]) not in vsctl("list-ports", bridge).split()
        cookie = f"cookie=0x{(0x0ED0 << 48) | (vm.id << 16):x}/0xffffffffffff0000"
        left = subprocess.run(["ovs-ofctl", "dump-flows", "--no-stats", bridge, cookie],
                              capture_output=True, text=True, check=True, timeout=20).stdout
        assert "cookie=" not in left, "the source keeps no flow of the VM"
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            dst.lookupByUUIDString(vm.deploy_id).destroy()
        dst.close()
        for fake in fakes:
            netns.unplug(fake.target, fake.netns, fake.host_netns)
        vsctl("--if-exists", "del-br", bridge)
        vsctl("--if-exists", "del-br", bridge, host2=True)


def test_a_guest_that_does_not_release_a_nic_gets_a_clear_error(vm):
    """A guest whose hot-plug driver is off never acknowledges the unplug (OpenNebula/one#8021):
    the action says so after DETACH_TIMEOUT instead of reporting success or hanging."""
    bridge = f"nr{uuid.uuid4().hex[:6]}"
    subprocess.run(["ovs-vsctl", "add-br", bridge, "--", "set", "bridge", bridge,
                    "datapath_type=netdev"], check=True, timeout=20)
    try:
        mac = "02:00:00:0c:00:01"
        vm.deploy(nics=[(bridge, mac, f"one-{vm.id}-0")], kernel_args="acpiphp.disable=1")
        vm.console.wait_for(READY)
        res = vm.run("detach_nic", vm.deploy_id, mac)
        assert res.returncode == 1, res.stderr
        assert f"the guest did not release NIC {mac} within 10 s" in last_line(res.stderr)
        assert "eth0" in vm.console.run("ls /sys/class/net").split(), "still there"
    finally:
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False)


def test_deploy_names_a_missing_emulator_and_what_to_do(vm):
    """oned writes <emulator>/usr/bin/qemu-kvm-one</emulator> unless EMULATOR is set; a plain
    Debian host has no such file (a real oned's deploy failed with libvirt's 'Cannot check QEMU
    binary'). Deploy says what is missing and how to fix it, and creates nothing; with the
    path the IM reports for the host (its EMULATOR) the same file deploys."""
    import xml.etree.ElementTree as ET

    import libvirt

    from one_drivers.im.libvirt.probes import emulator

    def with_emulator(path: str) -> str:
        return vm.domain().replace("<devices>", f"<devices><emulator>{path}</emulator>", 1)

    res = vm.run("deploy", str(vm.dir / "deployment.0"), HOST,
                 stdin=with_emulator("/usr/bin/qemu-kvm-one"))
    assert res.returncode != 0
    line = last_line(res.stderr)
    assert "emulator /usr/bin/qemu-kvm-one" in line and "libvirt_host role" in line, line
    assert len(res.stderr.strip().splitlines()) == 1
    assert vm.state() is None and not vm.deploy_id
    conn = libvirt.open(vm.env["LIBVIRT_DEFAULT_URI"])
    try:
        caps = ET.fromstring(conn.getCapabilities())
    finally:
        conn.close()
    arch = caps.findtext("host/cpu/arch") or ""
    reported = emulator(caps, arch)
    assert len(reported) == 1 and reported[0].startswith("EMULATOR=")
    host_emulator = reported[0].split("=", 1)[1].strip('"')
    assert emulator(caps, arch, default=host_emulator) == [], "nothing when the default exists"
    vm.deploy_id = vm.ok("deploy", str(vm.dir / "deployment.0"), HOST,
                         stdin=with_emulator(host_emulator))
    assert vm.state() == libvirt.VIR_DOMAIN_RUNNING


def test_shutdown_presses_again_until_the_guest_listens(vm, tmp_path):
    """A guest that is still booting loses the power button (a real oned's terminate of a
    just-booted VM took 92-94 s: one lost press, the next at half of the timeout). The button
    is pressed again every few seconds: here the guest's acpid is stopped, three presses are
    seen to go unanswered, then acpid starts and the next press powers it off, by ACPI (no
    destroy: FORCE_DESTROY=no, and the timeout is far away)."""
    from one_drivers.core.remotes import install

    remotes = tmp_path / "remotes"
    install(remotes, python=sys.executable)
    conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + "\nACPI_TIMEOUT=600\nACPI_PRESS_INTERVAL=2\n"
                    "FORCE_DESTROY=no\n")
    vm.remotes = remotes
    vm.deploy()
    vm.console.wait_for(READY)
    vm.console.run("killall acpid; sleep 0.2; pidof acpid || echo none")
    trace = tmp_path / "points"
    data = tmp_path / "action-data.xml"
    data.write_text(vm.action_data())
    with data.open("rb") as stdin:
        proc = subprocess.Popen([str(remotes / "vmm" / "libvirt" / "shutdown"), vm.deploy_id,
                                 HOST, str(vm.id), HOST], stdin=stdin, stderr=subprocess.PIPE,
                                text=True,
                                env={**os.environ, "ONE_DRIVERS_FAULT_TRACE": str(trace)})

    def presses() -> int:
        return trace.read_text().split().count("shutdown:pressed") if trace.exists() else 0

    try:
        end = time.monotonic() + 120  # a bound on the wait, not the property tested
        while presses() < 3 and proc.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert presses() >= 3, "the button is pressed again while the guest does not answer"
        assert vm.state() == 1, "positive control: with acpid gone, the presses go unanswered"
        vm.console.run("(acpid -f -d -c /etc/acpi -a /etc/acpid.conf >/dev/console 2>&1 &)")
        _, err = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    assert vm.state() is None
    assert "ignored ACPI" not in err and "powered off after" in err, err
    assert "one-lab-guest: power button, shutting down" in vm.console.log.read_text(
        errors="replace")


def test_cancel_no_acpi_destroys_a_guest_without_acpi_at_once(vm, tmp_path):
    """CANCEL_NO_ACPI=yes: a guest deployed without ACPI cannot hear the power button, so
    shutdown destroys it without waiting ACPI_TIMEOUT (600 s here: a wait would time the test
    out). Positive control: with ACPI the same settings press the button (the guest powers
    itself off)."""
    from one_drivers.core.remotes import install

    remotes = tmp_path / "remotes"
    install(remotes, python=sys.executable)
    conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + "\nACPI_TIMEOUT=600\nCANCEL_NO_ACPI=yes\n")
    vm.remotes = remotes
    vm.deploy(acpi=False)
    vm.console.wait_for(READY)
    res = vm.run("shutdown", vm.deploy_id, HOST)
    assert res.returncode == 0, res.stderr
    assert "has no ACPI (CANCEL_NO_ACPI): destroying it" in res.stderr and vm.state() is None
    vm.deploy(acpi=True)
    vm.console.wait_for(READY)
    res = vm.run("shutdown", vm.deploy_id, HOST)
    assert res.returncode == 0 and "CANCEL_NO_ACPI" not in res.stderr, res.stderr
    assert "power button, shutting down" in vm.console.log.read_text(errors="replace")


def test_live_migration_copies_the_disks_of_a_local_system_datastore(vm, two_hosts, lab_env):
    """A system datastore that is not shared (TM ssh): the VM's disk files are each host's own.
    The migration copies them with the memory (libvirt's non-shared-disk migration, as
    upstream's --copy-storage-all); the RBD disk is not copied. The destination's file starts
    empty (as TM premigrate leaves it), so what the guest wrote can only get there by the copy."""
    import libvirt

    remotes, made = two_hosts
    ds_dir = f"/var/lib/one/datastores/198/{vm.id}"
    here, there = Path(ds_dir), Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / "198" / str(vm.id)
    for d in (here, there):
        d.mkdir(parents=True, exist_ok=True)
        made.append(d)
        with open(d / "disk.1", "wb") as fh:
            fh.truncate(8 << 20)
    vm.dir = here
    vm.console = GuestConsole(here / "console")
    local = (f"<disk type='file' device='disk'><source file='{here / 'disk.1'}'/>"
             "<target dev='vdb' bus='virtio'/><driver name='qemu' type='raw'/></disk><serial")
    vm.deploy_id = vm.ok("deploy", str(here / "deployment.0"), HOST,
                         stdin=vm.domain().replace("<serial", local, 1))
    vm.console.wait_for(READY)
    vm.console.run("printf travelling-disk > /dev/vdb; sync")
    vm.remotes = remotes
    res = vm.run("migrate", vm.deploy_id, "one-lab-host", HOST,
                 stdin=vm.action_data(tm_mad="ssh"))
    assert res.returncode == 0, res.stderr
    assert "copying the local disks vdb with the migration" in res.stderr
    assert vm.state() is None, "gone from the source"
    dst = libvirt.open(lab_env["ONE_LAB_HOST_LIBVIRT_URI"])
    try:
        moved = dst.lookupByUUIDString(vm.deploy_id)
        assert moved.state()[0] == 1
        assert GuestConsole(there / "console").run("head -c 15 /dev/vdb") == "travelling-disk"
        assert (there / "disk.1").read_bytes()[:15] == b"travelling-disk", "copied there"
        moved.destroy()
    finally:
        dst.close()


def test_a_uefi_guest_gets_its_own_nvram_kept_across_deploys_and_save(vm):
    """OS/FIRMWARE UEFI: the variable store oned names in the VM's directory is made from the
    loader's template on the first deploy, the guest boots through OVMF, and the store is the
    same file after a save/restore and a new deploy (never replaced); a store path outside the
    VM's directory is refused."""
    import hashlib

    loader = "/usr/share/OVMF/OVMF_CODE_4M.fd"
    nvram = vm.dir / f"vm{vm.id}_VARS.fd"
    template = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
    assert not nvram.exists()
    vm.deploy(uefi_loader=loader)
    assert nvram.read_bytes() == template.read_bytes(), "made from the loader's template"
    vm.console.wait_for(READY, timeout=180)
    assert vm.console.run("[ -d /sys/firmware/efi ] && echo uefi") == "uefi", "booted by OVMF"
    written = (vm.dir / "deployment.0").read_text()
    assert f"<nvram>{nvram}</nvram>" in written
    inode = nvram.stat().st_ino
    checkpoint = vm.dir / "checkpoint"
    data = vm.action_data(tm_mad="ssh")
    vm.ok("save", vm.deploy_id, str(checkpoint), HOST, stdin=data)
    digest = hashlib.sha256(nvram.read_bytes()).hexdigest()
    vm.ok("restore", str(checkpoint), HOST, vm.deploy_id, stdin=data)
    vm.console.run("echo alive")
    vm.ok("cancel", vm.deploy_id, HOST)
    assert hashlib.sha256(nvram.read_bytes()).hexdigest() == digest
    vm.deploy(uefi_loader=loader)  # a new deploy keeps the guest's store
    assert nvram.stat().st_ino == inode
    vm.ok("cancel", vm.deploy_id, HOST)

    outside = vm.domain(uefi_loader=loader).replace(f"<nvram>{nvram}", "<nvram>/tmp/x_VARS.fd")
    res = vm.run("deploy", str(vm.dir / "deployment.1"), HOST, stdin=outside)
    assert res.returncode == 3 and "is not in the VM's directory" in res.stderr, res.stderr
    assert not Path("/tmp/x_VARS.fd").exists()
