"""Live backups of a running guest that keeps writing to its RBD disk: a full backup then three
increments, as oned's VMM MAD runs them (prebackup_live -> backup -> postbackup_live). Each
backup must hold exactly the disk's point in time (its one_backup_<n> snapshot, read while the
guest goes on writing), byte for byte, and be restorable: the guest writes never stop."""

from __future__ import annotations

import pytest

from tests.helpers import read_image
from tests.integration import test_backup_rbd as bk
from tests.integration import test_vmm_libvirt as vmm

pytestmark = pytest.mark.lab
vm, guest_raw, vmm_remotes = vmm.vm, vmm.guest_raw, vmm.vmm_remotes

WRITER = ("(i=0; while true; do echo \"block $i\" | dd of=/dev/vda bs=4096 seek=$((i % 2048)) "
          "conv=notrunc,fsync 2>/dev/null; i=$((i+1)); done) >/dev/null 2>&1 & true")


class LiveVm(bk.Vm):
    """The backup helper's VM, on the running guest's own disk."""

    def __init__(self, env, remotes, ioctx, image: str, vm_id: int) -> None:
        from one_drivers.lab.documents import datastore_doc
        from one_drivers.lab.lab import Lab

        self.env, self.remotes, self.ioctx, self.mode = env, remotes, ioctx, "INCREMENT"
        self.id, self.image = vm_id, image
        self.oned = Lab().oned
        self.oned.record("datastore", bk.IMAGE_DS, datastore_doc(env, bk.IMAGE_DS))
        self.oned.record("datastore", bk.SYS_DS, datastore_doc(env, bk.SYS_DS, system=True))
        self.backup_ds_id, self.backup_ds_xml = bk.BACKUP_DS, bk.backup_ds(env)
        self.oned.record("datastore", bk.BACKUP_DS, self.backup_ds_xml)
        self.last, self.chain_image = -1, -1


def test_live_backups_of_a_writing_guest_hold_each_point_in_time(vm, lab_env, remotes,
                                                                   ceph_admin):
    import rbd

    _, ioctx = ceph_admin
    vm.deploy()
    vm.console.wait_for(vmm.READY)
    live = LiveVm(lab_env, remotes, ioctx, vm.disk, vm.id)
    vm.console.run(WRITER)
    ids = []
    for n in range(4):
        for step in ("prebackup_live", "backup"):
            proc = live.ds_backup() if step == "backup" else live.tm(step)
            assert proc.returncode == 0, f"{step} {n}: {proc.stderr}"
        backup_id = proc.stdout.split()[0]
        name, snap = bk.backup_image(backup_id)
        # the guest has gone on writing: the backup is the snapshot, not the disk now
        point = read_image(ioctx, vm.disk, f"one_backup_{n}")
        assert read_image(ioctx, name, snap) == point, f"backup {n}"
        assert read_image(ioctx, vm.disk) != point, "positive control: the guest kept writing"
        assert live.tm("postbackup_live").returncode == 0
        live.committed(backup_id)
        ids.append(backup_id)
    assert [i.rsplit("@", 1)[1] for i in ids] == ["0", "1", "2", "3"]
    with rbd.Image(ioctx, vm.disk, read_only=True) as disk:
        assert [s["name"] for s in disk.list_snaps()] == ["one_backup_3"]
    vm.ok("cancel", vm.deploy_id, vmm.HOST)
    gone = bk.rm_backup(lab_env, remotes, ids[0])
    assert gone.returncode == 0, gone.stderr
    with rbd.Image(ioctx, vm.disk) as disk:
        disk.remove_snap("one_backup_3")


# each round: the number to the first disk, flushed, then to the second: any moment the two
# disks really share has the second's number equal to the first's or one behind
COUNTER = ("(i=0; while true; do for d in vda vdb; do echo \"n $i\" | dd of=/dev/$d bs=512 "
           "seek=64 conv=notrunc,fsync 2>/dev/null; done; i=$((i+1)); done) >/dev/null 2>&1 "
           "& true")


def counter(ioctx, image: str, snap: str | None = None) -> int:
    import rbd

    with rbd.Image(ioctx, image, snapshot=snap, read_only=True) as img:
        text = img.read(64 * 512, 32).split(b"\n", 1)[0].decode(errors="replace")
    return int(text[2:]) if text.startswith("n ") else -1


class TwoDiskVm(LiveVm):
    def __init__(self, env, remotes, ioctx, images: list[str], vm_id: int, deploy_id: str):
        super().__init__(env, remotes, ioctx, images[0], vm_id)
        self.images, self.deploy_id = images, deploy_id

    def doc(self, *, failed: bool = False) -> str:
        from one_drivers.lab.documents import disk_attrs, vm_doc

        disks = [disk_attrs(self.env, i, IMAGE_ID=self.id * 10 + i, SOURCE=f"one/{name}",
                            CLONE="NO", PERSISTENT="YES", TYPE="RBD", DATASTORE_ID=bk.IMAGE_DS)
                 for i, name in enumerate(self.images)]
        cfg = ("<BACKUPS><BACKUP_CONFIG><MODE>FULL</MODE><FS_FREEZE>NONE</FS_FREEZE>"
               "</BACKUP_CONFIG><BACKUP_IDS/></BACKUPS>")
        return vm_doc(self.id, disks, sys_ds=bk.SYS_DS).replace("</VM>", cfg + "</VM>")

    def start_prebackup(self, marker):
        import os
        import subprocess

        argv = [f"localhost:/var/lib/one/datastores/{bk.SYS_DS}/{self.id}", "0:1",
                self.deploy_id, "-", str(self.id), str(bk.SYS_DS)]
        return subprocess.Popen([str(self.remotes / "tm/rbd/prebackup_live"), *argv],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                env={**os.environ,
                                     "ONE_DRIVERS_PAUSE_AT": f"prebackup:snapshot={marker}"})


def test_a_live_backup_of_two_disks_holds_one_moment_of_both(vm, lab_env, remotes, ceph_admin,
                                                             tmp_path):
    """FS_FREEZE=NONE, two disks, a guest writing to both in turn; the backup's snapshots are
    held apart on purpose (the action stopped between the first disk's and the second's) and
    still agree, because the guest is paused meanwhile. Positive control: snapshots taken the
    same way by hand, without the pause, disagree."""
    import time

    import rbd

    _, ioctx = ceph_admin
    vm.deploy()
    vm.console.wait_for(vmm.READY)
    second = f"one-{vm.id}-second"
    rbd.RBD().create(ioctx, second, 32 << 20)
    vm.images.append(second)
    disk = {"DISK_ID": 1, "TYPE": "RBD", "SOURCE": f"one/{second}", "ATTACH": "YES",
            "CEPH_USER": lab_env["ONE_LAB_CEPH_USER"],
            "CEPH_SECRET": lab_env["ONE_LAB_CEPH_SECRET"],
            "CEPH_HOST": lab_env["ONE_LAB_CEPH_MON"], "TARGET": "vdb"}
    vm.ok("attach_disk", vm.deploy_id, str(vm.dir / "disk.1"), "vdb", "1", "bXNn",
          stdin=vm.action_data(disks=[disk]))
    assert vm.console.wait_until_output("ls /sys/block", "vdb")
    vm.console.run(COUNTER)

    def progressed(image: str, past: int, timeout: float = 60) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            now = counter(ioctx, image)
            if now >= past:
                return now
            time.sleep(0.05)
        raise AssertionError(f"{image} did not reach {past}")

    progressed(second, 3)
    # the control: the first disk's snapshot, the guest goes on, the second's
    started = time.monotonic()
    with rbd.Image(ioctx, vm.disk) as a:
        a.create_snap("control")
    first = counter(ioctx, vm.disk, "control")
    progressed(second, first + 3)
    took = time.monotonic() - started
    with rbd.Image(ioctx, second) as b:
        b.create_snap("control")
    assert counter(ioctx, second, "control") > first, "one by one, the disks disagree"

    live = TwoDiskVm(lab_env, remotes, ioctx, [vm.disk, second], vm.id, vm.deploy_id)
    marker = tmp_path / "between"
    proc = live.start_prebackup(marker)
    try:
        assert proc.stdin is not None
        proc.stdin.write(live.doc())
        proc.stdin.close()
        end = time.monotonic() + 120
        while not marker.exists():
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < end, "the action never got between the two snapshots"
            time.sleep(0.02)
        assert vm.state() == 3, "the guest is paused (VIR_DOMAIN_PAUSED) between the snapshots"
        held = counter(ioctx, second)
        time.sleep(max(3 * took, 1))  # three times what the control needed to see progress
        assert counter(ioctx, second) == held, "a paused guest writes nothing"
        marker.unlink()
        while proc.poll() is None:  # the point is met again after the second disk's snapshot
            if marker.exists():
                marker.unlink()
            time.sleep(0.02)
        assert proc.returncode == 0, proc.stderr.read() if proc.stderr else ""
    finally:  # a failure above must not leave the action holding the disks
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=30)
        marker.unlink(missing_ok=True)
    a_n, b_n = counter(ioctx, vm.disk, "one_backup_0"), counter(ioctx, second, "one_backup_0")
    assert b_n in (a_n, a_n - 1), (a_n, b_n)
    assert vm.state() == 1, "running again"
    progressed(second, b_n + 2)  # and writing again
    for name in (vm.disk, second):
        with rbd.Image(ioctx, name) as img:
            img.remove_snap("control")
            img.remove_snap("one_backup_0")
    vm.ok("cancel", vm.deploy_id, vmm.HOST)
