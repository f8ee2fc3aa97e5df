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
