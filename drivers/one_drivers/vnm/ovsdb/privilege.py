"""VNM actions run as oneadmin, Open vSwitch's sockets are root's. Upstream runs every ovs-vsctl
and ovs-ofctl through sudo (a dozen sudo processes per NIC); here the whole action re-executes
itself once under ``sudo -n`` when the OVSDB socket is not writable, with the same argv and
stdin. The Ansible role installs the matching sudoers rule:

    oneadmin ALL=(root) NOPASSWD: <venv>/bin/python* -m one_drivers.vnm.ovsdb.privileged *

Hooks (``<action>.d``) run afterwards as the calling user, as upstream runs them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import BackendTimeout, DriverError
from one_drivers.vnm.ovsdb.host import DEFAULT_OVSDB, resolved

HOOKED = ("pre", "post", "clean")


class Relayed(DriverError):
    """The privileged run failed: its last line and exit code, passed on as they are."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def needs_privilege(endpoint: str, euid: int | None = None) -> bool:
    """True when this user cannot write the unix OVSDB socket (that exists)."""
    if (os.geteuid() if euid is None else euid) == 0 or not endpoint.startswith("unix:"):
        return False
    path = endpoint[5:]
    return os.path.exists(path) and not os.access(path, os.W_OK)


def sudo_argv(remotes: str, action: str, argv: list[str]) -> list[str]:
    return ["sudo", "-n", sys.executable, "-m", "one_drivers.vnm.ovsdb.privileged", remotes,
            action, *argv]


def route(call: Call, action_fn: Any) -> str | None:
    settings = resolved(call.settings)
    if not (settings.bool("SUDO", True)
            and needs_privilege(settings.get("OVSDB") or DEFAULT_OVSDB)):
        out: str | None = action_fn(call)
        return out
    try:
        remotes = os.fspath(call.extras.get("remotes") or "")
        proc = subprocess.run(sudo_argv(remotes, call.action,
                                        list(call.extras.get("argv") or [])),
                              input=call.extras.get("stdin") or b"", capture_output=True,
                              timeout=call.deadline.remaining(), check=False)
    except subprocess.TimeoutExpired:
        raise BackendTimeout(f"the privileged {call.action} took over "
                             f"{call.deadline.seconds:g} s") from None
    lines = proc.stderr.decode(errors="replace").strip().splitlines()
    for line in lines[:-1] if proc.returncode else lines:
        sys.stderr.write(line + "\n")  # its INFO lines, as they came
    if proc.returncode != 0:
        last = lines[-1] if lines else f"exit {proc.returncode}"
        if last.startswith(f"{call.subject}: "):
            last = last[len(call.subject) + 2:]
        if "sudo" in last and "password" in last:
            last += " (is the one-drivers sudoers rule installed?)"
        raise Relayed(last, proc.returncode)
    if call.action in HOOKED:
        from one_drivers.vnm.ovsdb.hooks import run_hooks

        run_hooks(call, call.action)
    log.info(f"{call.action} ran as root through sudo (the OVSDB socket is root's)")
    return proc.stdout.decode() or None
