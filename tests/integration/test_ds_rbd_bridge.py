"""BRIDGE_LIST mode: actions run on a bridge host over the lab's real sshd."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import ds_doc, last_line, rbd_names, read_image, run_remote

pytestmark = pytest.mark.lab

MIB = 1024 * 1024


@pytest.fixture
def bridge_env(lab_env, tmp_path):
    """An ssh config with the lab host and a bridge that does not answer."""
    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Include {lab_env['ONE_DRIVERS_SSH_CONFIG']}\n"  # first: not under a Host
                   "Host dead-bridge\n  HostName 127.0.0.1\n  Port 9\n  BatchMode yes\n"
                   "  ConnectTimeout 3\n")
    return {**os.environ, "ONE_DRIVERS_SSH_CONFIG": str(cfg)}


def ssh_sessions(lab_env) -> int:
    """Commands the lab's sshd has run (one per session, over a shared connection too)."""
    log = Path(lab_env["ONE_DRIVERS_SSH_CONFIG"]).parent / "sshd.log"
    return log.read_text(errors="replace").count("Starting session: command")


def test_actions_run_on_the_first_reachable_bridge(lab_env, remotes, ceph_admin, bridge_env,
                                                   tmp_path):
    import rbd

    _, ioctx = ceph_admin
    data = os.urandom(3 * MIB) + bytes(5 * MIB)
    src = tmp_path / "disk.raw"
    src.write_bytes(data)
    iid = 770_000_000 + os.getpid() % 100_000
    bridge = {"CEPH_ACCESS": "bridge", "BRIDGE_LIST": "dead-bridge one-lab-host",
              "SAFE_DIRS": "/tmp"}
    sessions = ssh_sessions(lab_env)
    try:
        # an even image id starts at the first bridge, the dead one
        doc = ds_doc(lab_env, iid * 2, image={"PATH": str(src)}, ds=bridge)
        proc = run_remote(remotes, "datastore/rbd/cp", [str(iid * 2)], doc, env=bridge_env)
        assert proc.returncode == 0, proc.stderr
        assert proc.stdout == f"one/one-{iid * 2} raw\n"
        assert "INFO: bridge dead-bridge is unreachable, trying the next one" in proc.stderr
        assert ssh_sessions(lab_env) > sessions  # it really went over ssh
        assert read_image(ioctx, f"one-{iid * 2}") == data  # the file travelled with the call

        mon = run_remote(remotes, "datastore/rbd/monitor", ["100"], ds_doc(lab_env, ds=bridge),
                         env=bridge_env)
        assert mon.returncode == 0 and mon.stdout.startswith("USED_MB="), mon.stderr

        missing = ds_doc(lab_env, iid * 2 + 1, image={"PATH": "http://127.0.0.1:9/x"}, ds=bridge)
        proc = run_remote(remotes, "datastore/rbd/cp", [str(iid * 2 + 1)], missing,
                          env=bridge_env)
        assert proc.returncode == 4  # the bridge's own exit code and line
        assert last_line(proc.stderr).startswith(f"image {iid * 2 + 1}: cannot download")

        rm = ds_doc(lab_env, iid * 2, image={"SOURCE": f"one/one-{iid * 2}"}, ds=bridge)
        assert run_remote(remotes, "datastore/rbd/rm", [str(iid * 2)], rm,
                          env=bridge_env).returncode == 0
        assert f"one-{iid * 2}" not in rbd_names(ioctx)
    finally:
        for name in (f"one-{iid * 2}",):
            if name in rbd_names(ioctx):
                rbd.RBD().remove(ioctx, name)


def test_no_reachable_bridge_and_no_bridge_list(lab_env, remotes, bridge_env):
    doc = ds_doc(lab_env, ds={"CEPH_ACCESS": "bridge", "BRIDGE_LIST": "dead-bridge"})
    proc = run_remote(remotes, "datastore/rbd/monitor", ["100"], doc, env=bridge_env)
    assert proc.returncode == 4
    assert last_line(proc.stderr) == (
        "datastore 100: no bridge host is reachable (dead-bridge); "
        "check BRIDGE_LIST and ssh from the front-end to those hosts")
    doc = ds_doc(lab_env, ds={"CEPH_ACCESS": "bridge"})
    proc = run_remote(remotes, "datastore/rbd/monitor", ["100"], doc, env=bridge_env)
    assert proc.returncode == 3 and "missing required attribute BRIDGE_LIST" in proc.stderr


def test_only_the_driver_configuration_chooses_the_bridge_program_and_a_stall_exits_4(
        lab_env, bridge_env, tmp_path):
    """The program ssh starts comes from the driver's configuration file, never from the
    datastore template; a bridge that stalls ends at the action's deadline with exit 4."""
    import sys

    from one_drivers.core.remotes import install

    hang = tmp_path / "hang.sh"
    marker = tmp_path / "ran"
    hang.write_text(f"#!/bin/sh\ntouch {marker}\nexec sleep 600\n")
    hang.chmod(0o755)
    remotes = tmp_path / "remotes"
    install(remotes, python=sys.executable)
    bridge = {"CEPH_ACCESS": "bridge", "BRIDGE_LIST": "one-lab-host", "BRIDGE_PYTHON": str(hang)}
    mon = run_remote(remotes, "datastore/rbd/monitor", ["100"], ds_doc(lab_env, ds=bridge),
                     env=bridge_env, timeout=120)
    assert mon.returncode == 0 and mon.stdout.startswith("USED_MB="), mon.stderr
    assert not marker.exists(), "the template's BRIDGE_PYTHON was not run"
    conf = remotes / "etc" / "datastore" / "rbd" / "rbd.conf"
    conf.write_text(conf.read_text() + f"\nBRIDGE_PYTHON={hang}\nMONITOR_TIMEOUT=4\n")
    stalled = run_remote(remotes, "datastore/rbd/monitor", ["100"],
                         ds_doc(lab_env, ds={**bridge, "BRIDGE_PYTHON": ""}), env=bridge_env,
                         timeout=120)
    assert marker.exists(), "positive control: the configuration's program did run"
    assert stalled.returncode == 4, stalled.stderr
    assert "did not finish within 4 s" in last_line(stalled.stderr)


def test_a_granted_rbd_source_imports_through_a_bridge_for_a_tenant(lab_env, remotes, ceph_admin,
                                                                    bridge_env, tmp_path):
    """A restore to new images into a BRIDGE_LIST datastore: the grant is checked on the
    front-end (the key is its own: the bridge here has another) and the bridge reads that one
    source; without the grant the tenant is refused there (the control)."""
    import rbd

    from one_drivers.ceph import grants

    _, ioctx = ceph_admin
    src = f"grant-src-{os.getpid()}"
    rbd.RBD().create(ioctx, src, MIB)
    with rbd.Image(ioctx, src) as image:
        image.write(b"granted data", 0)
        image.create_snap("1")
    env = {**bridge_env, "ONE_DRIVERS_GRANT_KEY": str(tmp_path / "fe-grant.key")}
    url = f"rbd://backup/one/{src}@1"
    bridge = {"CEPH_ACCESS": "bridge", "BRIDGE_LIST": lab_env["ONE_LAB_SSH_HOST"]}
    made = []
    try:
        for grant in (None, "yes"):
            iid = 780_000_000 + os.getpid() % 100_000 + len(made)
            made.append(iid)
            template = {"RBD_SOURCE_GRANT": grants.grant(url, f"img{iid}")} if grant else None
            if grant:  # the grant is minted with the front-end's key
                os.environ["ONE_DRIVERS_GRANT_KEY"] = env["ONE_DRIVERS_GRANT_KEY"]
                template = {"RBD_SOURCE_GRANT": grants.grant(url, f"img{iid}")}
                del os.environ["ONE_DRIVERS_GRANT_KEY"]
            doc = ds_doc(lab_env, iid, image={"PATH": url, "UID": 7, "GID": 100},
                         image_template=template, ds=bridge)
            proc = run_remote(remotes, "datastore/rbd/cp", [str(iid)], doc, env=env)
            if grant:
                assert proc.returncode == 0, proc.stderr
                assert read_image(ioctx, f"one-{iid}")[:12] == b"granted data"
            else:
                assert proc.returncode == 5 and "only the oneadmin group" in proc.stderr
    finally:
        for iid in made:
            run_remote(remotes, "datastore/rbd/rm", [str(iid)],
                       ds_doc(lab_env, iid, image={"SOURCE": f"one/one-{iid}"}))
        with rbd.Image(ioctx, src) as image:
            image.remove_snap("1")
        rbd.RBD().remove(ioctx, src)
