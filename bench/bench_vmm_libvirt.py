"""VMM actions against upstream's virsh sequences (issue 5): shutdown of a guest that ignores
ACPI, and an attach_nic + detach_nic round trip.

Upstream's kvm/shutdown: ``virsh shutdown``, then ``virsh dominfo`` once a second until
SHUTDOWN_TIMEOUT, the button pressed again at half time, ``virsh destroy``, then an unconditional
``sleep 4``. Ours: the power button, libvirt's state polled in-process, destroy at ACPI_TIMEOUT.
Both with a 5 s timeout on the same kind of guest (the lab's, booted without ACPI).

NIC round trip: upstream's kvm/attach_nic runs ``virsh attach-device --live`` with the interface
XML its Ruby wrote (that start-up not counted), detach_nic ``virsh detach-interface --type bridge
--mac``, which does not check that the guest let the NIC go; ours does (until it is gone).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import report
from one_drivers.core.remotes import install
from one_drivers.lab.console import GuestConsole
from one_drivers.lab.documents import domain_xml
from one_drivers.lab.lab import Lab

TIMEOUT = 5
VM_ID = 9700


UPSTREAM_TIMEOUT = 120  # kvmrc's SHUTDOWN_TIMEOUT default


def upstream_shutdown(uri: str, deploy_id: str, timeout: int = TIMEOUT) -> None:
    virsh = ["virsh", "--connect", uri]
    subprocess.run([*virsh, "shutdown", deploy_id], capture_output=True, check=False)
    for second in range(timeout):
        # upstream's monitor(): `virsh dominfo` failing (exit code) means the domain is gone
        info = subprocess.run([*virsh, "dominfo", deploy_id], capture_output=True, text=True,
                              check=False)
        if info.returncode != 0 or "shut off" in info.stdout:
            break
        if second == timeout // 2:
            subprocess.run([*virsh, "shutdown", deploy_id], capture_output=True, check=False)
        time.sleep(1)
    subprocess.run([*virsh, "destroy", deploy_id], capture_output=True, check=False)
    time.sleep(4)


def _deploy(remotes: Path, work: Path, xml: str) -> str:
    return subprocess.run([str(remotes / "vmm/libvirt/deploy"), str(work / "deployment.0"),
                           "node1", str(VM_ID), "node1"], input=xml, capture_output=True,
                          text=True, check=True).stdout.strip()


def _shutdown(remotes: Path, deploy_id: str) -> None:
    subprocess.run([str(remotes / "vmm/libvirt/shutdown"), deploy_id, "node1", str(VM_ID),
                    "node1"], capture_output=True, check=True,
                   input=f"<VMM_DRIVER_ACTION_DATA><HOST>node1</HOST><VM><ID>{VM_ID}</ID></VM>"
                         "</VMM_DRIVER_ACTION_DATA>".encode())


def main() -> dict[str, float]:
    import libvirt
    import rados
    import rbd

    lab = Lab()
    env = lab.env()
    os.environ.update(env)
    with tempfile.TemporaryDirectory(prefix="one-drivers-bench-", dir="/var/tmp") as tmp:
        work = Path(tmp)
        remotes = work / "remotes"
        install(remotes, python=sys.executable)
        conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
        conf.write_text(conf.read_text() + f"\nACPI_TIMEOUT={TIMEOUT}\n")
        raw = work / "disk.raw"
        subprocess.run(["qemu-img", "convert", "-O", "raw", str(lab.guest.build_disk()),
                        str(raw)], check=True)
        cluster = rados.Rados(conffile=env["CEPH_CONF"], rados_id="admin")
        cluster.connect(timeout=10)
        ioctx = cluster.open_ioctx(env["ONE_LAB_CEPH_POOL"])
        name = f"one-{VM_ID}-bench"
        rbd.RBD().create(ioctx, name, raw.stat().st_size)
        with rbd.Image(ioctx, name) as image:
            image.write(raw.read_bytes(), 0)
        conn = libvirt.open(env["LIBVIRT_DEFAULT_URI"])
        try:
            nic = nic_round_trip(env, remotes, work, name, conn)
            booting = just_booted(env, remotes, work, name, conn)
            conf.write_text(conf.read_text() + f"\nACPI_TIMEOUT={TIMEOUT}\n")
            timings = {}
            for label in ("ours", "upstream"):
                xml = domain_xml(env, VM_ID, str(work), str(work / "console"),
                                 rbd_disks=[(f"one/{name}", "vda")], acpi=False)
                deploy_id = _deploy(remotes, work, xml)
                GuestConsole(work / "console").wait_for("one-lab-guest: ready")
                started = time.perf_counter()
                if label == "ours":
                    _shutdown(remotes, deploy_id)
                else:
                    upstream_shutdown(env["LIBVIRT_DEFAULT_URI"], deploy_id)
                timings[label] = time.perf_counter() - started
        finally:
            for dom in conn.listAllDomains():
                if dom.name() == f"one-{VM_ID}":
                    dom.destroy()
            conn.close()
            rbd.RBD().remove(ioctx, name)
            ioctx.close()
            cluster.shutdown()
    report(f"VMM shutdown of a guest ignoring ACPI, timeout {TIMEOUT} s",
           "vmm/libvirt/shutdown", timings["ours"], "upstream's virsh loop (+ its sleep 4)",
           timings["upstream"])
    print(f"  ours: timeout + {timings['ours'] - TIMEOUT:.2f} s (target: within timeout + 1 s); "
          f"upstream: timeout + {timings['upstream'] - TIMEOUT:.2f} s")
    ours, theirs = nic
    report("VMM attach_nic + detach_nic round trip, OVS NIC, guest with ACPI hot-plug "
           f"({ROUNDS} runs each)", "vmm/libvirt attach_nic + detach_nic", ours,
           "virsh attach-device + detach-interface (upstream)", theirs)
    print(f"  ratio {theirs / ours:.2f}x (the guest's unplug time is in both; ours also waits "
          "until the NIC is gone)")
    ours_boot, theirs_boot = booting
    report("VMM shutdown of a just-booted guest (terminate right after deploy), default "
           "timeouts", "vmm/libvirt/shutdown (press every 5 s)", ours_boot,
           f"upstream's virsh loop (press, again at {UPSTREAM_TIMEOUT // 2} s, + sleep 4)",
           theirs_boot)
    return {"vmm_shutdown_over_timeout_s": timings["ours"] - TIMEOUT,
            "vmm_nic_round_trip_vs_virsh": theirs / ours,
            "vmm_just_booted_shutdown_vs_upstream": theirs_boot / ours_boot}


def just_booted(env: dict[str, str], remotes: Path, work: Path, disk: str, conn: Any
                ) -> tuple[float, float]:
    """Deploy a guest with ACPI and shut it down at once, as a terminate right after boot does:
    the first press comes before the guest listens. Defaults on both sides (ours: ACPI_TIMEOUT
    180, a press every 5 s; upstream: SHUTDOWN_TIMEOUT 120, a second press at 60 s)."""
    conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + "\nACPI_TIMEOUT=180\n")
    timings = {}
    for label in ("ours", "upstream"):
        xml = domain_xml(env, VM_ID, str(work), str(work / "console"),
                         rbd_disks=[(f"one/{disk}", "vda")], acpi=True)
        deploy_id = _deploy(remotes, work, xml)
        started = time.perf_counter()
        if label == "ours":
            _shutdown(remotes, deploy_id)
        else:
            upstream_shutdown(env["LIBVIRT_DEFAULT_URI"], deploy_id, UPSTREAM_TIMEOUT)
        timings[label] = time.perf_counter() - started
        log = (work / "console.log").read_text(errors="replace")
        if "power button, shutting down" not in log:
            print(f"  note: {label}: the guest did not power itself off (destroyed)")
    return timings["ours"], timings["upstream"]


ROUNDS = 5


def nic_round_trip(env: dict[str, str], remotes: Path, work: Path, disk: str, conn: Any
                   ) -> tuple[float, float]:
    """Median seconds of attach + detach of an OVS NIC on a running guest, ours and upstream's."""
    import statistics
    import uuid

    from one_drivers.lab.documents import vm_doc

    uri, bridge = env["LIBVIRT_DEFAULT_URI"], f"bn{uuid.uuid4().hex[:6]}"
    xml = domain_xml(env, VM_ID, str(work), str(work / "console"),
                     rbd_disks=[(f"one/{disk}", "vda")])
    deploy_id = subprocess.run([str(remotes / "vmm/libvirt/deploy"), str(work / "deployment.0"),
                                "node1", str(VM_ID), "node1"], input=xml, capture_output=True,
                               text=True, check=True).stdout.strip()
    GuestConsole(work / "console").wait_for("one-lab-guest: ready")
    subprocess.run(["ovs-vsctl", "add-br", bridge, "--", "set", "bridge", bridge,
                    "datapath_type=netdev"], check=True, timeout=20)
    dom = conn.lookupByUUIDString(deploy_id)
    ours, theirs = [], []
    try:
        for i in range(2 * ROUNDS):
            mac, target = f"02:00:00:bb:00:{i:02x}", f"one-{VM_ID}-{i + 1}"
            nic = {"NIC_ID": i + 1, "MAC": mac, "BRIDGE": bridge, "TARGET": target,
                   "VN_MAD": "ovsdb", "MODEL": "virtio"}
            data = (f"<VMM_DRIVER_ACTION_DATA><HOST>node1</HOST><DEPLOY_ID>{deploy_id}"
                    f"</DEPLOY_ID>{vm_doc(VM_ID, [], nics=[nic])}</VMM_DRIVER_ACTION_DATA>")
            started = time.perf_counter()
            if i % 2 == 0:
                for action, argv in (("attach_nic", [mac, bridge, "virtio", "ovsdb", target]),
                                     ("detach_nic", [mac])):
                    subprocess.run([str(remotes / "vmm/libvirt" / action), deploy_id, *argv,
                                    str(VM_ID), "node1"], input=data, capture_output=True,
                                   text=True, check=True)
                ours.append(time.perf_counter() - started)
            else:
                iface = work / "nic.xml"  # what upstream's Ruby writes for an OVS NIC
                iface.write_text(f"<interface type='bridge'><source bridge='{bridge}'/>"
                                 "<virtualport type='openvswitch'/>"
                                 f"<target dev='{target}'/><mac address='{mac}'/>"
                                 "<model type='virtio'/></interface>")
                virsh = ["virsh", "--connect", uri]
                subprocess.run([*virsh, "attach-device", deploy_id, str(iface), "--live"],
                               capture_output=True, check=True)
                subprocess.run([*virsh, "detach-interface", deploy_id, "--type", "bridge",
                                "--mac", mac, "--live"], capture_output=True, check=True)
                theirs.append(time.perf_counter() - started)
                deadline = time.monotonic() + 30  # not timed: let the guest finish the unplug
                while mac in dom.XMLDesc(0) and time.monotonic() < deadline:
                    time.sleep(0.1)
    finally:
        dom.destroy()
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False, timeout=20)
    return statistics.median(ours), statistics.median(theirs)


if __name__ == "__main__":
    main()
