"""The VM part of ``one-drivers demo``: a real guest on the lab's libvirt, booted from a clone of
the demo image, with an OVS NIC; saved to RBD and restored, snapshotted and reverted, shut down.
Every step is a shim run as OpenNebula runs it (VNM, VMM and TM drivers together)."""

from __future__ import annotations

import base64
import subprocess
import time
from pathlib import Path

from one_drivers.lab.console import GuestConsole
from one_drivers.lab.documents import disk_attrs, domain_xml, elements, lab_ds_template, vm_doc
from one_drivers.lab.lab import Lab

VM_ID = 4246
HOST = "node1"


def _run(remotes: Path, path: str, argv: list[str], stdin: bytes, title: str) -> str:
    t = time.monotonic()
    proc = subprocess.run([str(remotes / path), *argv], input=stdin, capture_output=True,
                          timeout=600, check=False)
    out = proc.stdout.decode().strip()
    print(f"\n$ {path} {' '.join(argv)}   # {title}   (exit {proc.returncode}, "
          f"{(time.monotonic() - t) * 1000:.0f} ms){'  -> ' + out if out else ''}")
    for line in proc.stderr.decode().strip().splitlines()[-3:]:
        print(f"  {line}")
    if proc.returncode != 0:
        raise SystemExit("demo step failed")
    return out


def vm_on_libvirt(lab: Lab, remotes: Path, env: dict[str, str], image: str, sys_ds: int) -> None:
    from one_drivers.tm.transfer import run_transfer

    work = lab.root / "demo"
    print(f"\n== VM {VM_ID} for real: its disk a clone of {image}, an OVS NIC on VLAN 42, "
          "the lab's libvirt (QEMU TCG)")
    vm_dir = work / f"vm-{VM_ID}"
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
    _run(remotes, "vmm/libvirt/shutdown", [deploy_id, HOST, *tail], data, "ACPI")
    _run(remotes, "vnm/ovsdb/clean", [HOST], vnm, "")
    transfer.write_text(f"DELETE rbd {HOST}:{vm_dir}/disk.0 {VM_ID} 100\n")
    print(f"\n$ one-drivers tm run-transfer   # DELETE rbd ...disk.0 {VM_ID} 100")
    if run_transfer(transfer, remotes) != 0:
        raise SystemExit("demo step failed")
