"""A second lab side by side: it recovers from a crashed daemon, and down leaves nothing running."""

import os
import shutil
import signal
import subprocess

import pytest

from one_drivers.lab.lab import Lab
from one_drivers.lab.proc import alive, read_pid

pytestmark = pytest.mark.lab


def lab_pids(lab: Lab) -> dict[str, int | None]:
    files = {**lab.ceph.pids, **lab.ovs.pids, "libvirtd": lab.libvirt.pidfile,
             "sshd": lab.ssh.pidfile}
    return {name: read_pid(path) for name, path in files.items()}


def processes_mentioning(path: str) -> list[str]:
    out = subprocess.run(["ps", "-eo", "pid=,args="], capture_output=True, text=True,
                         check=True).stdout
    return [line for line in out.splitlines() if path in line and "pytest" not in line]


def test_second_lab_recovers_from_a_crash_and_down_leaves_nothing(lab_env, tmp_path):
    root = tmp_path / "lab2"
    (root / "guest").mkdir(parents=True)
    for key in ("ONE_LAB_GUEST_KERNEL", "ONE_LAB_GUEST_INITRD"):  # reuse the built guest
        shutil.copy(lab_env[key], root / "guest")
    lab = Lab(root, port_offset=100)
    try:
        lab.up()
        status = lab.status()
        assert status["healthy"], status
        pids = lab_pids(lab)
        assert all(alive(pid) for pid in pids.values()), pids
        # the first lab is untouched by the second: its daemons run and answer
        first = Lab()
        assert first.ceph.running() and first.ceph.health()["osds_up"] == 1
        assert first.ovs.healthy() and first.libvirt.healthy() and first.ssh.healthy()

        os.kill(pids["osd.0"], signal.SIGKILL)  # a crash
        assert not lab.status()["ceph"] or not alive(pids["osd.0"])
        timings = lab.up()
        assert "ceph" in timings and "ovs" not in timings
        assert lab.status()["healthy"]
        assert lab.up() == {}  # healthy: nothing restarted
    finally:
        stopped = lab.down()
    assert {"osd.0", "mon.a", "mgr.x", "ovsdb-server", "ovs-vswitchd", "libvirtd",
            "sshd"} <= set(stopped)
    assert not any(alive(pid) for pid in lab_pids(lab).values())
    assert processes_mentioning(str(root)) == []
    assert lab.status()["healthy"] is False
    assert lab.down() == []  # idempotent
