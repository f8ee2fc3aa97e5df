"""A virtual TPM (TPM/MODEL) on the lab guest: swtpm run by the driver with its state in the VM's
directory, seen from inside the guest.

The guest asks its TPM for TPM2_ReadClock: ``resetCount`` is kept in the TPM's non-volatile
state and grows by one at every power cycle of the same TPM, so a count that went on after a
power-off and a new deploy proves the guest got its own TPM back (a new TPM starts again at the
first boot's count); a save/restore and a live migration keep the count (no reset), because
QEMU carries the TPM's state with the guest."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import pytest

from one_drivers.lab.console import GuestConsole
from tests.integration import test_vmm_libvirt as vmm

pytestmark = pytest.mark.lab
READY, HOST = vmm.READY, vmm.HOST
vm, guest_raw, vmm_remotes, two_hosts = vmm.vm, vmm.guest_raw, vmm.vmm_remotes, vmm.two_hosts

# TPM2_ReadClock: tag TPM_ST_NO_SESSIONS, size 10, command code 0x181 (octal for busybox printf)
READ_CLOCK = r"\200\001\000\000\000\012\000\000\001\201"


def reset_count(console: GuestConsole) -> int:
    """The guest's TPM's resetCount, read through /dev/tpm0 from the guest's shell."""
    out = console.run(f"printf '{READ_CLOCK}' > /tmp/rc; sh -c 'exec 3<>/dev/tpm0; "
                      "cat /tmp/rc >&3; dd bs=64 count=1 <&3 2>/dev/null' | od -An -tu1")
    data = bytes(int(b) for b in out.split())
    assert len(data) >= 30 and data[6:10] == b"\0\0\0\0", f"TPM answered {data.hex()}"
    # header (10) + time (8) + clock (8), then resetCount
    return int.from_bytes(data[26:30], "big")


def swtpm_pids(state_dir: Path) -> list[int]:
    """swtpm processes serving ``state_dir`` on this host (the lab's second host shares the pid
    namespace, not the mount namespace: its VM directories have the same paths)."""
    here = os.readlink("/proc/self/ns/mnt")
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            words = (entry / "cmdline").read_bytes().split(b"\0")
            stat = (entry / "stat").read_bytes().rsplit(b")", 1)[1].split()
            if os.readlink(entry / "ns" / "mnt") != here:
                continue
        except OSError:
            continue
        if words[0].endswith(b"swtpm") and stat[0] not in (b"Z", b"X") and \
                f"dir={state_dir},mode=0600".encode() in words:
            pids.append(int(entry.name))
    return pids


def until_no_swtpm(state_dir: Path, timeout: float = 20) -> bool:
    end = time.monotonic() + timeout
    while swtpm_pids(state_dir):
        if time.monotonic() > end:
            return False
        time.sleep(0.1)
    return True


def test_the_tpm_is_the_vms_own_across_poweroff_save_and_a_failed_deploy(vm):
    state = vm.dir / "tpm"
    vm.deploy(tpm_model="tpm-crb")
    written = (vm.dir / "deployment.0").read_text()
    assert "<backend type=\"external\"><source type=\"unix\" mode=\"connect\" " \
           f"path=\"{state}/swtpm.sock\"" in written, written
    assert (state / "tpm2-00.permall").stat().st_size > 0, "manufactured in the VM's directory"
    assert oct((state / "tpm2-00.permall").stat().st_mode & 0o777) == "0o600"
    vm.console.wait_for(READY)
    first = reset_count(vm.console)
    assert len(swtpm_pids(state)) == 1

    checkpoint = vm.dir / "checkpoint"
    data = vm.action_data(tm_mad="ssh")
    vm.ok("save", vm.deploy_id, str(checkpoint), HOST, stdin=data)
    assert until_no_swtpm(state), "swtpm ends with its QEMU"
    vm.ok("restore", str(checkpoint), HOST, vm.deploy_id, stdin=data)
    assert reset_count(vm.console) == first, "restored, not reset: the same TPM"
    # a VM snapshot's revert starts a new QEMU from the snapshot's memory: swtpm with it
    from one_drivers.lab.documents import disk_attrs

    snap_data = vm.action_data(disks=[disk_attrs(vm.env, 0, TYPE="RBD", SOURCE=f"one/{vm.disk}",
                                                 TARGET="vda")])
    assert vm.ok("snapshot_create", vm.deploy_id, "0", stdin=snap_data) == "snap-0"
    vm.ok("snapshot_revert", vm.deploy_id, "snap-0", stdin=snap_data)
    assert reset_count(vm.console) == first, "reverted with its TPM"
    assert len(swtpm_pids(state)) == 1
    vm.ok("snapshot_delete", vm.deploy_id, "snap-0", stdin=snap_data)

    vm.ok("cancel", vm.deploy_id, HOST)
    assert until_no_swtpm(state), "powered off: no swtpm left"
    vm.deploy(tpm_model="tpm-crb")
    vm.console.wait_for(READY)
    assert reset_count(vm.console) == first + 1, "its own TPM came back, one reset later"
    vm.ok("cancel", vm.deploy_id, HOST)
    assert until_no_swtpm(state)

    # a deploy killed after starting swtpm left it waiting: the next deploy replaces it
    from one_drivers.vmm.libvirt.tpm import Swtpm

    subprocess.run(Swtpm(str(state)).argv(), check=True, timeout=20)
    stray = swtpm_pids(state)
    assert len(stray) == 1
    vm.deploy(tpm_model="tpm-crb")
    assert stray[0] not in swtpm_pids(state) and len(swtpm_pids(state)) == 1
    vm.console.wait_for(READY)
    assert reset_count(vm.console) == first + 2
    vm.ok("cancel", vm.deploy_id, HOST)
    assert until_no_swtpm(state)

    # libvirt refuses the domain: the swtpm started for it does not stay behind
    res = vm.run("deploy", str(vm.dir / "deployment.0"), HOST,
                 stdin=vm.domain(tpm_model="tpm-no-such-model"))
    assert res.returncode != 0 and "tpm-no-such-model" in res.stderr, res.stderr
    assert not swtpm_pids(state), "stopped with the failed deploy"
    assert (state / "tpm2-00.permall").exists(), "the TPM's state is kept"


def test_a_planted_tpm_directory_is_refused(vm):
    elsewhere = vm.dir.parent / f"elsewhere-{vm.id}"
    elsewhere.mkdir()
    (vm.dir / "tpm").symlink_to(elsewhere)
    res = vm.run("deploy", str(vm.dir / "deployment.0"), HOST,
                 stdin=vm.domain(tpm_model="tpm-crb"))
    assert res.returncode != 0
    assert "is not a directory of the driver's user" in res.stderr.strip().splitlines()[-1]
    assert not list(elsewhere.iterdir()), "nothing written through the link"
    assert vm.state() is None


def test_live_migration_takes_the_tpm_along(vm, two_hosts, lab_env):
    import libvirt

    remotes, made = two_hosts
    here = Path(f"/var/lib/one/datastores/197/{vm.id}")
    there = Path(lab_env["ONE_LAB_HOST_DATASTORES"]) / "197" / str(vm.id)
    for d in (here, there):  # what TM premigrate does: the VM directory on both hosts
        d.mkdir(parents=True, exist_ok=True)
        made.append(d)
    vm.dir = here
    vm.console = GuestConsole(here / "console")
    vm.deploy(tpm_model="tpm-crb")
    vm.console.wait_for(READY)
    before = reset_count(vm.console)
    vm.remotes = remotes
    res = vm.run("migrate", vm.deploy_id, "one-lab-host", HOST)
    assert res.returncode == 0, res.stderr
    assert vm.state() is None, "gone from the source"
    assert until_no_swtpm(here / "tpm"), "the source's swtpm ended with its QEMU"
    dst = libvirt.open(lab_env["ONE_LAB_HOST_LIBVIRT_URI"])
    try:
        moved = dst.lookupByUUIDString(vm.deploy_id)
        assert moved.state()[0] == 1
        assert reset_count(GuestConsole(there / "console")) == before, \
            "the same TPM on the destination, not reset"
        assert (there / "tpm" / "tpm2-00.permall").stat().st_size > 0, "its state there"
        moved.destroy()
    finally:
        dst.close()
