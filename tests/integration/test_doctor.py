"""``one-drivers doctor`` on the lab: each check passes on a node set up right and names the
cause, with its fix, when one piece is broken on purpose (the broken piece is the positive
control of the "all good" line)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

ONE_DRIVERS = str(Path(sys.executable).parent / "one-drivers")


def doctor(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([ONE_DRIVERS, "doctor", *argv], capture_output=True, text=True,
                          timeout=120, check=False, env={**os.environ, **(env or {})})


def _remotes(tmp_path: Path, lab_env: dict[str, str], **vmm: str) -> Path:
    from one_drivers.core.remotes import install

    remotes = tmp_path / "remotes"
    install(remotes)
    settings = {"vmm/libvirt/libvirt.conf": {"LIBVIRT_URI": lab_env["LIBVIRT_DEFAULT_URI"],
                                             **vmm},
                "vnm/ovsdb/ovsdb.conf": {"OVSDB": lab_env["ONE_DRIVERS_OVSDB"]}}
    for rel, values in settings.items():
        conf = remotes / "etc" / rel
        conf.write_text(conf.read_text() + "".join(f"\n{k}={v}" for k, v in values.items())
                        + "\n")
    return remotes


def test_a_host(lab_env, tmp_path):
    qemu = shutil.which("qemu-system-x86_64") or "/usr/bin/qemu-system-x86_64"
    remotes = _remotes(tmp_path, lab_env, EMULATOR=qemu)
    ok = doctor("--role", "host", "--remotes", str(remotes))
    assert ok.returncode == 0 and "all good (remotes, libvirt, ovs)" in ok.stdout, ok.stdout
    # broken on purpose, one at a time
    (remotes / "vmm" / "libvirt" / "deploy").unlink()
    res = doctor("--role", "host", "--remotes", str(remotes))
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        f"remotes: 1 driver shims missing or not this package's (e.g. vmm/libvirt/deploy) -- "
        f"run one-drivers install-remotes {remotes} on the front-end, then onehost sync"]
    remotes = _remotes(tmp_path / "2", lab_env, EMULATOR="/nonexistent/qemu-kvm-one")
    res = doctor("--role", "host", "--remotes", str(remotes))
    assert res.returncode == 1 and res.stdout.startswith(
        "emulator: /nonexistent/qemu-kvm-one (the emulator oned writes into deployment files) "
        "is missing -- run the libvirt_host role"), res.stdout
    conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + f"\nLIBVIRT_URI=qemu:///system?socket={tmp_path}/none\n")
    res = doctor("--role", "host", "--remotes", str(remotes), "--skip", "ovs")
    assert res.returncode == 1
    assert any(line.startswith(f"libvirt: qemu:///system?socket={tmp_path}/none:")
               for line in res.stdout.splitlines()), res.stdout
    conf = remotes / "etc" / "vnm" / "ovsdb" / "ovsdb.conf"
    conf.write_text(conf.read_text() + f"\nOVSDB=unix:{tmp_path}/no-db.sock\n")
    res = doctor("--role", "host", "--remotes", str(remotes), "--skip", "libvirt",
                 "--timeout", "3")
    assert res.returncode == 1 and any(line.startswith("ovsdb: ") and "start Open vSwitch" in line
                                       for line in res.stdout.splitlines()), res.stdout


def test_a_front_end_registration(lab_env, tmp_path):
    from one_drivers.core.remotes import install

    etc = tmp_path / "one" / "etc"
    (etc / "vmm_exec").mkdir(parents=True)
    from tests.unit.test_conf_merge import MONITORD, ONED  # as OpenNebula ships them, trimmed

    (etc / "oned.conf").write_text(ONED)
    (etc / "monitord.conf").write_text(MONITORD)
    (etc / "vmm_exec" / "vmm_execrc").write_text('LIVE_DISK_SNAPSHOTS="kvm-qcow2"\n')
    remotes = tmp_path / "one" / "var" / "remotes"
    install(remotes)
    env = {"ONE_LOCATION": str(tmp_path / "one")}
    res = doctor("--role", "frontend", "--skip", "oned", env=env)
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        f"registration: {etc / name} lacks the one-drivers registration -- run one-drivers "
        f"oned-conf --merge {etc / name}, then restart oned"
        for name in ("oned.conf", "monitord.conf", "vmm_exec/vmm_execrc")]
    subprocess.run([ONE_DRIVERS, "oned-conf", "--merge", str(etc / "oned.conf"),
                    str(etc / "monitord.conf"), str(etc / "vmm_exec" / "vmm_execrc")],
                   check=True, capture_output=True, timeout=60)
    ok = doctor("--role", "frontend", "--skip", "oned", env=env)
    assert ok.returncode == 0 and "all good (remotes, registration, ipam)" in ok.stdout, \
        ok.stdout


def test_doctor_as_root_is_not_steered_by_the_users_remotes(lab_env, tmp_path):
    """The remotes tree is oneadmin's: run as root, doctor reads only settings root alone can
    change. A LIBVIRT_URI planted there with qemu+ext (libvirt runs its command) does not run;
    positive control: the same file owned by root is read, and its command does run."""
    marker = tmp_path / "ran"
    script = tmp_path / "plant"
    script.write_text(f"#!/bin/sh\nid -u >> {marker}\n")
    script.chmod(0o755)
    remotes = _remotes(tmp_path, lab_env)
    conf = remotes / "etc" / "vmm" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + f"\nLIBVIRT_URI=qemu+ext:///system?command={script}\n")
    os.chown(conf, 65534, 65534)  # the driver user's file, as onehost sync leaves it
    doctor("--role", "host", "--remotes", str(remotes), "--skip", "ovs", "--timeout", "5")
    assert not marker.exists(), "root ran a command the user's configuration chose"
    os.chown(conf, 0, 0)
    doctor("--role", "host", "--remotes", str(remotes), "--skip", "ovs", "--timeout", "5")
    assert marker.exists(), "positive control: root's own file is read and would run it"


def test_doctor_says_where_each_side_reaches_ceph_and_checks_it_there(lab_env, tmp_path,
                                                                       monkeypatch):
    """CEPH_ACCESS/TM_CEPH_ACCESS: the Ceph check runs over ssh on the bridges and hosts the
    actions would run on, with the datastore's own access; a dead bridge and a denied user
    are named."""
    from one_drivers.core.config import Settings
    from one_drivers.doctor import Node, Note, Problem, _ceph_from_everywhere, ceph_places
    from one_drivers.lab.documents import lab_ds_template

    cfg = tmp_path / "ssh_config"
    cfg.write_text(f"Include {lab_env['ONE_DRIVERS_SSH_CONFIG']}\n"
                   "Host dead-bridge\n  HostName 127.0.0.1\n  Port 9\n  ConnectTimeout 3\n")
    monkeypatch.setenv("ONE_DRIVERS_SSH_CONFIG", str(cfg))
    host = lab_env["ONE_LAB_SSH_HOST"]
    node = Node("frontend", tmp_path, tmp_path, 20, frozenset())
    template = {**lab_ds_template(lab_env), "CEPH_ACCESS": "bridge", "TM_CEPH_ACCESS": "host",
                "BRIDGE_LIST": f"{host} dead-bridge"}
    settings = Settings([template])
    places = ceph_places(True, True, settings)
    assert places == {"DS actions": ("the bridges", [host, "dead-bridge"]),
                      "TM actions": ("the VM's host", [host, "dead-bridge"])}
    found = list(_ceph_from_everywhere(node, "datastore 1 (ceph)", places, [host], settings))
    assert Note("datastore 1 (ceph)", f"DS actions reach Ceph from the bridges ({host}, "
                                      "dead-bridge)") in found
    assert Note("datastore 1 (ceph)", f"TM actions reach Ceph from the VM's host ({host})"
                ) in found
    assert Note("datastore 1 (ceph)", f"Ceph answers on {host}") in found
    problems = [f for f in found if isinstance(f, Problem)]
    assert [p.where for p in problems] == ["datastore 1 (ceph) on dead-bridge"], found

    denied = Settings([{**template, "CEPH_USER": "nobody-here"}])
    found = list(_ceph_from_everywhere(node, "ds", {"TM actions": ("the VM's host", [])},
                                       [host], denied))
    (problem,) = [f for f in found if isinstance(f, Problem)]
    assert problem.where == f"ds on {host}" and "client.nobody-here" in problem.what, found


def test_doctor_names_an_rbd_format_it_cannot_honour(lab_env, tmp_path):
    from one_drivers.core.config import Settings
    from one_drivers.doctor import Node, Problem, _datastore
    from one_drivers.lab.documents import lab_ds_template

    node = Node("frontend", tmp_path, tmp_path, 20, frozenset())
    template = {**lab_ds_template(lab_env), "CEPH_SECRET": "x"}
    for fmt, named in (("1", True), ("2", False)):  # format 2 is the positive control
        found = list(_datastore(node, "ds", "0", {**template, "RBD_FORMAT": fmt},
                                Settings([template])))
        assert [p.what.split(":")[0] for p in found if isinstance(p, Problem)] == (
            [f"RBD_FORMAT={fmt}"] if named else []), found


def test_the_kea_ipams_services_once_configured(lab_env, tmp_path):
    """Unconfigured (the defaults): nothing is checked. Configured for the lab: Kea's agent and
    PowerDNS answer and serve the zones. A closed agent port, a zone PowerDNS lacks: named."""
    from tests import ipam

    etc = tmp_path / "etc"  # no OpenNebula here: only the IPAM check runs
    env = {"ONE_LOCATION": str(tmp_path)}
    remotes = tmp_path / "remotes"
    skip = ("--skip", "registration", "--skip", "oned", "--remotes")
    from one_drivers.core.remotes import install

    install(remotes)
    etc.mkdir()
    unconfigured = doctor("--role", "frontend", *skip, str(remotes), env=env)
    assert unconfigured.returncode == 0, unconfigured.stdout
    good = ipam.install(tmp_path / "lab", lab_env)
    ok = doctor("--role", "frontend", *skip, str(good), env=env)
    assert ok.returncode == 0 and "all good (remotes, ipam)" in ok.stdout, ok.stdout
    closed = ipam.install(tmp_path / "closed", lab_env, KEA_URL="http://127.0.0.1:9/")
    res = doctor("--role", "frontend", *skip, str(closed), env=env)
    assert res.returncode == 1
    assert res.stdout.splitlines() == [
        "kea: cannot reach Kea at http://127.0.0.1:9/ (Connection refused) -- start "
        "kea-ctrl-agent and kea-dhcp4, or fix KEA_URL / KEA_CREDENTIALS in ipam/kea/kea.conf"]
    skipped = doctor("--role", "frontend", *skip[:-1], "--skip", "ipam", "--remotes",
                     str(closed), env=env)
    assert skipped.returncode == 0 and "all good (remotes)" in skipped.stdout, skipped.stderr
    zone = ipam.install(tmp_path / "zone", lab_env, DNS_ZONES="lab.one. nowhere.example.")
    res = doctor("--role", "frontend", *skip, str(zone), env=env)
    assert res.returncode == 1 and "powerdns: PowerDNS serves no zone nowhere.example." in \
        res.stdout, res.stdout
