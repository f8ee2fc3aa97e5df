"""When a VNM action re-runs itself under sudo (pure decisions; the real run is in Molecule)."""

from __future__ import annotations

import sys

from one_drivers.vnm.ovsdb.privilege import needs_privilege, sudo_argv


def test_only_a_non_root_user_facing_a_root_socket_escalates(tmp_path):
    sock = tmp_path / "db.sock"
    sock.write_text("")
    sock.chmod(0o400)
    assert needs_privilege(f"unix:{sock}", euid=0) is False, "root needs nothing"
    assert needs_privilege("tcp:127.0.0.1:6640", euid=1000) is False, "TCP: no socket file"
    assert needs_privilege(f"unix:{tmp_path}/missing.sock", euid=1000) is False, \
        "no socket: the action reports OVSDB unreachable itself"


def test_the_privileged_command_is_the_same_action_through_the_package():
    argv = sudo_argv("/var/tmp/one", "post", ["uuid-1", "node1"])
    assert argv == ["sudo", "-n", sys.executable, "-m", "one_drivers.vnm.ovsdb.privileged",
                    "/var/tmp/one", "post", "uuid-1", "node1"]
