"""Two builds of one image id never destroy each other's work; a crash during mkfs leaves no
staging file. Against the lab's Ceph, through the installed remotes."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from one_drivers.core.faults import CRASH_AT, KILLED
from tests.helpers import ds_doc, last_line, rbd_names, read_image, run_remote
from tests.integration.test_ds_rbd_actions import cp, image_ids, sample  # noqa: F401

pytestmark = pytest.mark.lab


def test_a_cp_while_another_builds_the_same_image_changes_nothing(
        lab_env, remotes, ceph_admin, image_ids, sample):  # noqa: F811
    _, ioctx = ceph_admin
    path, data = sample
    iid = image_ids()
    obj = f"one-drivers.build.one-{iid}"
    # the claim of a live cp on this host: this very test process, for a minute
    with open("/proc/self/stat", "rb") as fh:
        started = fh.read().rsplit(b")", 1)[1].split()[19].decode()
    ioctx.write_full(obj, f"{socket.gethostname()} {os.getpid()} {started} "
                          f"{int(time.time()) + 60}".encode())
    try:
        proc = cp(lab_env, remotes, iid, str(path))
        assert proc.returncode == 1, proc.stderr
        assert f"is building one/one-{iid} right now" in last_line(proc.stderr)
        assert not {f"one-{iid}", f"one-{iid}.one-drivers-tmp"} & rbd_names(ioctx)
    finally:
        ioctx.remove_object(obj)
    proc = cp(lab_env, remotes, iid, str(path))  # positive control: alone, it imports
    assert proc.returncode == 0, proc.stderr
    assert read_image(ioctx, f"one-{iid}") == data


def test_racing_cps_of_one_image_leave_one_whole_image(lab_env, remotes, ceph_admin,
                                                        image_ids, sample):  # noqa: F811
    _, ioctx = ceph_admin
    path, data = sample
    for _ in range(3):
        iid = image_ids()
        with ThreadPoolExecutor(2) as pool:
            runs = [pool.submit(cp, lab_env, remotes, iid, str(path)) for _ in range(2)]
            results = [r.result() for r in runs]
        assert any(r.returncode == 0 for r in results), [r.stderr for r in results]
        for r in results:
            assert r.returncode == 0 or "is building" in r.stderr, r.stderr
        assert read_image(ioctx, f"one-{iid}") == data
        assert f"one-{iid}.one-drivers-tmp" not in rbd_names(ioctx)


def test_mkfs_killed_after_formatting_leaves_no_staging_file(lab_env, remotes, ceph_admin,
                                                             image_ids, tmp_path):  # noqa: F811
    _, ioctx = ceph_admin
    staging = tmp_path / "staging"
    staging.mkdir()
    iid = image_ids()
    doc = ds_doc(lab_env, iid, image={"SIZE": 16, "FS": "ext4"},
                 ds={"STAGING_DIR": str(staging)})
    killed = run_remote(remotes, "datastore/rbd/mkfs", [str(iid)], doc,
                        env={**os.environ, CRASH_AT: "mkfs:formatted"})
    assert killed.returncode == KILLED, killed.stderr
    assert list(staging.iterdir()) == [], "nothing left in the staging directory"
    done = run_remote(remotes, "datastore/rbd/mkfs", [str(iid)], doc)
    assert done.returncode == 0, done.stderr
    head = read_image(ioctx, f"one-{iid}")[1024 + 56:1024 + 58]
    assert head == b"\x53\xef", "an ext4 superblock"
    assert list(staging.iterdir()) == []
    subprocess.run(["true"], check=True)
