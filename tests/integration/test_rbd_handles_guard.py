"""The suite's guard against RBD images left open past their cluster's shutdown (#19) sees
such an image, and stays quiet for one closed in time."""

from __future__ import annotations

import os

from tests import rbd_handles


def _cluster(lab_env):
    import rados

    cluster = rados.Rados(conffile=lab_env["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=10)
    return cluster, cluster.open_ioctx(lab_env["ONE_LAB_CEPH_POOL"])


def test_an_image_open_at_shutdown_is_caught_and_a_closed_one_is_not(lab_env, ceph_admin):
    import rbd

    name = f"guard-{os.getpid()}"
    rbd.RBD().create(ceph_admin[1], name, 1 << 20)
    try:
        cluster, ioctx = _cluster(lab_env)  # closed in time: nothing recorded
        with rbd.Image(ioctx, name, read_only=True):
            pass
        ioctx.close()
        cluster.shutdown()
        assert rbd_handles.take_violations() == []

        cluster, ioctx = _cluster(lab_env)  # left open: recorded, with where it was opened
        leaked = rbd.Image(ioctx, name, read_only=True)
        cluster.shutdown()
        found = rbd_handles.take_violations()
        assert len(found) == 1 and "test_rbd_handles_guard.py" in found[0], found
        del leaked  # kept alive by the guard: never closed against the dead cluster
    finally:
        rbd.RBD().remove(ceph_admin[1], name)
