"""When a VNM action re-runs itself under sudo (pure decisions; the real run through sudo is in
tests/integration/test_vnm_privilege.py and Molecule)."""

from __future__ import annotations

import os
import sys

from one_drivers.vnm.ovsdb.privilege import (
    default_entry,
    entry_text,
    needs_privilege,
    sudo_argv,
    sudoers_text,
)


def test_only_a_non_root_user_facing_a_root_socket_escalates(tmp_path):
    sock = tmp_path / "db.sock"
    sock.write_text("")
    sock.chmod(0o400)
    assert needs_privilege(f"unix:{sock}", euid=0) is False, "root needs nothing"
    assert needs_privilege("tcp:127.0.0.1:6640", euid=1000) is False, "TCP: no socket file"
    assert needs_privilege(f"unix:{tmp_path}/missing.sock", euid=1000) is False, \
        "no socket: the action reports OVSDB unreachable itself"


def test_the_privileged_command_is_the_fixed_entry_with_the_action_only():
    argv = sudo_argv(default_entry(), "post", ["uuid-1", "node1"])
    venv = os.path.dirname(os.path.dirname(sys.executable))
    assert argv == ["sudo", "-n", f"{venv}/libexec/one-drivers-vnm-privileged",
                    "post", "uuid-1", "node1"]


def test_the_entry_is_found_as_the_shims_run_python_without_site():
    """The shims run ``python -IS``: without ``site``, ``sys.prefix`` is not the venv, and an
    entry path built on it named a file sudo does not allow (seen in Molecule's node)."""
    import subprocess

    drivers = os.path.dirname(os.path.dirname(os.path.abspath(default_entry.__code__.co_filename)))
    drivers = os.path.dirname(os.path.dirname(drivers))
    code = (f"import sys; sys.path.insert(0, {drivers!r}); "
            "from one_drivers.vnm.ovsdb.privilege import default_entry; print(default_entry())")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", code], capture_output=True,
                         text=True, check=True, timeout=30).stdout.strip()
    assert out == default_entry()


def test_the_entry_runs_isolated_with_roots_configuration():
    text = entry_text("/opt/one-drivers/bin/python3", "/etc/one-drivers/vnm-ovsdb.conf")
    assert text.splitlines()[0] == "#!/opt/one-drivers/bin/python3 -I"
    assert "main(config='/etc/one-drivers/vnm-ovsdb.conf')" in text
    assert sudoers_text("oneadmin", "/opt/one-drivers/libexec/x").splitlines()[-1] == \
        "oneadmin ALL=(root) NOPASSWD: /opt/one-drivers/libexec/x"
