"""Install the remotes into a temporary tree and run them as OpenNebula's MADs do: the shim path,
positional argv, base64 stdin; check exit code, stdout and stderr."""

import base64
import subprocess
import sys

import pytest

from one_drivers.core.remotes import install
from one_drivers.demo import datastore_xml


@pytest.fixture(scope="module")
def remotes(tmp_path_factory):
    dest = tmp_path_factory.mktemp("remotes")
    install(dest, python=sys.executable)
    return dest


def invoke(remotes, path, argv, stdin: bytes, env=None):
    return subprocess.run([str(remotes / path), *argv], input=stdin, capture_output=True,
                          timeout=60, check=False, env=env)


BAD_INPUTS = [
    ("not base64", b"<DS_DRIVER_ACTION_DATA/>", 3, "stdin is not valid base64"),
    ("not XML", base64.b64encode(b"USED_MB=1"), 3, "stdin is not well-formed XML"),
    ("wrong root", base64.b64encode(b"<VM><ID>1</ID></VM>"), 3,
     "has root element <VM>, expected <DS_DRIVER_ACTION_DATA>"),
    ("missing DATASTORE", base64.b64encode(b"<DS_DRIVER_ACTION_DATA/>"), 3,
     "missing required attribute DS_DRIVER_ACTION_DATA/DATASTORE"),
    ("empty stdin", b"", 3, "stdin is empty"),
]


@pytest.mark.parametrize(("label", "stdin", "code", "message"), BAD_INPUTS,
                         ids=[b[0] for b in BAD_INPUTS])
def test_bad_stdin_is_one_plain_line(remotes, label, stdin, code, message):
    proc = invoke(remotes, "datastore/rbd/monitor", ["100"], stdin)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert proc.stdout == b""
    assert len(err.strip().splitlines()) == 1, err
    assert err.startswith("datastore 100: ")
    assert message in err
    assert "Traceback" not in err


def test_wrong_argument_count_and_unknown_action(remotes):
    proc = invoke(remotes, "datastore/rbd/monitor", [], b"")
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (
        "datastore/rbd/monitor expects arguments ID, got 0; "
        "check the driver name and the oned.conf registration")
    proc = subprocess.run([sys.executable, "-m", "one_drivers", "datastore", "rbd", "nosuch",
                           "1"], input=b"", capture_output=True, timeout=60, check=False)
    assert proc.returncode == 2
    assert proc.stderr.decode().strip() == (
        "driver datastore/rbd has no action 'nosuch'; it implements: clone, cp, export, "
        "mkfs, monitor, rm, snap_delete, snap_flatten, snap_revert, stat")


@pytest.mark.lab
def test_monitor_as_the_ds_mad_runs_it(remotes, lab_env):
    doc = base64.b64encode(datastore_xml(100, lab_env).encode())
    proc = invoke(remotes, "datastore/rbd/monitor", ["100"], doc)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.decode().splitlines()
    assert [ln.split("=")[0] for ln in lines] == ["USED_MB", "TOTAL_MB", "FREE_MB"]
    used, total, free = (int(ln.split("=")[1]) for ln in lines)
    assert total == used + free and total > 0
    assert proc.stderr == b""


@pytest.mark.parametrize(
    ("action", "argv", "stdin", "code", "message"),
    [
        ("premigrate", ["n1", "n2", "/var/lib/one/datastores/0/42", "42", "0"], b"<VM/>", 3,
         "VM 42: tm/rbd/premigrate stdin is not valid base64"),
        ("premigrate", ["n1", "n2", "/var/lib/one/datastores/0/42", "42", "0"],
         base64.b64encode(b"<IMAGE/>"), 3, "has root element <IMAGE>, expected <VM>"),
        ("clone", ["fe:one/one-7", "n1:/d/0/42/disk.0", "42"], b"", 2,
         "tm/rbd/clone expects arguments SRC DST VMID DSID, got 3"),
        ("clone", ["one/one-7", "n1:/d/0/42/disk.0", "42", "100"], b"", 3,
         "argument SRC is 'one/one-7', expected HOST:PATH"),
        ("mkimage", ["big", "raw", "n1:/d/0/42/disk.1", "42", "0"], b"", 3,
         "argument SIZE_MB is 'big', expected an integer"),
    ],
)
def test_tm_bad_input_is_one_plain_line(remotes, action, argv, stdin, code, message):
    proc = invoke(remotes, f"tm/rbd/{action}", argv, stdin)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and message in err
    assert "Traceback" not in err


def _vm_b64(**nic: object) -> bytes:
    from one_drivers.lab.documents import vm_doc

    attrs = {"NIC_ID": 0, "VN_MAD": "ovsdb", "BRIDGE": "br-conf", "MAC": "02:00:00:00:00:01",
             **nic}
    return base64.b64encode(vm_doc(42, [], nics=[attrs]).encode())


@pytest.mark.parametrize(
    ("action", "argv", "stdin", "env", "code", "message"),
    [
        ("post", ["uuid", "n1"], b"<VM/>", {}, 3, "VM: vnm/ovsdb/post stdin is not valid base64"),
        ("clean", ["n1"], base64.b64encode(b"<VNET/>"), {}, 3,
         "has root element <VNET>, expected <VM>"),
        ("pre", [], _vm_b64(VLAN_ID="4095"), {}, 3,
         "VM 42: NIC 0: VLAN_ID=4095 is out of range (1-4094)"),
        ("pre", [], _vm_b64(MTU="9000"), {"ONE_DRIVERS_OVSDB": "unix:/nonexistent/db.sock"}, 4,
         "VM 42: cannot reach OVSDB at unix:/nonexistent/db.sock"),
        ("update_nic", ["uuid"], _vm_b64(), {}, 2,
         "vnm/ovsdb/update_nic expects arguments DEPLOY_ID VN_ID, got 1"),
        ("vnet_create", ["4"], base64.b64encode(
            b"<VNET><ID>4</ID><TEMPLATE><VLAN_TAGGED_ID>9-2</VLAN_TAGGED_ID></TEMPLATE></VNET>"),
         {}, 3, "virtual network 4: network VLAN_TAGGED_ID: range '9-2' runs backwards"),
    ],
)
def test_vnm_bad_input_is_one_plain_line(remotes, action, argv, stdin, env, code, message):
    import os

    proc = invoke(remotes, f"vnm/ovsdb/{action}", argv, stdin, env={**os.environ, **env})
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err


def test_vnm_network_actions_accept_a_valid_network(remotes):
    doc = base64.b64encode(b"<VNET><ID>4</ID><VLAN_ID>12</VLAN_ID><TEMPLATE><MTU>9000</MTU>"
                           b"<CVLANS>10-20</CVLANS></TEMPLATE></VNET>")
    for action in ("vnet_create", "vnet_delete"):
        proc = invoke(remotes, f"vnm/ovsdb/{action}", ["4"], doc)
        assert proc.returncode == 0 and proc.stdout == b"", proc.stderr


@pytest.mark.parametrize(
    ("action", "argv", "stdin", "code", "message"),
    [
        ("deploy", ["/d/0/42/deployment.0", "n1", "42", "n1"], b"<vm/>", 3,
         "VM 42: vmm/libvirt/deploy stdin has root element <vm>, expected <domain>"),
        ("shutdown", ["uuid", "n1", "42"], b"<VMM_DRIVER_ACTION_DATA/>", 2,
         "vmm/libvirt/shutdown expects arguments DEPLOY_ID HOST VMID HOST, got 3"),
        ("cancel", ["uuid", "n1", "42", "n1"], b"<DS_DRIVER_ACTION_DATA/>", 3,
         "has root element <DS_DRIVER_ACTION_DATA>, expected <VMM_DRIVER_ACTION_DATA>"),
        ("attach_disk", ["uuid", "/d/0/42/disk.1", "vdb", "one", "bXNn", "42", "n1"],
         b"<VMM_DRIVER_ACTION_DATA/>", 3, "argument TARGET_INDEX is 'one', expected an integer"),
    ],
)
def test_vmm_bad_input_is_one_plain_line(remotes, action, argv, stdin, code, message):
    proc = invoke(remotes, f"vmm/libvirt/{action}", argv, stdin)
    err = proc.stderr.decode()
    assert proc.returncode == code, err
    assert len(err.strip().splitlines()) == 1 and message in err, err
    assert "Traceback" not in err
