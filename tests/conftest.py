"""Shared fixtures: the embedded lab (session-scoped) and document builders."""

from __future__ import annotations

import base64
import os
from collections.abc import Iterator

import pytest
from hypothesis import settings

from tests import rbd_handles

# a failure prints the blob that replays it (@reproduce_failure); the state machines print
# their seed before they start (tests.helpers.replayable)
settings.register_profile("one-drivers", print_blob=True)
settings.load_profile("one-drivers")

rbd_handles.install()  # before any test or in-process action opens an image


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
    from tests.helpers import admin_pool

    with admin_pool(lab_env) as pool:
        yield pool


@pytest.fixture(scope="session")
def second_cluster(lab_env, tmp_path_factory):
    """Another Ceph cluster (the lab's, at other ports in a directory of its own): a market or
    a backup datastore that is not on the datastores' cluster."""
    from one_drivers.lab.ceph import CephLab

    ceph = CephLab(tmp_path_factory.mktemp("ceph2"), port_offset=400)
    ceph.up()
    try:
        yield ceph
    finally:
        ceph.down()


@pytest.fixture(autouse=True)
def no_rbd_image_outlives_its_cluster() -> Iterator[None]:
    """Every test, and every driver action run in the test's process, closes each RBD image
    before its cluster handle goes: checked after each test."""
    yield
    leaked = rbd_handles.take_violations()
    assert not leaked, (f"{len(leaked)} RBD image(s) still open when their cluster shut down "
                        "(close them first); opened at:\n" + "\n".join(leaked))
