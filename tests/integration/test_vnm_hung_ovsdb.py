"""A hung ovsdb-server (SIGSTOP: the socket accepts, nothing answers) costs a VNM action its
OVSDB_TIMEOUT, not forever; a stopped one (no socket) fails at once. Each with the positive
control that the same action works against the same server once it answers."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from one_drivers.core.remotes import install
from one_drivers.lab.documents import vm_doc
from tests.helpers import last_line

pytestmark = pytest.mark.lab


def _doc(vm: int, bridge: str) -> bytes:
    nic = {"NIC_ID": 0, "NETWORK_ID": 3, "VN_MAD": "ovsdb", "BRIDGE": bridge, "VLAN_ID": 12,
           "MAC": "02:00:00:00:12:01", "IP": "10.12.0.1", "TARGET": f"one-{vm}-0"}
    return base64.b64encode(vm_doc(vm, [], nics=[nic]).encode())


def _run(remotes: Path, action: str, doc: bytes, *argv: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([str(remotes / "vnm" / "ovsdb" / action), *argv], input=doc,
                          capture_output=True, timeout=120, check=False)
    return subprocess.CompletedProcess(proc.args, proc.returncode, proc.stdout.decode(),
                                       proc.stderr.decode())


def test_a_hung_ovsdb_server_ends_the_action_at_its_timeout(lab_env, tmp_path):
    remotes = tmp_path / "remotes"
    install(remotes, python=sys.executable)
    conf = remotes / "etc" / "vnm" / "ovsdb" / "ovsdb.conf"
    conf.write_text(conf.read_text() + "\nOVSDB_TIMEOUT=2\nACTION_TIMEOUT=60\n")
    rundir = Path(lab_env["ONE_DRIVERS_OVSDB"].removeprefix("unix:")).parent
    pid = int((rundir / "ovsdb-server.pid").read_text().split()[0])
    vm, bridge = 9900 + int(uuid.uuid4().hex[:2], 16), f"hg{uuid.uuid4().hex[:8]}"
    doc = _doc(vm, bridge)
    os.kill(pid, signal.SIGSTOP)
    try:
        hung = _run(remotes, "pre", doc)
    finally:
        os.kill(pid, signal.SIGCONT)
    assert hung.returncode == 4, hung.stderr
    assert "did not answer within 2 s" in last_line(hung.stderr)
    ok = _run(remotes, "pre", doc)  # positive control: the same server, answering
    assert ok.returncode == 0, ok.stderr
    assert _run(remotes, "clean", doc, "node1").returncode == 0
    subprocess.run(["ovs-vsctl", "--if-exists", "del-br", bridge], check=False, timeout=20)


def test_a_stopped_ovsdb_server_fails_at_once(lab_env, tmp_path):
    remotes = tmp_path / "remotes"
    install(remotes, python=sys.executable)
    conf = remotes / "etc" / "vnm" / "ovsdb" / "ovsdb.conf"
    conf.write_text(conf.read_text() + f"\nOVSDB=unix:{tmp_path}/gone.sock\n")
    res = _run(remotes, "pre", _doc(9990, "gonebr"))
    assert res.returncode == 4, res.stderr
    assert "cannot reach OVSDB" in last_line(res.stderr)
