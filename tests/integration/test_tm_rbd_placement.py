"""TM actions with a front-end that is not a Ceph client: run on the VM's host (or a bridge)
over the lab's real sshd, with the documents oned gave the front-end sent along.

The front-end's side runs with ``ONE_DRIVERS_CRASH_AT=ceph:connect``: had it opened librados it
would have died (exit 137); the positive control shows exactly that with CEPH_ACCESS=local. The
variable does not travel over ssh (only what the driver passes does)."""

from __future__ import annotations

import itertools
import os
import random

import pytest

from one_drivers.core.faults import CRASH_AT, KILLED
from one_drivers.lab.documents import datastore_doc, ds_doc
from one_drivers.lab.lab import Lab
from tests.helpers import rbd_names, read_image, run_remote
from tests.integration.test_ds_rbd_bridge import ssh_sessions
from tests.integration.test_tm_rbd_lifecycle import IMAGE_DS, record_vm, run_transfer

pytestmark = pytest.mark.lab

MIB = 1024 * 1024
HOST_DS, BRIDGE_DS, LOCAL_DS = 111, 112, 113
_ids = itertools.count(random.randint(10_000, 90_000) * 10 + 7)


@pytest.fixture
def image(lab_env, remotes, tmp_path):
    oned = Lab().oned
    oned.record("datastore", IMAGE_DS, datastore_doc(lab_env, IMAGE_DS))
    oned.record("datastore", HOST_DS, datastore_doc(lab_env, HOST_DS, system=True,
                                                    CEPH_ACCESS="host"))
    oned.record("datastore", BRIDGE_DS, datastore_doc(
        lab_env, BRIDGE_DS, system=True, CEPH_ACCESS="local", TM_CEPH_ACCESS="bridge",
        BRIDGE_LIST=f"dead-bridge {lab_env['ONE_LAB_SSH_HOST']}"))
    oned.record("datastore", LOCAL_DS, datastore_doc(lab_env, LOCAL_DS, system=True))
    iid = next(_ids)
    data = os.urandom(MIB) + bytes(3 * MIB)
    src = tmp_path / "disk.raw"
    src.write_bytes(data)
    doc = ds_doc(lab_env, iid, image={"PATH": str(src)}, ds={"SAFE_DIRS": "/tmp"})
    assert run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc).returncode == 0
    yield {"oned": oned, "image": iid, "persistent": iid, "data": data, "env": lab_env}
    run_remote(remotes, "datastore/rbd/rm", [str(iid)],
               ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid}"}))


def no_ceph_here(lab_env, tmp_path):
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Include {lab_env['ONE_DRIVERS_SSH_CONFIG']}\n"
                   "Host dead-bridge\n  HostName 127.0.0.1\n  Port 9\n  BatchMode yes\n"
                   "  ConnectTimeout 3\n")
    return {**os.environ, CRASH_AT: "ceph:connect", "ONE_DRIVERS_SSH_CONFIG": str(cfg)}


def test_tm_actions_run_on_the_vms_host_and_never_touch_ceph_here(image, remotes, ceph_admin,
                                                                   tmp_path, lab_env):
    _, ioctx = ceph_admin
    vmid = next(_ids)
    host = lab_env["ONE_LAB_SSH_HOST"]
    vm_dir = f"/var/lib/one/datastores/{HOST_DS}/{vmid}"
    record_vm(image, vmid, host)
    env = no_ceph_here(lab_env, tmp_path)
    sessions = ssh_sessions(lab_env)
    clone = f"CLONE rbd fe:one/one-{image['image']} {host}:{vm_dir}/disk.0 {vmid} {HOST_DS}"
    try:
        prolog = run_transfer(remotes, tmp_path, [
            clone,
            f"MKIMAGE rbd 32 raw {host}:{vm_dir}/disk.1 {vmid} {HOST_DS}",
            f"SNAP_CREATE rbd {host}:{vm_dir}/disk.0 0 {vmid} {HOST_DS}",
            f"SNAP_DELETE rbd {host}:{vm_dir}/disk.0 0 {vmid} {HOST_DS}",
        ], env=env)
        assert prolog.returncode == 0, prolog.stdout + prolog.stderr
        assert f"INFO: running clone on {host} (CEPH_ACCESS=host)" in prolog.stdout + prolog.stderr
        assert ssh_sessions(lab_env) - sessions == 4  # one ssh session per action
        clone_name = f"one-{image['image']}-{vmid}-0"
        assert read_image(ioctx, clone_name)[:4 * MIB] == image["data"]
        assert f"one-sys-{vmid}-1" in rbd_names(ioctx)

        again = run_transfer(remotes, tmp_path, [clone], env=env)  # a retry converges
        assert again.returncode == 0, again.stdout + again.stderr

        epilog = run_transfer(remotes, tmp_path, [
            f"DELETE rbd {host}:{vm_dir}/disk.0 {vmid} {HOST_DS}",
            f"DELETE rbd {host}:{vm_dir}/disk.1 {vmid} {HOST_DS}",
            f"DELETE rbd {host}:{vm_dir} {vmid} {HOST_DS}",
        ], env=env)
        assert epilog.returncode == 0, epilog.stdout + epilog.stderr
        assert not {clone_name, f"one-sys-{vmid}-1"} & rbd_names(ioctx)
    finally:
        run_transfer(remotes, tmp_path, [f"DELETE rbd {host}:{vm_dir}/disk.{i} {vmid} {HOST_DS}"
                                         for i in (0, 1)])

    # positive control: the same clone with the front-end as the Ceph client dies at once
    local = run_transfer(remotes, tmp_path, [
        f"CLONE rbd fe:one/one-{image['image']} {host}:{vm_dir}/disk.0 {vmid} {LOCAL_DS}",
    ], env=env)
    assert local.returncode != 0 and f"[exit {KILLED}," in local.stdout, (
        local.stdout + local.stderr)
    assert f"one-{image['image']}-{vmid}-0" not in rbd_names(ioctx)


def test_bridge_mode_skips_an_unreachable_bridge_and_an_undeployed_vm_uses_one(
        image, remotes, ceph_admin, tmp_path, lab_env):
    _, ioctx = ceph_admin
    vmid = next(_ids) * 2  # an even VM id starts at the first bridge, the dead one
    record_vm(image, vmid, "fe")
    env = no_ceph_here(lab_env, tmp_path)
    vm_dir = f"/var/lib/one/datastores/{BRIDGE_DS}/{vmid}"
    try:
        made = run_transfer(remotes, tmp_path, [
            f"MKIMAGE rbd 16 raw localhost:{vm_dir}/disk.1 {vmid} {BRIDGE_DS}",
        ], env=env)
        assert made.returncode == 0, made.stdout + made.stderr
        assert "dead-bridge is unreachable over ssh" in made.stdout + made.stderr
        assert f"one-sys-{vmid}-1" in rbd_names(ioctx)
    finally:
        gone = run_transfer(remotes, tmp_path, [
            f"DELETE rbd localhost:{vm_dir}/disk.1 {vmid} {BRIDGE_DS}"], env=env)
        assert gone.returncode == 0, gone.stdout + gone.stderr
    assert f"one-sys-{vmid}-1" not in rbd_names(ioctx)
