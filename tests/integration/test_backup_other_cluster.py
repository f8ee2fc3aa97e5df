"""An rbdbackup datastore on another Ceph cluster than the disks (its own CEPH_CONF, user and
key): backups are written there, and both restores stream them back (a clone cannot cross
clusters): in place (TM restore) and to a new image (the image datastore's cp of the restore's
granted ``rbd://backup-<datastore>/`` source). Every restore is compared byte for byte with the
disk at that backup; on the same cluster the same source is a clone (the other side of the
choice)."""

from __future__ import annotations

import os

import pytest

from one_drivers.ceph import grants
from one_drivers.lab.documents import ds_doc
from tests.helpers import admin_pool, rbd_names, read_image, run_remote
from tests.integration.test_backup_rbd import BACKUP_DS, MIB, Vm, _ids, backup_ds, backup_image

pytestmark = pytest.mark.lab

OTHER_DS = 132


class OtherClusterVm(Vm):
    def __init__(self, env, remotes, ioctx, other: dict[str, str]) -> None:
        super().__init__(env, remotes, ioctx)
        self.backup_ds_id = OTHER_DS
        self.backup_ds_xml = backup_ds(env, OTHER_DS, POOL_NAME=other["ONE_LAB_CEPH_POOL"],
                                       CEPH_CONF=other["CEPH_CONF"],
                                       CEPH_USER=other["ONE_LAB_CEPH_USER"],
                                       CEPH_KEY=other["ONE_LAB_CEPH_KEYRING"],
                                       CEPH_HOST=other["ONE_LAB_CEPH_MON"])
        self.oned.record("datastore", OTHER_DS, self.backup_ds_xml)


@pytest.fixture
def other(second_cluster):
    """(env, admin ioctx of its pool) of the second cluster."""
    env = second_cluster.env()
    with admin_pool(env) as (_, ioctx):
        yield env, ioctx


def parent_of(ioctx, name: str) -> str | None:
    import rbd

    with rbd.Image(ioctx, name, read_only=True) as image:
        try:
            return image.get_parent_image_spec()["image_name"]
        except rbd.ImageNotFound:
            return None


def test_backups_on_another_cluster_are_restored_by_streaming(lab_env, remotes, ceph_admin,
                                                              other):
    _, ioctx = ceph_admin
    env2, ioctx2 = other
    vm = OtherClusterVm(lab_env, remotes, ioctx, env2)
    made: list[int] = []
    try:
        vm.write(0, os.urandom(4 * MIB))
        states, ids = [], []
        for n in range(2):
            if n:
                vm.write(9 * MIB, os.urandom(MIB))
            states.append(read_image(ioctx, vm.image))
            backup_id, _ = vm.backup()
            ids.append(backup_id)
        name, _ = backup_image(ids[0])
        assert name in rbd_names(ioctx2) and name not in rbd_names(ioctx), "kept on the other"
        for backup_id, state in zip(ids, states, strict=True):
            assert read_image(ioctx2, *backup_image(backup_id)) == state

        # to a new image: the source the restore grants, read with the backup datastore's
        # access from oned; streamed (no parent across clusters)
        url = f"rbd://backup-{OTHER_DS}/{env2['ONE_LAB_CEPH_POOL']}/{name}@0"
        iid = next(_ids)
        made.append(iid)
        doc = ds_doc(lab_env, iid, image={"PATH": url, "UID": 7, "GID": 100},
                     image_template={"RBD_SOURCE_GRANT": grants.grant(url, f"img{iid}")})
        proc = run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc)
        assert proc.returncode == 0, proc.stderr
        assert read_image(ioctx, f"one-{iid}") == states[0]
        assert parent_of(ioctx, f"one-{iid}") is None

        # in place, to the first backup, then the second
        for n in (0, 1):
            vm.write(0, b"after the backups")
            proc = vm.restore(n)
            assert proc.returncode == 0, proc.stderr
            assert read_image(ioctx, vm.image) == states[n], f"restored to backup {n}"
            assert parent_of(ioctx, vm.image) is None, "streamed, not cloned"
    finally:
        for iid in made:
            run_remote(remotes, "datastore/rbd/rm", [str(iid)],
                       ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid}"}))
        vm.remove()
        import rbd

        for n in rbd_names(ioctx2):
            if n.startswith(f"one-backup-{vm.id}-"):
                with rbd.Image(ioctx2, n) as image:
                    for s in list(image.list_snaps()):
                        image.remove_snap(s["name"])
                rbd.RBD().remove(ioctx2, n)


def test_a_restore_source_on_the_same_cluster_is_a_clone(lab_env, remotes, ceph_admin):
    """The other side of the choice: the same kind of source, backup datastore on the disks'
    cluster: a clone of the backup's snapshot."""
    _, ioctx = ceph_admin
    vm = Vm(lab_env, remotes, ioctx)
    iid = next(_ids)
    try:
        vm.write(0, os.urandom(2 * MIB))
        backup_id, _ = vm.backup()
        name, snap = backup_image(backup_id)
        url = f"rbd://backup-{BACKUP_DS}/{backup_id.split('/', 1)[0]}/{name}@{snap}"
        doc = ds_doc(lab_env, iid, image={"PATH": url, "UID": 7, "GID": 100},
                     image_template={"RBD_SOURCE_GRANT": grants.grant(url, f"img{iid}")})
        proc = run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc)
        assert proc.returncode == 0, proc.stderr
        assert parent_of(ioctx, f"one-{iid}") == name
        assert read_image(ioctx, f"one-{iid}") == read_image(ioctx, name, snap)
    finally:
        run_remote(remotes, "datastore/rbd/rm", [str(iid)],
                   ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid}"}))
        vm.remove()


def test_a_backup_url_naming_a_datastore_that_is_not_a_backup_one_is_refused(lab_env, remotes,
                                                                             ceph_admin):
    """A granted URL can only name an rbdbackup datastore (here: the image datastore)."""
    from tests.helpers import last_line

    Vm(lab_env, remotes, ceph_admin[1]).remove()  # records the lab's datastores in the stand-in
    url = "rbd://backup-100/one/whatever@0"
    iid = next(_ids)
    doc = ds_doc(lab_env, iid, image={"PATH": url, "UID": 7, "GID": 100},
                 image_template={"RBD_SOURCE_GRANT": grants.grant(url, f"img{iid}")})
    proc = run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc)
    assert proc.returncode != 0
    assert "not an rbdbackup datastore" in last_line(proc.stderr), proc.stderr
    assert f"one-{iid}" not in rbd_names(ceph_admin[1])
