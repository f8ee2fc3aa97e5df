"""Shared fixtures: the embedded lab (session-scoped) and document builders."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

# a failure prints the blob that replays it (@reproduce_failure); the state machines print
# their seed before they start (tests.helpers.replayable)
settings.register_profile("one-drivers", print_blob=True)
settings.load_profile("one-drivers")


@pytest.fixture(scope="session")
def lab_env() -> Iterator[dict[str, str]]:
    """The lab, brought up if needed (a no-op when `make lab-up` already did it).

    Tests that need it are real-service tests: if the lab cannot come up they fail, never skip.
    """
    from one_drivers.lab.lab import Lab

    lab = Lab()
    lab.up()
    status = lab.status()
    assert status["healthy"], f"lab is not healthy: {status}"
    env = lab.env()
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def b64(text: str) -> bytes:
    return base64.b64encode(text.encode())


@pytest.fixture(scope="session")
def remotes(tmp_path_factory):
    """The remotes tree installed as on a front-end, run with this interpreter."""
    import sys

    from one_drivers.core.remotes import install

    dest = tmp_path_factory.mktemp("remotes")
    install(dest, python=sys.executable)
    return dest


@pytest.fixture(scope="session")
def ceph_admin(lab_env):
    """(cluster, ioctx of the lab's pool) as client.admin, to check effects in Ceph."""
    import rados

    cluster = rados.Rados(conffile=lab_env["CEPH_CONF"], rados_id="admin")
    cluster.connect(timeout=10)
    ioctx = cluster.open_ioctx(lab_env["ONE_LAB_CEPH_POOL"])
    yield cluster, ioctx
    ioctx.close()
    cluster.shutdown()


def _orphaned_rbd_images() -> int:
    """rbd.Image objects still alive whose cluster handle was shut down: when the garbage
    collector reaches one, librbd closes it against a dead cluster (seen: it hangs for ever in
    rbd_close; a use after free can crash the process anywhere later, as in #19's segfault)."""
    import gc
    import sys

    rbd = sys.modules.get("rbd")
    if rbd is None:
        return 0
    count = 0
    for obj in gc.get_objects():
        if isinstance(obj, rbd.Image):
            try:
                state = obj.ioctx.rados.state
            except AttributeError:
                continue
            if state != "connected":
                count += 1
    return count


@pytest.fixture(autouse=True)
def no_rbd_image_outlives_its_cluster() -> Iterator[None]:
    """Every test, and every driver action run in the test's process, closes each RBD image
    before its cluster handle goes: checked after each test."""
    yield
    orphans = _orphaned_rbd_images()
    assert orphans == 0, (f"{orphans} RBD image handle(s) outlived their cluster: close them "
                          "before the cluster shuts down")
