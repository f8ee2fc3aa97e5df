"""Removing an image frees its snapshots' RADOS ids together, in the pool that holds the data."""

from __future__ import annotations

import itertools
import random

import pytest

from one_drivers.ceph.naming import ImageSpec
from one_drivers.ceph.rbd_ops import collect_parent, release_snap_ids, remove_image
from tests.helpers import rbd_names, trash_names

pytestmark = pytest.mark.lab

MIB = 1024 * 1024
_names = (f"one-removal-{n}" for n in itertools.count(random.randint(1000, 9000)))


@pytest.mark.parametrize("on_data_pool", [False, True], ids=["replicated", "ec-data-pool"])
def test_snapshot_ids_released_in_the_data_pool_and_shared_ones_kept(lab_env, ceph_admin,
                                                                      on_data_pool):
    import rbd

    cluster, ioctx = ceph_admin
    data_pool = lab_env["ONE_LAB_CEPH_DATA_POOL"] if on_data_pool else None
    name, child = next(_names), next(_names)
    rbd.RBD().create(ioctx, name, 16 * MIB, data_pool=data_pool)
    with rbd.Image(ioctx, name) as image:
        for n in range(3):
            image.write(bytes([65 + n]) * 4096, 0)
            image.create_snap(f"s{n}")
        image.write(b"Z" * 4096, 0)
    rbd.RBD().clone(ioctx, name, "s1", ioctx, child)  # s1 has a clone: it must survive
    try:
        with rbd.Image(ioctx, name) as image:
            assert release_snap_ids(cluster, ioctx, image) == 2
            for snap, seen in (("s0", bytes(4)), ("s1", b"BBBB"), ("s2", bytes(4))):
                image.set_snap(snap)  # a released id reads as a hole: its data is gone
                assert image.read(0, 4) == seen, snap
            image.set_snap(None)
            assert image.read(0, 4) == b"ZZZZ"  # the image itself untouched
            assert release_snap_ids(cluster, ioctx, image) == 2  # again: harmless
        with rbd.Image(ioctx, child, read_only=True) as clone:
            assert clone.read(0, 4) == b"BBBB"
        assert remove_image(cluster, ioctx, name) == "hidden"  # its clone still hangs from s1
        with rbd.Image(ioctx, child, read_only=True) as clone:
            assert clone.read(0, 4) == b"BBBB"
        assert remove_image(cluster, ioctx, child) == "removed"
        assert collect_parent(cluster, ImageSpec(ioctx.get_pool_name(), name))
        assert not {name, child} & (rbd_names(ioctx) | trash_names(ioctx))
    finally:
        for leftover in (child, name):
            if leftover in rbd_names(ioctx):
                remove_image(cluster, ioctx, leftover)


def test_a_removal_killed_after_releasing_ids_leaves_nothing_anyone_can_open(
        lab_env, remotes, ceph_admin, tmp_path):
    """Releasing snapshot ids ends their data at once: from that moment nobody may find the
    image by its name (it is in the trash first), and a re-run finishes the removal."""
    import base64
    import os
    import subprocess

    import rbd

    from one_drivers.core.faults import CRASH_AT, KILLED
    from tests.helpers import ds_doc

    _, ioctx = ceph_admin
    iid = random.randint(10_000_000, 90_000_000)
    name = f"one-{iid}"
    rbd.RBD().create(ioctx, name, 4 * MIB)
    with rbd.Image(ioctx, name) as image:
        image.write(b"A" * 4096, 0)
        image.create_snap("0")
        image.create_snap("1")
    doc = base64.b64encode(ds_doc(lab_env, iid, image={"SOURCE": f"one/{name}"}).encode())
    rm = [str(remotes / "datastore" / "rbd" / "rm"), str(iid)]
    killed = subprocess.run(rm, input=doc, capture_output=True, timeout=120, check=False,
                            env={**os.environ, CRASH_AT: "remove:snap-ids-released"})
    assert killed.returncode == KILLED, killed.stderr
    assert name not in rbd_names(ioctx), "no visible image with snapshots half gone"
    with pytest.raises(rbd.ImageNotFound):
        rbd.Image(ioctx, name, snapshot="0", read_only=True)
    assert name in trash_names(ioctx), "it waits in the trash (positive control)"
    again = subprocess.run(rm, input=doc, capture_output=True, timeout=120, check=False)
    assert again.returncode == 0, again.stderr
    assert name not in rbd_names(ioctx) | trash_names(ioctx)
