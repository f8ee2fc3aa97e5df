"""The VM part of ``one-drivers demo``: a real guest on the lab's libvirt, booted from a clone of
the demo image, with an OVS NIC; saved to RBD and restored, snapshotted and reverted, live-migrated
to the lab's second host (its own libvirtd and Open vSwitch in its own network namespace), shut
down there. Every step is a shim run as OpenNebula runs it (VNM, VMM and TM drivers together)."""

from __future__ import annotations

import base64
import os
import subprocess
import time
from pathlib import Path
from typing import NamedTuple

from one_drivers.lab.console import GuestConsole
from one_drivers.lab.documents import disk_attrs, domain_xml, elements, lab_ds_template, vm_doc
from one_drivers.lab.lab import Lab

VM_ID = 4246
HOST = "node1"


def _run(remotes: Path, path: str, argv: list[str], stdin: bytes, title: str, *,
         on: str = "", prefix: tuple[str, ...] = (), env: dict[str, str] | None = None) -> str:
    """A shim as oned runs it; ``on`` names the host when it is not the first one."""
    t = time.monotonic()
    proc = subprocess.run([*prefix, str(remotes / path), *argv], input=stdin, capture_output=True,
                          timeout=600, check=False, env={**os.environ, **(env or {})})
    out = proc.stdout.decode().strip()
    where = f"[{on}] " if on else ""
    print(f"\n{where}$ {path} {' '.join(argv)}   # {title}   (exit {proc.returncode}, "
          f"{(time.monotonic() - t) * 1000:.0f} ms){'  -> ' + out if out else ''}")
    for line in proc.stderr.decode().strip().splitlines()[-3:]:
        print(f"  {line}")
    if proc.returncode != 0:
        raise SystemExit("demo step failed")
    return out


def vm_on_libvirt(lab: Lab, remotes: Path, env: dict[str, str], image: str, sys_ds: int) -> None:
    from one_drivers.tm.transfer import run_transfer

    work = lab.root / "demo"
    work.mkdir(parents=True, exist_ok=True)
    print(f"\n== VM {VM_ID} for real: its disk a clone of {image}, an OVS NIC on VLAN 42, "
          "the lab's libvirt (QEMU TCG)")
    vm_dir = Path(f"/var/lib/one/datastores/{sys_ds}/{VM_ID}")  # each lab host has its own
    vm_dir.mkdir(parents=True, exist_ok=True)
    disk = f"{image}-{VM_ID}-0"
    transfer = work / "transfer.vm"
    transfer.write_text(f"CLONE rbd fe:{image} {HOST}:{vm_dir}/disk.0 {VM_ID} 100\n")
    bridge, mac, target = "onebr-demo", "02:00:c0:00:02:96", f"one-{VM_ID}-0"
    nic = {"NIC_ID": 0, "NETWORK_ID": 7, "VN_MAD": "ovsdb", "BRIDGE": bridge, "VLAN_ID": 42,
           "MAC": mac, "TARGET": target, "FILTER_MAC_SPOOFING": "YES"}
    disks = [disk_attrs(env, 0, TYPE="RBD", SOURCE=image, CLONE="YES", TARGET="vda")]
    vm = vm_doc(VM_ID, disks, nics=[nic], sys_ds=sys_ds)
    lab.oned.record("vm", VM_ID, vm)  # TM actions read the VM from oned
    vnm = base64.b64encode(vm.encode())
    ds = elements(lab_ds_template(env, POOL_NAME=env["ONE_LAB_CEPH_POOL"]))
    data = (f"<VMM_DRIVER_ACTION_DATA><HOST>{HOST}</HOST>{vm}<DATASTORE><ID>101</ID><TM_MAD>rbd"
            f"</TM_MAD><TEMPLATE>{ds}</TEMPLATE></DATASTORE></VMM_DRIVER_ACTION_DATA>").encode()
    tail = [str(VM_ID), HOST]
    print(f"\n$ one-drivers tm run-transfer   # CLONE rbd fe:{image} ...disk.0")
    if run_transfer(transfer, remotes) != 0:
        raise SystemExit("demo step failed")
    _run(remotes, "vnm/ovsdb/pre", [], vnm, "the port, tagged and filtered, before the VM")
    xml = domain_xml(env, VM_ID, str(vm_dir), str(vm_dir / "console"),
                     rbd_disks=[(disk, "vda")], nics=[(bridge, mac, target)])
    deploy_id = _run(remotes, "vmm/libvirt/deploy", [str(vm_dir / "deployment.0"), HOST, *tail],
                     xml.encode(), "the deployment file on stdin; answers the UUID")
    _run(remotes, "vnm/ovsdb/post", [deploy_id, HOST], vnm, "")
    console = GuestConsole(vm_dir / "console")
    console.wait_for("one-lab-guest: ready")
    print("  guest console:", console.run("echo disks: $(ls /sys/block) nics: "
                                          "$(ls /sys/class/net)"))
    console.run("echo before-save > /tmp/mark")
    _run(remotes, "vmm/libvirt/save", [deploy_id, str(vm_dir / "checkpoint"), HOST, *tail], data,
         f"memory to RBD one-sys-{VM_ID}-checkpoint")
    _run(remotes, "vmm/libvirt/restore", [str(vm_dir / "checkpoint"), HOST, deploy_id, *tail],
         data, "and back")
    print("  guest remembers:", console.run("cat /tmp/mark"))
    _run(remotes, "vmm/libvirt/snapshot_create", [deploy_id, "0", *tail], data,
         "paused guest: memory through libvirt, disk as an RBD snapshot")
    console.run("echo after-snapshot > /tmp/mark")
    _run(remotes, "vmm/libvirt/snapshot_revert", [deploy_id, "snap-0", *tail], data, "")
    print("  after the revert the guest says:", console.run("cat /tmp/mark"))
    _run(remotes, "vmm/libvirt/snapshot_delete", [deploy_id, "snap-0", *tail], data, "")
    console.run("echo travelling > /tmp/mark")
    host2 = _host2(lab, env)
    there = _migrate(host2, remotes, env, vm, vm_dir, sys_ds, deploy_id, data)
    print("  the guest, now on the second host, says:",
          GuestConsole(there / "console").run("cat /tmp/mark"))
    _run(remotes, "vmm/libvirt/shutdown", [deploy_id, host2.name, str(VM_ID), host2.name],
         data, "ACPI", on=host2.name, env={"LIBVIRT_DEFAULT_URI": env["ONE_LAB_HOST_LIBVIRT_URI"]})
    _run(remotes, "vnm/ovsdb/clean", [host2.name], vnm, "", on=host2.name, prefix=host2.prefix,
         env=host2.env)
    transfer.write_text(f"DELETE rbd {host2.name}:{vm_dir}/disk.0 {VM_ID} 100\n"
                        f"DELETE rbd {host2.name}:{vm_dir} {VM_ID} {sys_ds}\n")
    print(f"\n$ one-drivers tm run-transfer   # DELETE the disk, then the VM directory on "
          f"{host2.name} (epilog)")
    if run_transfer(transfer, remotes) != 0:
        raise SystemExit("demo step failed")


class _Host2(NamedTuple):
    name: str
    prefix: tuple[str, ...]  # VNM actions run in its network namespace, on its switch
    env: dict[str, str]


def _host2(lab: Lab, env: dict[str, str]) -> _Host2:
    return _Host2(env["ONE_LAB_SSH_HOST"], tuple(lab.host2_net.exec_prefix()),
                  lab.ovs2.driver_env())


def _migrate(host2: _Host2, remotes: Path, env: dict[str, str], vm: str, vm_dir: Path,
             sys_ds: int, deploy_id: str, data: bytes) -> Path:
    """A live migration in oned's order; returns the VM directory as the second host sees it."""
    print(f"\n== live migration to {host2.name}: its own libvirtd, Open vSwitch and network "
          "namespace; the RBD disk is shared, the memory crosses a veth link")
    conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + f"\nLIBVIRT_REMOTE_URI={env['ONE_LAB_HOST_LIBVIRT_URI']}"
                    f"\nMIGRATE_URI={env['ONE_LAB_HOST_MIGRATE_URI']}\n")
    b64 = base64.b64encode(vm.encode())
    moves = ["localhost", host2.name, str(vm_dir), str(VM_ID), str(sys_ds)]
    _run(remotes, "tm/rbd/premigrate", moves, b64, "the VM directory reaches the destination")
    _run(remotes, "vnm/ovsdb/pre", [], b64, "the port there, before the guest arrives",
         on=host2.name, prefix=host2.prefix, env=host2.env)
    _run(remotes, "vmm/libvirt/migrate", [deploy_id, host2.name, HOST, str(VM_ID), HOST], data,
         "live, through libvirt's API")
    _run(remotes, "vnm/ovsdb/post", [deploy_id, host2.name], b64, "", on=host2.name,
         prefix=host2.prefix, env=host2.env)
    _run(remotes, "tm/rbd/postmigrate", moves, b64, "the source's copy goes")
    _run(remotes, "vnm/ovsdb/clean", [HOST], b64, "the source's port and flows go")
    return Path(env["ONE_LAB_HOST_DATASTORES"]) / str(sys_ds) / str(VM_ID)
