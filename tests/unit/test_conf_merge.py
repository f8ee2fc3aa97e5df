"""Merging our registration into an operator's oned.conf / monitord.conf."""

from __future__ import annotations

import os
import re

import pytest

from one_drivers.cli import main
from one_drivers.core.conf_merge import merge
from one_drivers.core.errors import BadInput
from one_drivers.core.oned_conf import registration

ONED = '''# an operator's oned.conf (trimmed)
PORT = 2633
DATASTORE_MAD = [
    EXECUTABLE = "one_datastore",
    ARGUMENTS  = "-t 15 -d dummy,fs,ceph -s shared,ssh,ceph"
]
TM_MAD = [
    EXECUTABLE = "one_tm",
    ARGUMENTS  = "-t 15 -d dummy,shared,ssh,ceph"
]
MARKET_MAD = [
    EXECUTABLE = "one_market",
    ARGUMENTS  = "-t 15 -m http,s3,one"
]
AUTH_MAD = [
    EXECUTABLE = "one_auth_mad",
    AUTHN = "ssh,x509,server_cipher"
]
IPAM_MAD = [
    EXECUTABLE = "one_ipam",
    ARGUMENTS  = "-t 1 -i dummy"
]
VNET_RESTRICTED_ATTR = "VN_MAD"
# TM_MAD_CONF = [ NAME = "rbd", LN_TARGET = "commented out: not a block" ]
TM_MAD_CONF = [
    NAME = "ceph", LN_TARGET = "NONE", CLONE_TARGET = "SELF", SHARED = "YES"
]
TM_MAD_CONF = [ NAME = "rbd", LN_TARGET = "SYSTEM" ]
VM_MAD = [
    NAME = "kvm", EXECUTABLE = "one_vmm_exec", ARGUMENTS = "-t 15 -r 0 kvm -p", TYPE = "kvm"
]
'''
MONITORD = '''NETWORK = [ ADDRESS = "0.0.0.0", PORT = 4124 ]
IM_MAD = [ NAME = "kvm", EXECUTABLE = "one_im_ssh", ARGUMENTS = "-r 3 -t 15 -w 90 kvm" ]
'''


def test_merge_adds_lists_and_blocks_and_keeps_the_rest():
    reg = registration()
    out = merge(ONED, reg, "oned.conf")
    assert 'ARGUMENTS  = "-t 15 -d dummy,fs,ceph,rbd,rbdbackup -s shared,ssh,ceph,rbd"' in out
    assert 'ARGUMENTS  = "-t 15 -d dummy,shared,ssh,ceph,rbd"' in out
    assert 'ARGUMENTS  = "-t 15 -m http,s3,one,rbd"' in out
    assert 'AUTHN = "ssh,x509,server_cipher,ldap,oidc"' in out, "an attribute's list, not ARGUMENTS"
    assert 'ARGUMENTS  = "-t 1 -i dummy,kea"' in out, "the IPAM MAD's -i list"
    # the kea IPAM's own AR attributes are oneadmin's only; the operator's restrictions stay
    assert 'VNET_RESTRICTED_ATTR = "AR/KEA_SUBNET_ID"\nVNET_RESTRICTED_ATTR = "AR/DNS_ZONE"' in out
    assert out.count('VNET_RESTRICTED_ATTR = "VN_MAD"') == 1
    assert "PORT = 2633" in out and 'NAME = "ceph", LN_TARGET = "NONE"' in out
    assert 'NAME = "kvm", EXECUTABLE = "one_vmm_exec"' in out, "the operator's kvm untouched"
    assert 'TM_MAD_CONF = [ NAME = "rbd", LN_TARGET = "SYSTEM" ]' not in out, "ours replaced"
    assert "# TM_MAD_CONF = [ NAME = \"rbd\", LN_TARGET = \"commented out" in out
    assert re.search(r'TM_MAD_CONF = \[\n    NAME\s+= "rbd",\n    LN_TARGET\s+= "NONE"', out)
    assert re.search(r'DS_MAD_CONF = \[\n    NAME\s+= "rbd"', out), "appended"
    rbd_tm = re.split(r'TM_MAD_CONF = \[\n    NAME\s+= "rbd",', out)[1].split("]")[0]
    # what the storage does: independent snapshots, no system-datastore migration
    for key, value in (("ALLOW_ORPHANS", "YES"), ("DS_MIGRATE", "NO"),
                       ("DS_LIVE_MIGRATE", "NO"), ("DS_MIGRATE_SNAP", "NO")):
        assert re.search(rf'\b{key}\s+= "{value}"', rbd_tm), (key, rbd_tm)
    assert 'VN_MAD_CONF = [\n    NAME        = "ovsdb"' in out
    assert 'NAME              = "libvirt"' in out and "-t 15 -r 0 libvirt -p" in out
    assert merge(out, reg, "oned.conf") == out, "a second run changes nothing"
    mon = merge(MONITORD, reg, "monitord.conf")
    assert 'ARGUMENTS  = "-r 3 -t 15 -w 90 libvirt"' in mon and 'NAME = "kvm"' in mon
    assert "DATASTORE_MAD" not in mon and merge(mon, reg, "monitord.conf") == mon


def test_a_file_that_is_not_oned_conf_is_refused():
    with pytest.raises(BadInput, match=r"DATASTORE_MAD = \[ \.\.\. \] is missing"):
        merge("PORT = 2633\n", registration(), "oned.conf")


def test_cli_merge_check_and_idempotence(tmp_path, capsys):
    oned = tmp_path / "oned.conf"
    oned.write_text(ONED)
    oned.chmod(0o640)
    assert main(["oned-conf", "--merge", str(oned), "--check"]) == 0
    assert "changed (check mode: nothing written)" in capsys.readouterr().out
    assert oned.read_text() == ONED
    assert main(["oned-conf", "--merge", str(oned)]) == 0
    assert f"{oned}: changed" in capsys.readouterr().out
    assert oct(oned.stat().st_mode & 0o777) == "0o640"
    assert main(["oned-conf", "--merge", str(oned)]) == 0
    assert f"{oned}: unchanged" in capsys.readouterr().out


def test_vmm_execrc_gets_the_live_disk_snapshot_pair():
    from one_drivers.core.conf_merge import merge

    rc = '# comment\nLIVE_DISK_SNAPSHOTS="kvm-qcow2 kvm-shared kvm-ceph"\nOTHER="x"\n'
    out = merge(rc, registration(), "vmm_execrc")
    assert 'LIVE_DISK_SNAPSHOTS="kvm-qcow2 kvm-shared kvm-ceph libvirt-rbd"' in out
    assert 'OTHER="x"' in out and "# comment" in out
    assert merge(out, registration(), "vmm_execrc") == out
    assert 'LIVE_DISK_SNAPSHOTS="libvirt-rbd"' in merge("", registration(), "vmm_execrc")


def test_the_registration_names_the_vmm_execrc_opennebula_reads(tmp_path, capsys):
    """one_vmm_exec reads /etc/one/vmm_exec/vmm_execrc ($ONE_LOCATION/etc/vmm_exec/ when
    self-contained), never <remotes>/etc/vmm/vmm_execrc: the hint and a merge use that path."""
    from one_drivers.cli import main
    from one_drivers.core.oned_conf import VMM_EXECRC

    assert VMM_EXECRC == "/etc/one/vmm_exec/vmm_execrc"
    assert main(["oned-conf"]) == 0
    text = capsys.readouterr().out
    assert "/etc/one/vmm_exec/vmm_execrc" in text and "$ONE_LOCATION/etc/vmm_exec/vmm_execrc" \
        in text and "remotes/etc/vmm/vmm_execrc" not in text
    rc = tmp_path / "etc" / "vmm_exec" / "vmm_execrc"  # a self-contained install's layout
    rc.parent.mkdir(parents=True)
    rc.write_text('LIVE_DISK_SNAPSHOTS="kvm-qcow2"\n')
    assert main(["oned-conf", "--merge", str(rc)]) == 0
    assert 'LIVE_DISK_SNAPSHOTS="kvm-qcow2 libvirt-rbd"' in rc.read_text()


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_a_merge_by_root_keeps_the_files_owner_group_and_mode(tmp_path):
    """A packaged OpenNebula's oned.conf is root:oneadmin 0640: merged by root (the role), it
    must stay readable by oneadmin's group, or oned cannot read its own configuration."""
    from one_drivers.core.conf_merge import merge_file

    tmp_path.chmod(0o755)
    etc = tmp_path / "etc"
    etc.mkdir(mode=0o755)
    conf = etc / "oned.conf"
    conf.write_text(ONED)
    os.chown(conf, 0, 4321)
    conf.chmod(0o640)
    assert merge_file(str(conf), registration())
    st = conf.stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (0, 4321, 0o640)
    assert "rbd" in conf.read_text()
