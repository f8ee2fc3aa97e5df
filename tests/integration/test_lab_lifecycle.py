"""One lab per network namespace: a second one beside the running lab is refused; one in a
namespace of its own recovers from a crashed daemon, and down leaves nothing running."""

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from one_drivers.lab.lab import Lab
from one_drivers.lab.proc import LabError, alive, read_pid

pytestmark = pytest.mark.lab


def lab_pids(lab: Lab) -> dict[str, int | None]:
    files = {**lab.ceph.pids, **lab.ovs.pids, "libvirtd": lab.libvirt.pidfile,
             "sshd": lab.ssh.pidfile}
    return {name: read_pid(path) for name, path in files.items()}


def processes_mentioning(path: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if path in line and "pytest" not in line]


def test_a_second_lab_beside_the_running_one_is_refused(lab_env, tmp_path):
    """Two labs' switches in one network namespace take each other's bridges and taps: the
    second `up` refuses with the first lab's directory, and starts nothing."""
    root = tmp_path / "lab2"
    running = Lab()
    assert running.ovs.healthy(), "positive control: the first lab's switch runs"
    with pytest.raises(LabError, match=f"another lab is running on this machine: "
                                       f"{running.root} \\(ovs-vswitchd"):
        Lab(root, port_offset=100).up()
    assert processes_mentioning(str(root)) == []


def _cli(ns: str, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "one_drivers.cli",
                           "lab", *args], capture_output=True, text=True, timeout=600,
                          check=False, env=env)


def test_a_lab_in_its_own_namespace_recovers_from_a_crash_and_down_leaves_nothing(
        lab_env, tmp_path):
    """A second lab isolated in a network namespace of its own runs beside the first one (whose
    switch keeps its bridges and taps), recovers from a crashed daemon, and `down` leaves
    nothing running."""
    root = tmp_path / "lab2"
    (root / "guest").mkdir(parents=True)
    built = Path(lab_env["ONE_LAB_GUEST_KERNEL"]).parent  # reuse the built guest (no network
    for name in ("vmlinuz", "initrd.gz", "version"):     # in the namespace to build one)
        shutil.copy(built / name, root / "guest")
    ns = f"one-lab2-{os.getpid() % 10000}"
    subprocess.run(["ip", "netns", "add", ns], check=True, timeout=30)
    subprocess.run(["ip", "-n", ns, "link", "set", "lo", "up"], check=True, timeout=30)
    env = {**os.environ, "ONE_DRIVERS_LAB_DIR": str(root), "ONE_DRIVERS_LAB_PORT_OFFSET": "100"}
    first = Lab()
    bridge = f"keep{os.getpid() % 10000}"
    subprocess.run(["ovs-vsctl", "add-br", bridge, "--", "set", "bridge", bridge,
                    "datapath_type=netdev"], check=True, timeout=30)
    lab = Lab(root, port_offset=100)
    try:
        up = _cli(ns, env, "up")
        assert up.returncode == 0, up.stderr
        pids = lab_pids(lab)
        assert all(alive(pid) for pid in pids.values()), pids
        os.kill(pids["osd.0"], signal.SIGKILL)  # a crash
        again = _cli(ns, env, "up")
        assert again.returncode == 0, again.stderr
        assert "ceph" in again.stdout and "ovs " not in again.stdout, again.stdout
        status = _cli(ns, env, "status")
        assert status.returncode == 0, status.stdout
        assert "nothing (all healthy)" in _cli(ns, env, "up").stdout
        # the first lab is untouched: its daemons answer, its bridge and device are there
        assert first.ceph.running() and first.ceph.health()["osds_up"] == 1
        assert first.ovs.healthy() and first.libvirt.healthy() and first.ssh.healthy()
        assert bridge in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                        text=True, check=True, timeout=30).stdout.split()
        assert Path(f"/sys/class/net/{bridge}").exists()
    finally:
        down = _cli(ns, env, "down")
        subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False, timeout=30)
        subprocess.run(["ip", "netns", "del", ns], check=False, timeout=30)
    assert down.returncode == 0, down.stderr
    for name in ("osd.0", "mon.a", "mgr.x", "ovsdb-server", "ovs-vswitchd", "libvirtd", "sshd"):
        assert name in down.stdout, down.stdout
    assert not any(alive(pid) for pid in lab_pids(lab).values())
    assert processes_mentioning(str(root)) == []
