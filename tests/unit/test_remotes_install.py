import os
import subprocess
import sys

from one_drivers.core import oned_conf, registry
from one_drivers.core.config import parse_rc
from one_drivers.core.remotes import MARKER, install


def test_install_writes_a_shim_per_registered_action(tmp_path):
    report = install(tmp_path, python="/opt/one-drivers/bin/python3")
    expected = {tmp_path / d.family / d.name / a
                for d in registry.all_drivers() for a in d.actions}
    assert expected and expected <= set(report.written)
    shim = tmp_path / "datastore" / "rbd" / "monitor"
    text = shim.read_text()
    assert text.startswith("#!/opt/one-drivers/bin/python3 -I")  # -S when it can
    assert MARKER in text and "shim(__file__, 'datastore', 'rbd', 'monitor')" in text
    assert os.access(shim, os.X_OK)
    conf = tmp_path / "etc" / "datastore" / "rbd" / "rbd.conf"
    assert parse_rc(conf.read_text())["POOL_NAME"] == "one"


def test_install_is_idempotent_keeps_config_and_removes_only_its_stale_shims(tmp_path):
    install(tmp_path)
    conf = tmp_path / "etc" / "datastore" / "rbd" / "rbd.conf"
    conf.write_text("POOL_NAME=edited\n")
    ddir = tmp_path / "datastore" / "rbd"
    (ddir / "old_action").write_text(f"#!/usr/bin/python3 -I\n{MARKER}\n")
    (ddir / "operator_script").write_text("#!/bin/sh\necho mine\n")
    again = install(tmp_path)
    assert again.written == []
    assert again.removed == [ddir / "old_action"]
    assert (ddir / "operator_script").exists()
    assert conf.read_text() == "POOL_NAME=edited\n" and conf in again.kept_config
    assert not install(tmp_path).changed


def test_installed_shim_runs_with_this_interpreter(tmp_path):
    install(tmp_path, python=sys.executable)
    proc = subprocess.run([str(tmp_path / "datastore" / "rbd" / "monitor"), "5"], input=b"",
                          capture_output=True, timeout=30, check=False)
    assert proc.returncode == 3
    assert proc.stderr.decode().strip() == (
        "datastore 5: datastore/rbd/monitor stdin is empty; "
        "OpenNebula sends base64-encoded XML here")


def test_oned_conf_registers_every_driver():
    reg = oned_conf.registration()
    for drv in registry.all_drivers():
        if drv.family == "ipam":  # an IPAM driver has no block: it joins IPAM_MAD's -i list
            assert drv.name in reg["driver_lists"]["IPAM_MAD"]["drivers"]
            continue
        blocks = [b for b in reg["blocks"] if b["attrs"]["NAME"] == drv.name]
        assert blocks, drv
    ds = reg["driver_lists"]["DATASTORE_MAD"]
    assert "rbd" in ds["drivers"] and ds["option"] == "-d"
    text = oned_conf.render()
    assert 'DS_MAD_CONF = [\n    NAME                = "rbd"' in text
    assert 'MARKETPLACE_ACTIONS = "export"' in text
    assert "DATASTORE_MAD: add 'rbd,rbdbackup' to ARGUMENTS -d list" in text
    assert "IPAM_MAD: add 'kea' to ARGUMENTS -i list" in text
    assert 'VNET_RESTRICTED_ATTR = "<value>" lines for AR/KEA_SUBNET_ID AR/DNS_ZONE' in text
    assert '"drivers": [' in oned_conf.render_json()
    assert 'VN_MAD_CONF = [\n    NAME        = "ovsdb",\n    BRIDGE_TYPE = "openvswitch"' in text
    vm_mad = next(b["attrs"] for b in reg["blocks"] if b["section"] == "VM_MAD")
    assert vm_mad["NAME"] == "libvirt" and vm_mad["TYPE"] == "kvm"
    assert vm_mad["ARGUMENTS"] == "-t 15 -r 0 libvirt -p", "parallel: a cancel never waits"
    assert reg["vmm_execrc"] == {"LIVE_DISK_SNAPSHOTS": ["libvirt-rbd"]}


def test_install_makes_the_vnm_hook_directories_and_keeps_their_content(tmp_path):
    first = install(tmp_path)
    hooks = [tmp_path / "vnm" / "ovsdb" / d for d in ("pre.d", "post.d", "clean.d")]
    assert all(h.is_dir() for h in hooks) and all(h in first.written for h in hooks)
    (hooks[1] / "10-site").write_text("#!/bin/sh\n")
    again = install(tmp_path)
    assert (hooks[1] / "10-site").exists() and not any(h in again.written for h in hooks)
    assert (tmp_path / "im" / "libvirt.d" / "monitord-client_control.sh").exists()


def test_doctors_skip_choices_are_its_checks():
    from one_drivers.cli import DOCTOR_CHECKS
    from one_drivers.doctor import CHECKS

    assert sorted(DOCTOR_CHECKS) == sorted(CHECKS)
