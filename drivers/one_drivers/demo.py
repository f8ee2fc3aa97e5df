"""``one-drivers demo``: the lab up, its health, and real actions run as OpenNebula runs them.

The remotes tree is installed into the lab directory and each action is started as its shim with
argv and base64 stdin shaped like oned's, so what the demo shows is what a front-end would see.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from one_drivers.core.remotes import install
from one_drivers.demo_network import vm_network
from one_drivers.demo_vm import vm_on_libvirt
from one_drivers.lab.documents import datastore_doc, disk_attrs, ds_doc, vm_doc
from one_drivers.lab.lab import Lab

DEMO_IMAGE = 4242  # image ids the demo uses in the lab's pool
DEMO_CLONE = 4243
DEMO_SYS_DS = 101


def datastore_xml(ds_id: int, env: dict[str, str], **extra: str) -> str:
    """A datastore-only DS_DRIVER_ACTION_DATA for the lab (what monitor receives)."""
    return ds_doc(env, ds_id=ds_id, ds=extra)


def run_shim(remotes: Path, family: str, driver: str, action: str, argv: list[str],
             stdin: bytes) -> subprocess.CompletedProcess[bytes]:
    shim = remotes / family / driver / action
    return subprocess.run([str(shim), *argv], input=stdin, capture_output=True, timeout=600,
                          check=False)


class Demo:
    def __init__(self, remotes: Path, env: dict[str, str]) -> None:
        self.remotes, self.env = remotes, env

    def ds(self, action: str, image_id: int | None, title: str, *, ok: bool = True,
           **doc: object) -> subprocess.CompletedProcess[bytes]:
        argv = [str(image_id if image_id is not None else 100)]
        data = base64.b64encode(ds_doc(self.env, image_id, **doc).encode())  # type: ignore[arg-type]
        t = time.monotonic()
        proc = run_shim(self.remotes, "datastore", "rbd", action, argv, data)
        took = time.monotonic() - t
        print(f"\n$ datastore/rbd/{action} {argv[0]} <<< base64(DS_DRIVER_ACTION_DATA)  "
              f"# {title}   (exit {proc.returncode}, {took * 1000:.0f} ms)")
        for stream in (proc.stdout, proc.stderr):
            text = stream.decode(errors="replace").rstrip()
            if text:
                print("  " + text.replace("\n", "\n  "))
        if ok and proc.returncode != 0:
            raise SystemExit(f"demo step failed: datastore/rbd/{action}")
        return proc


def vm_life(lab: Lab, remotes: Path, env: dict[str, str]) -> None:
    """A VM's disks from deploy to terminate, through transfer files as oned writes them; the
    TM reads the VM and datastores from oned (the lab's stand-in) over XML-RPC."""
    from one_drivers.tm.transfer import run_transfer

    vmid, host = 4244, env["ONE_LAB_SSH_HOST"]
    vm_dir = f"/var/lib/one/datastores/{DEMO_SYS_DS}/{vmid}"
    lab.oned.record("datastore", 100, datastore_doc(env, 100))
    lab.oned.record("datastore", DEMO_SYS_DS, datastore_doc(env, DEMO_SYS_DS, system=True))
    disks = [disk_attrs(env, 0, IMAGE_ID=DEMO_IMAGE, SOURCE=f"one/one-{DEMO_IMAGE}",
                        CLONE="YES", TYPE="RBD", DATASTORE_ID=100, SIZE=256),
             disk_attrs(env, 1, TYPE="FS", FS="ext4", SIZE=64, DATASTORE_ID=DEMO_SYS_DS),
             disk_attrs(env, 2, TYPE="SWAP", SIZE=32, DATASTORE_ID=DEMO_SYS_DS)]
    lab.oned.record("vm", vmid, vm_doc(vmid, disks, host=host, sys_ds=DEMO_SYS_DS))
    work = lab.root / "demo"
    work.mkdir(exist_ok=True)
    (work / "context.sh").write_text("HOSTNAME='demo'\nETH0_IP='192.0.2.10'\n")
    disk0 = f"{host}:{vm_dir}/disk.0"
    phases = [
        ("prolog: the disks of VM 4244 on one-lab-host (over ssh)", [
            f"CLONE rbd fe:one/one-{DEMO_IMAGE} {disk0} {vmid} 100",
            f"MKIMAGE rbd 64 raw {host}:{vm_dir}/disk.1 {vmid} {DEMO_SYS_DS}",
            f"MKSWAP rbd 32 {host}:{vm_dir}/disk.2 {vmid} {DEMO_SYS_DS}",
            f"CONTEXT rbd {work}/context.sh {host}:{vm_dir}/disk.3 {vmid} {DEMO_SYS_DS}"]),
        ("a disk snapshot, a revert to it, its deletion", [
            f"SNAP_CREATE rbd {disk0} 0 {vmid} 100",
            f"SNAP_REVERT rbd {disk0} 0 {vmid} 100",
            f"SNAP_DELETE rbd {disk0} 0 {vmid} 100"]),
        ("epilog: terminate", [
            f"DELETE rbd {disk0} {vmid} 100",
            f"DELETE rbd {host}:{vm_dir}/disk.1 {vmid} {DEMO_SYS_DS}",
            f"DELETE rbd {host}:{vm_dir}/disk.2 {vmid} {DEMO_SYS_DS}",
            f"DELETE rbd {host}:{vm_dir} {vmid} {DEMO_SYS_DS}"]),
    ]
    for title, lines in phases:
        print(f"\n== {title}")
        transfer = work / f"transfer.{title.split(':')[0].split()[0]}"
        transfer.write_text("\n".join(lines) + "\n")
        t = time.monotonic()
        rc = run_transfer(transfer, remotes)
        print(f"  ({len(lines)} actions in {(time.monotonic() - t) * 1000:.0f} ms, exit {rc})")
        if rc != 0:
            raise SystemExit("demo step failed")
        if title.startswith("prolog"):
            rbd_info(env, f"one-{DEMO_IMAGE}-{vmid}-0")


def rbd_info(env: dict[str, str], name: str) -> None:
    proc = subprocess.run(["rbd", "--conf", env["CEPH_CONF"], "--id", env["ONE_LAB_CEPH_USER"],
                           "--keyring", env["ONE_LAB_CEPH_KEYRING"], "du", f"one/{name}"],
                          capture_output=True, text=True, check=False, timeout=60)
    print("  " + (proc.stdout or proc.stderr).rstrip().replace("\n", "\n  "))


def run_demo() -> int:
    lab = Lab()
    print(f"== lab: bringing it up in {lab.root}")
    t = time.monotonic()
    timings = lab.up()
    print(f"lab up in {time.monotonic() - t:.1f}s; started: {timings or 'nothing (was healthy)'}")
    status = lab.status()
    print(json.dumps(status, indent=2))
    print("ceph:", json.dumps(lab.ceph.health()))
    if not status["healthy"]:
        print("the lab is not healthy; see the logs under", lab.root, file=sys.stderr)
        return 1

    remotes = lab.root / "remotes"
    report = install(remotes)
    print(f"\n== remotes installed in {remotes}: {len(report.written)} written, "
          f"{len(report.unchanged)} unchanged")
    env = lab.env()
    os.environ.update(env)  # the actions find oned, ssh and Ceph as on a configured front-end
    demo = Demo(remotes, env)
    disk = lab.guest.build_disk()
    safe = {"SAFE_DIRS": str(disk.parent)}

    print(f"\n== a guest disk image ({disk.name}, qcow2, {disk.stat().st_size >> 10} KiB) into "
          "Ceph, as the restricted cephx user 'one'")
    for iid in (DEMO_CLONE, DEMO_IMAGE):  # a previous demo's images
        demo.ds("rm", iid, "clean up a previous demo", image={"SOURCE": f"one/one-{iid}"})
    demo.ds("stat", DEMO_IMAGE, "its virtual size in MB", image={"PATH": str(disk)}, ds=safe)
    demo.ds("cp", DEMO_IMAGE, "register it: qcow2 converted straight into RBD",
            image={"PATH": str(disk)}, ds=safe)
    rbd_info(env, f"one-{DEMO_IMAGE}")
    demo.ds("cp", DEMO_IMAGE, "run again: idempotent", image={"PATH": str(disk)}, ds=safe)
    demo.ds("clone", DEMO_CLONE, "oneimage clone: copy-on-write, instant",
            image={"PATH": f"one/one-{DEMO_IMAGE}"})
    rbd_info(env, f"one-{DEMO_CLONE}")
    demo.ds("export", DEMO_IMAGE, "for a marketplace: a URL cp can import",
            image={"SOURCE": f"one/one-{DEMO_IMAGE}"})
    demo.ds("monitor", None, "datastore capacity: one Ceph round trip")
    vm_life(lab, remotes, env)
    vm_network(remotes)
    vm_on_libvirt(lab, remotes, env, f"one/one-{DEMO_IMAGE}", DEMO_SYS_DS)
    demo.ds("rm", DEMO_IMAGE, "the source goes first: hidden until its clone goes",
            image={"SOURCE": f"one/one-{DEMO_IMAGE}"})
    demo.ds("rm", DEMO_CLONE, "the clone goes: the hidden source is collected",
            image={"SOURCE": f"one/one-{DEMO_CLONE}"})

    print("\n== bad input: one plain line and a documented exit code, nothing half-made")
    demo.ds("cp", DEMO_IMAGE, "a file outside SAFE_DIRS", ok=False,
            image={"PATH": "/etc/shadow"})
    demo.ds("cp", DEMO_IMAGE, "a wrong checksum", ok=False, image={"PATH": str(disk)},
            image_template={"MD5": "0" * 32}, ds=safe)
    demo.ds("monitor", None, "another cephx user with the 'one' key", ok=False,
            ds={"CEPH_USER": "admin"})
    bad = run_shim(remotes, "datastore", "rbd", "monitor", ["100"], b"%%%")
    print(f"\n$ datastore/rbd/monitor 100 <<< '%%%'   (exit {bad.returncode})\n  "
          + bad.stderr.decode().strip())
    print("\nDone. `make lab-down` stops the lab.")
    return 0
