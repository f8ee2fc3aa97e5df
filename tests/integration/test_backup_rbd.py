"""Backups of rbd disks into the ``rbdbackup`` datastore, as oned's VMM MAD drives them: TM
prebackup -> datastore backup -> TM postbackup, documents from the lab's oned stand-in, the
lab's real Ceph. Every backup is read back and compared byte for byte with what the disk held
when it was taken."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from one_drivers.core.faults import CRASH_AT, KILLED
from one_drivers.lab.documents import datastore_doc, disk_attrs, ds_doc, vm_doc
from one_drivers.lab.lab import Lab
from tests.helpers import rbd_names, read_image, run_remote

pytestmark = pytest.mark.lab

MIB = 1 << 20
IMAGE_DS, SYS_DS, BACKUP_DS = 100, 101, 130
_ids = itertools.count(random.randint(10_000, 90_000) * 10 + 3)


def backup_ds(env: dict[str, str], ds_id: int = BACKUP_DS, **template: str) -> str:
    """An rbdbackup datastore; ``template`` overrides (another cluster's Ceph access)."""
    return datastore_doc(env, ds_id, **template).replace(
        "<DS_MAD>rbd</DS_MAD>", "<DS_MAD>rbdbackup</DS_MAD>").replace("<TYPE>0</TYPE>",
                                                                      "<TYPE>2</TYPE>")


class Vm:
    def __init__(self, env, remotes, ioctx, mode: str = "INCREMENT") -> None:
        import rbd

        self.env, self.remotes, self.ioctx, self.mode = env, remotes, ioctx, mode
        self.id = next(_ids)
        self.image = f"one-{self.id}"
        rbd.RBD().create(ioctx, self.image, 64 * MIB)
        self.oned = Lab().oned
        self.oned.record("datastore", IMAGE_DS, datastore_doc(env, IMAGE_DS))
        self.oned.record("datastore", SYS_DS, datastore_doc(env, SYS_DS, system=True))
        self.backup_ds_id, self.backup_ds_xml = BACKUP_DS, backup_ds(env)
        self.oned.record("datastore", BACKUP_DS, self.backup_ds_xml)
        self.last, self.chain_image = -1, -1

    def doc(self, *, failed: bool = False) -> str:
        disk = disk_attrs(self.env, 0, IMAGE_ID=self.id, SOURCE=f"one/{self.image}",
                          CLONE="NO", PERSISTENT="YES", TYPE="RBD", DATASTORE_ID=IMAGE_DS)
        cfg = (f"<BACKUPS><BACKUP_CONFIG><MODE>{self.mode}</MODE>"
               f"<LAST_INCREMENT_ID>{self.last}</LAST_INCREMENT_ID>"
               f"<INCREMENTAL_BACKUP_ID>{self.chain_image}</INCREMENTAL_BACKUP_ID>"
               "<FS_FREEZE>NONE</FS_FREEZE></BACKUP_CONFIG><BACKUP_IDS/></BACKUPS>"
               + ("<BACKUP_RESULT>FAILURE</BACKUP_RESULT>" if failed else ""))
        return vm_doc(self.id, [disk], sys_ds=SYS_DS).replace("</VM>", cfg + "</VM>")

    def tm(self, action: str, *, failed: bool = False):
        argv = [f"localhost:/var/lib/one/datastores/{SYS_DS}/{self.id}", "0", "-", "-",
                str(self.id), str(SYS_DS)]
        return run_remote(self.remotes, f"tm/rbd/{action}", argv, self.doc(failed=failed),
                          base64_stdin=False)

    def ds_backup(self, env=None):
        data = f"<DS_DRIVER_ACTION_DATA>{self.backup_ds_xml}{self.doc()}</DS_DRIVER_ACTION_DATA>"
        argv = [f"localhost:/var/lib/one/datastores/{SYS_DS}/{self.id}", "0", "-", "-",
                str(self.id), str(SYS_DS)]
        return run_remote(self.remotes, "datastore/rbdbackup/backup", argv, data,
                          base64_stdin=False, env=env)

    def backup(self) -> tuple[str, int]:
        """One whole backup as oned runs it; the bookkeeping oned does afterwards."""
        for step in ("prebackup", "backup", "postbackup"):
            proc = self.ds_backup() if step == "backup" else self.tm(step)
            assert proc.returncode == 0, f"{step}: {proc.stderr}"
            if step == "backup":
                backup_id, size, fmt = proc.stdout.split()
                assert fmt == "raw"
        if self.mode == "INCREMENT":
            self.committed(backup_id)
        return backup_id, int(size)

    def committed(self, backup_id: str) -> None:
        """What oned does after a successful INCREMENT backup: the BACKUP image (SOURCE = the
        chain's first id) gets the increment, LAST_INCREMENT_ID moves on."""
        if self.chain_image < 0:
            self.chain_image, self.increments = next(_ids), []
        self.increments.append(backup_id)
        incs = "".join(f"<INCREMENT><ID>{i}</ID><SOURCE>{src}</SOURCE></INCREMENT>"
                       for i, src in enumerate(self.increments))
        self.oned.record("image", self.chain_image,
                         f"<IMAGE><ID>{self.chain_image}</ID><NAME>bk</NAME>"
                         f"<DATASTORE_ID>{self.backup_ds_id}</DATASTORE_ID>"
                         f"<SOURCE>{self.increments[0]}</SOURCE><SIZE>1</SIZE><TYPE>6</TYPE>"
                         f"<BACKUP_INCREMENTS>{incs}</BACKUP_INCREMENTS><TEMPLATE/></IMAGE>")
        self.last += 1

    def restore(self, increment: int, env=None):
        argv = [f"localhost:/var/lib/one/datastores/{SYS_DS}/{self.id}", str(self.id),
                str(self.chain_image), str(increment), "-1"]
        self.oned.record("vm", self.id, self.doc())
        return run_remote(self.remotes, "tm/rbd/restore", argv, "", base64_stdin=False, env=env)

    def write(self, offset: int, data: bytes) -> None:
        import rbd

        with rbd.Image(self.ioctx, self.image) as image:
            image.write(data, offset)

    def backup_snaps(self) -> list[str]:
        import rbd

        with rbd.Image(self.ioctx, self.image, read_only=True) as image:
            return sorted(s["name"] for s in image.list_snaps())

    def remove(self) -> None:
        import rbd

        with rbd.Image(self.ioctx, self.image) as image:
            for s in list(image.list_snaps()):
                image.remove_snap(s["name"])
        rbd.RBD().remove(self.ioctx, self.image)


def backup_image(backup_id: str, disk: int = 0) -> tuple[str, str]:
    """(image, snapshot) of a disk in a backup id ``pool/base@n``."""
    spec, n = backup_id.split("@")
    return f"{spec.split('/', 1)[1]}-{disk}", n


def rm_backup(env, remotes, backup_id: str):
    doc = ds_doc(env, 1, ds_id=BACKUP_DS, image={"SOURCE": backup_id, "TYPE": 6})
    return run_remote(remotes, "datastore/rbdbackup/rm", ["1"], doc)


@pytest.fixture
def vm(lab_env, remotes, ceph_admin):
    v = Vm(lab_env, remotes, ceph_admin[1])
    yield v
    v.remove()


def test_full_then_increments_each_restorable_and_only_changes_travel(vm, lab_env, remotes,
                                                                      ceph_admin):
    _, ioctx = ceph_admin
    vm.write(0, os.urandom(8 * MIB))
    states, ids, sizes = [], [], []
    for step in range(3):
        if step:
            vm.write(step * 16 * MIB, os.urandom(MIB))  # 1 MiB changed per increment
            vm.write(0, b"changed %d" % step)
        states.append(read_image(ioctx, vm.image))
        backup_id, size = vm.backup()
        ids.append(backup_id)
        sizes.append(size)
    assert [i.rsplit("@", 1)[1] for i in ids] == ["0", "1", "2"]
    assert len({i.rsplit("@", 1)[0] for i in ids}) == 1, "one chain"
    assert sizes[0] >= 8 and sizes[1] <= 2 and sizes[2] <= 2, sizes
    for backup_id, state in zip(ids, states, strict=True):
        name, snap = backup_image(backup_id)
        assert read_image(ioctx, name, snap) == state, f"{backup_id} is what the disk held"
    assert vm.backup_snaps() == ["one_backup_2"], "only the next increment's base is kept"

    # a user snapshot between backups: taken, reverted, deleted; backups go on (#8090)
    import rbd

    with rbd.Image(ioctx, vm.image) as image:
        image.create_snap("0")
    vm.write(0, b"after the user snapshot")
    with rbd.Image(ioctx, vm.image) as image:
        image.rollback_to_snap("0")
        image.remove_snap("0")
    states.append(read_image(ioctx, vm.image))
    backup_id, _ = vm.backup()
    ids.append(backup_id)
    assert read_image(ioctx, *backup_image(backup_id)) == states[-1]

    # ls, as upstream's TM restore asks: the VM and the backup IMAGE, no common root (the
    # datastore too here; without it the driver's configuration names the Ceph access)
    import json

    image_xml = (vm.oned.dir / "image" / f"{vm.chain_image}.xml").read_text()
    listed = run_remote(remotes, "datastore/rbdbackup/ls", ["-i", "1"],
                        vm.doc() + image_xml + backup_ds(lab_env), base64_stdin=False)
    assert listed.returncode == 0, listed.stderr
    name1, _ = backup_image(ids[1])
    assert json.loads(listed.stdout) == {"0": f"rbd://backup/{ids[1].split('/')[0]}/{name1}@1"}

    # KEEP_LAST=2: increments 0 and 1 go, 2 becomes the full one, nothing is copied
    doc = ds_doc(lab_env, vm.chain_image, ds_id=BACKUP_DS, image={"SOURCE": ids[0], "TYPE": 6})
    incs = "".join(f"<INCREMENT><ID>{i}</ID><SOURCE>{s}</SOURCE></INCREMENT>"
                   for i, s in enumerate(ids))
    doc = doc.replace("<TEMPLATE>", f"<BACKUP_INCREMENTS>{incs}</BACKUP_INCREMENTS><TEMPLATE>",
                      1).replace("</DS_DRIVER_ACTION_DATA>",
                                 "<EXTRA_DATA><KEEP_LAST>2</KEEP_LAST></EXTRA_DATA>"
                                 "</DS_DRIVER_ACTION_DATA>")
    flat = run_remote(remotes, "datastore/rbdbackup/increment_flatten", [str(vm.chain_image)],
                      doc)
    assert flat.returncode == 0, flat.stderr
    size, chain = flat.stdout.split()
    assert chain == f"2:{ids[2]},3:{ids[3]}" and int(size) >= 8
    name, _ = backup_image(ids[0])
    with rbd.Image(ioctx, name, read_only=True) as image:
        assert sorted(s["name"] for s in image.list_snaps()) == ["2", "3"]
    for backup_id, state in zip(ids[2:], states[2:], strict=True):
        assert read_image(ioctx, *backup_image(backup_id)) == state

    gone = rm_backup(lab_env, remotes, ids[0])
    assert gone.returncode == 0, gone.stderr
    assert name not in rbd_names(ioctx)


def test_a_failed_or_crashed_backup_keeps_the_chain(vm, lab_env, remotes, ceph_admin):
    _, ioctx = ceph_admin
    vm.write(0, os.urandom(4 * MIB))
    first, _ = vm.backup()
    # a failure after prebackup: postbackup with BACKUP_RESULT=FAILURE keeps the base
    vm.write(MIB, os.urandom(MIB))
    assert vm.tm("prebackup").returncode == 0
    assert vm.backup_snaps() == ["one_backup_0", "one_backup_1"]
    assert vm.tm("postbackup", failed=True).returncode == 0
    assert vm.backup_snaps() == ["one_backup_0"]
    # killed while writing the increment, then run again: the increment is whole
    vm.write(2 * MIB, os.urandom(MIB))
    state = read_image(ioctx, vm.image)
    assert vm.tm("prebackup").returncode == 0
    killed = vm.ds_backup(env={**os.environ, CRASH_AT: "backup:increment-written"})
    assert killed.returncode == KILLED
    vm.write(3 * MIB, b"written after the snapshot: not in the backup")
    again = vm.ds_backup()
    assert again.returncode == 0, again.stderr
    backup_id = again.stdout.split()[0]
    assert vm.tm("postbackup").returncode == 0
    assert backup_id.endswith("@1")
    assert read_image(ioctx, *backup_image(backup_id)) == state
    assert read_image(ioctx, *backup_image(first)) != state  # the full one is untouched
    assert rm_backup(lab_env, remotes, first).returncode == 0


def test_full_mode_makes_a_new_image_each_time_and_keeps_no_snapshot(lab_env, remotes,
                                                                     ceph_admin):
    _, ioctx = ceph_admin
    vm = Vm(lab_env, remotes, ioctx, mode="FULL")
    try:
        vm.write(0, os.urandom(2 * MIB))
        one, _ = vm.backup()
        vm.write(0, os.urandom(MIB))
        state = read_image(ioctx, vm.image)
        two, _ = vm.backup()
        assert one.split("@")[0] != two.split("@")[0] and two.endswith("@0")
        assert read_image(ioctx, *backup_image(two)) == state
        assert vm.backup_snaps() == []
        for backup_id in (one, two):
            assert rm_backup(lab_env, remotes, backup_id).returncode == 0
        assert not {n for n in rbd_names(ioctx) if n.startswith(f"one-backup-{vm.id}-")}
    finally:
        vm.remove()


def test_restore_in_place_clones_the_backup_and_survives_a_crash(vm, lab_env, remotes,
                                                                  ceph_admin):
    """onevm restore: the powered-off VM's disk becomes the backup's snapshot (a clone: instant
    at any size), whichever increment is asked; a kill between moving the old disk aside and
    putting the clone in place is finished by a re-run."""
    import rbd

    _, ioctx = ceph_admin
    states = []
    for step in range(3):
        vm.write(step * MIB, os.urandom(MIB))
        states.append(read_image(ioctx, vm.image))
        vm.backup()
    vm.write(0, b"after every backup")
    for inc, expected in ((1, states[1]), (-1, states[2]), (0, states[0])):
        res = vm.restore(inc)
        assert res.returncode == 0, res.stderr
        assert read_image(ioctx, vm.image) == expected, f"increment {inc}"
    with rbd.Image(ioctx, vm.image, read_only=True) as disk:
        assert disk.get_parent_image_spec()["snap_name"] == "0", "a clone of the backup"
    killed = vm.restore(1, env={**os.environ, CRASH_AT: "restore:moved-aside"})
    assert killed.returncode == KILLED
    assert vm.image not in rbd_names(ioctx), "killed with the old disk aside"
    again = vm.restore(1)
    assert again.returncode == 0, again.stderr
    assert read_image(ioctx, vm.image) == states[1]
    assert not {n for n in rbd_names(ioctx) if n.startswith(vm.image + ".")}, "nothing left"
    missing = vm.restore(7)
    assert missing.returncode == 3 and "has no increment 7" in missing.stderr


def test_backup_cancel_stops_the_running_backup_and_leaves_nothing(vm, remotes, ceph_admin,
                                                                   tmp_path):
    """backup_cancel as oned runs it (``host:dir deploy_id``, the VM on stdin) while a full
    backup holds at a point (its staging image complete, not yet renamed): the backup ends,
    its staging image goes, postbackup with BACKUP_RESULT=FAILURE drops the new snapshot. With
    nothing running, cancel is a no-op (the positive control is the first cancel's effect)."""
    import subprocess
    import time

    from one_drivers.core.faults import PAUSE_AT

    _, ioctx = ceph_admin
    vm.write(0, os.urandom(2 * MIB))
    assert vm.tm("prebackup").returncode == 0
    marker = tmp_path / "paused"
    data = f"<DS_DRIVER_ACTION_DATA>{backup_ds(vm.env)}{vm.doc()}</DS_DRIVER_ACTION_DATA>"
    argv = [str(remotes / "datastore/rbdbackup/backup"),
            f"localhost:/var/lib/one/datastores/{SYS_DS}/{vm.id}", "0", "-", "-", str(vm.id),
            str(SYS_DS)]
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE,
                            env={**os.environ, PAUSE_AT: f"build:made={marker}"})
    assert proc.stdin is not None
    proc.stdin.write(data.encode())
    proc.stdin.close()
    end = time.monotonic() + 60
    while not marker.exists() and proc.poll() is None and time.monotonic() < end:
        time.sleep(0.05)
    assert marker.exists(), "the backup reached the point"
    staging = {n for n in rbd_names(ioctx) if n.startswith(f"one-backup-{vm.id}-")}
    assert staging and all(n.endswith(".one-drivers-tmp") for n in staging), staging
    cancel = run_remote(remotes, "datastore/rbdbackup/backup_cancel",
                        [f"localhost:/var/lib/one/datastores/{SYS_DS}/{vm.id}", "-"],
                        vm.doc(), base64_stdin=False)
    assert cancel.returncode == 0 and "stopped the backup" in cancel.stderr, cancel.stderr
    assert proc.wait(timeout=60) != 0
    assert not {n for n in rbd_names(ioctx) if n.startswith(f"one-backup-{vm.id}-")}
    assert vm.tm("postbackup", failed=True).returncode == 0
    assert vm.backup_snaps() == []
    again = run_remote(remotes, "datastore/rbdbackup/backup_cancel",
                       [f"localhost:/var/lib/one/datastores/{SYS_DS}/{vm.id}", "-"], vm.doc(),
                       base64_stdin=False)
    assert again.returncode == 0 and "no backup of VM" in again.stderr, again.stderr


def test_a_backup_restored_to_a_new_image_is_a_clone_of_its_snapshot(vm, lab_env, remotes,
                                                                      ceph_admin):
    """What `oneimage restore` makes the image datastore's cp do: PATH rbd://...@n with a grant,
    for the user who asked: a clone (instant at any size), the data the backup holds; with a
    checksum to verify, the data is read and checked instead (the positive control)."""
    import hashlib

    import rbd

    from one_drivers.ceph import grants

    _, ioctx = ceph_admin
    vm.write(0, os.urandom(2 * MIB))
    backup_id, _ = vm.backup()
    name, snap = backup_image(backup_id)
    url = f"rbd://backup/{backup_id.split('/', 1)[0]}/{name}@{snap}"
    data = read_image(ioctx, name, snap)
    made = []
    try:
        for checksum in (None, hashlib.md5(data).hexdigest()):
            iid = next(_ids)
            made.append(iid)
            template = {"RBD_SOURCE_GRANT": grants.grant(url, f"img{iid}")}
            if checksum:
                template["MD5"] = checksum
            doc = ds_doc(lab_env, iid, image={"PATH": url, "UID": 7, "GID": 100},
                         image_template=template)
            proc = run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc)
            assert proc.returncode == 0, proc.stderr
            assert read_image(ioctx, f"one-{iid}") == data
            with rbd.Image(ioctx, f"one-{iid}", read_only=True) as image:
                try:
                    parent = image.get_parent_image_spec()["image_name"]
                except rbd.ImageNotFound:
                    parent = None
            assert parent == (None if checksum else name), (checksum, parent)
    finally:
        for iid in made:
            run_remote(remotes, "datastore/rbd/rm", [str(iid)],
                       ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid}"}))
        assert rm_backup(lab_env, remotes, backup_id).returncode == 0


def test_stat_answers_a_backups_size_in_mb(vm, lab_env, remotes):
    from tests.helpers import last_line

    vm.write(0, os.urandom(MIB))
    backup_id, _ = vm.backup()
    name, snap = backup_image(backup_id)
    pool = backup_id.split("/", 1)[0]
    for path in (backup_id, f"rbd://backup-{BACKUP_DS}/{pool}/{name}@{snap}"):
        doc = ds_doc(lab_env, 1, ds_id=BACKUP_DS, image={"PATH": path, "TYPE": 6})
        proc = run_remote(remotes, "datastore/rbdbackup/stat", ["1"], doc)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout.strip() == "64", path  # the disk's size, whatever is allocated
    missing = backup_id.replace("@0", "@7")
    proc = run_remote(remotes, "datastore/rbdbackup/stat", ["1"],
                      ds_doc(lab_env, 1, ds_id=BACKUP_DS, image={"PATH": missing, "TYPE": 6}))
    assert proc.returncode != 0 and last_line(proc.stderr), proc.stderr
    assert rm_backup(lab_env, remotes, backup_id).returncode == 0
