"""Backups of rbd disks into upstream's file backup datastores (rsync, restic): our TM
prebackup leaves on the host what their ``backup`` copies (``vm.xml``, ``disk.<id>.<n>`` qcow2),
postbackup removes it. The datastore's copy is played by ``rsync -aS`` as upstream's runs it;
the chain is rebuilt as upstream's restore does (``qemu-img rebase -u``), and every backup read
back by QEMU is compared byte for byte with what the disk held when it was taken."""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from one_drivers.lab.documents import datastore_doc, ds_doc
from tests.helpers import read_image, run_remote
from tests.integration.test_backup_rbd import BACKUP_DS, MIB, Vm, backup_ds

pytestmark = pytest.mark.lab

RSYNC_DS = 131


class FileBackupVm(Vm):
    """A VM whose backup datastore is upstream's rsync driver."""

    def __init__(self, env, remotes, ioctx, backup_ds_id: int = RSYNC_DS) -> None:
        super().__init__(env, remotes, ioctx)
        rsync = datastore_doc(env, RSYNC_DS).replace("<DS_MAD>rbd</DS_MAD>",
                                                     "<DS_MAD>rsync</DS_MAD>")
        self.oned.record("datastore", RSYNC_DS, rsync.replace("<TYPE>0</TYPE>", "<TYPE>2</TYPE>"))
        self.oned.record("datastore", BACKUP_DS, backup_ds(env))
        self.backup_ds_id = backup_ds_id
        self.dir = Path(f"/var/lib/one/datastores/101/{self.id}/backup")

    def doc(self, *, failed: bool = False) -> str:
        return super().doc(failed=failed).replace(
            "<FS_FREEZE>", f"<LAST_DATASTORE_ID>{self.backup_ds_id}</LAST_DATASTORE_ID><FS_FREEZE>")

    def step(self, action: str, *, failed: bool = False) -> None:
        proc = self.tm(action, failed=failed)
        assert proc.returncode == 0, f"{action}: {proc.stderr}"

    def copy_out(self, store: Path) -> None:
        """What upstream's rsync datastore does with the directory (over ssh there)."""
        store.mkdir(parents=True)
        subprocess.run(["rsync", "-aS", f"{self.dir}/", f"{store}/"], check=True, timeout=120)

    def remove(self) -> None:
        shutil.rmtree(self.dir.parent, ignore_errors=True)
        super().remove()


def qemu_img(*argv: str) -> str:
    return subprocess.run(["qemu-img", *argv], capture_output=True, text=True, check=True,
                          timeout=120).stdout


def read_back(qcow: Path, tmp: Path) -> bytes:
    """The disk as QEMU reads the backup file (and its rebuilt backing chain)."""
    raw = tmp / f"{qcow.name}.raw"
    qemu_img("convert", "-O", "raw", str(qcow), str(raw))
    return raw.read_bytes()


@pytest.fixture
def vm(lab_env, remotes, ceph_admin):
    v = FileBackupVm(lab_env, remotes, ceph_admin[1])
    yield v
    v.remove()


def test_full_and_increments_are_the_files_rsync_copies_and_restore_rebuilds(vm, ceph_admin,
                                                                             tmp_path):
    import rbd

    _, ioctx = ceph_admin
    vm.write(0, os.urandom(8 * MIB))
    vm.write(40 * MIB, os.urandom(MIB))
    states, stores = [], []
    for n in range(3):
        if n == 1:
            vm.write(16 * MIB, os.urandom(MIB))
            with rbd.Image(ioctx, vm.image) as image:  # a hole since the last backup
                image.discard(40 * MIB, MIB)
        if n == 2:
            vm.write(3 * MIB + 5, b"changed again")
        vm.step("prebackup")
        states.append(read_image(ioctx, vm.image, f"one_backup_{n}"))
        assert sorted(p.name for p in vm.dir.iterdir()) == [f"disk.0.{n}", "vm.xml"]
        assert base64.b64decode((vm.dir / "vm.xml").read_bytes()).decode() == vm.doc()
        info = qemu_img("info", "--output=json", str(vm.dir / f"disk.0.{n}"))
        assert '"format": "qcow2"' in info and '"backing-filename"' not in info
        qemu_img("check", str(vm.dir / f"disk.0.{n}"))
        stores.append(tmp_path / f"store{n}")
        vm.copy_out(stores[-1])
        vm.step("postbackup")
        assert not vm.dir.exists(), "postbackup removes the files"
        assert vm.backup_snaps() == [f"one_backup_{n}"], "the next increment's base is kept"
        vm.last, vm.chain_image = n, 77
    full = stores[0] / "disk.0.0"
    assert read_back(full, tmp_path) == states[0]
    sizes = [os.path.getsize(s / f"disk.0.{n}") for n, s in enumerate(stores)]
    assert sizes[0] > 9 * MIB and sizes[1] < 2 * MIB and sizes[2] < 1 * MIB, sizes
    # restore as upstream's does: every file in one place, each rebased on the one before
    chain = tmp_path / "chain"
    chain.mkdir()
    for n, store in enumerate(stores):
        shutil.copy(store / f"disk.0.{n}", chain / f"disk.0.{n}")
        if n:
            qemu_img("rebase", "-u", "-F", "qcow2", "-b", str(chain / f"disk.0.{n - 1}"),
                     str(chain / f"disk.0.{n}"))
        assert read_back(chain / f"disk.0.{n}", tmp_path) == states[n], f"increment {n}"
    assert states[1][40 * MIB:41 * MIB] == bytes(MIB) != states[0][40 * MIB:41 * MIB]


def test_a_failed_backup_leaves_no_files_and_keeps_the_base(vm):
    vm.write(0, os.urandom(MIB))
    vm.step("prebackup")
    vm.step("postbackup")
    vm.last, vm.chain_image = 0, 77
    vm.write(0, os.urandom(MIB))
    vm.step("prebackup")
    assert (vm.dir / "disk.0.1").exists()
    vm.step("prebackup")  # a re-run after a crash: the directory made again, not added to
    assert sorted(p.name for p in vm.dir.iterdir()) == ["disk.0.1", "vm.xml"]
    vm.step("postbackup", failed=True)
    assert not vm.dir.exists()
    assert vm.backup_snaps() == ["one_backup_0"], "the chain's base survives the failure"


def test_our_own_backup_datastore_gets_no_files(lab_env, remotes, ceph_admin):
    """The other side of the choice: the same VM backed up to an rbdbackup datastore."""
    plain = FileBackupVm(lab_env, remotes, ceph_admin[1], backup_ds_id=BACKUP_DS)
    try:
        plain.write(0, os.urandom(MIB))
        plain.step("prebackup")
        assert not plain.dir.exists()
        assert plain.backup_snaps() == ["one_backup_0"]
        plain.step("postbackup")
    finally:
        plain.remove()


@pytest.mark.parametrize("url", ["rsync://131/0:aa11bb/var/lib/one/datastores/131/7/aa11bb/"
                                 "disk.0.0", "restic://132/0:cafe01/var/lib/one/datastores/132"
                                 "/7/repo/disk.0.0"])
def test_our_cp_refuses_a_file_backup_url_in_one_line(lab_env, remotes, ceph_admin, url):
    """What upstream's restore hands an image datastore for an rsync / restic backup: our cp
    does not fetch those (their own datastores restore them) and says so, making nothing."""
    from tests.helpers import last_line, rbd_names

    iid = 990_000 + len(url)
    proc = run_remote(remotes, "datastore/rbd/cp", [str(iid)],
                      ds_doc(lab_env, iid, image={"PATH": url}))
    assert proc.returncode != 0
    line = last_line(proc.stderr)
    assert "unsupported source" in line and url.split(":", 1)[0] in line, proc.stderr
    assert f"one-{iid}" not in rbd_names(ceph_admin[1])
