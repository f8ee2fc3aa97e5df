"""VNM actions run as oneadmin, Open vSwitch's sockets are root's. Upstream runs every ovs-vsctl
and ovs-ofctl through sudo (a dozen sudo processes per NIC); here the whole action re-executes
itself once under ``sudo -n`` when the OVSDB socket is not writable, with the same argv and
stdin, through one fixed root-owned entry script (:mod:`privileged`). ``one-drivers install-sudo``
(run by the Ansible role) writes that script and the one sudoers rule that allows it:

    oneadmin ALL=(root) NOPASSWD: <venv>/libexec/one-drivers-vnm-privileged

The rule names a file whose content fixes the interpreter, ``-I`` and the configuration path:
whatever path reaches the same file (sudo also matches by inode) runs the same code.

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


ENTRY_NAME = "one-drivers-vnm-privileged"
SUDOERS = "/etc/sudoers.d/one-drivers"


def venv_root() -> str:
    """The installation's root (the venv), from the interpreter's own path: ``sys.prefix``
    is the venv only when ``site`` ran, and the shims run with ``-IS``."""
    return os.path.dirname(os.path.dirname(sys.executable))


def default_entry() -> str:
    """Where ``install-sudo`` puts the entry script: ``<venv>/libexec/``."""
    return os.path.join(venv_root(), "libexec", ENTRY_NAME)


def sudo_argv(entry: str, action: str, argv: list[str]) -> list[str]:
    return ["sudo", "-n", entry, action, *argv]


def entry_text(python: str, config: str) -> str:
    return (f"#!{python} -I\n"
            "# one-drivers: the privileged VNM entry sudo runs (written by `one-drivers "
            "install-sudo`;\n# root-owned; see SECURITY.md). Do not edit.\n"
            "from one_drivers.vnm.ovsdb.privileged import main\n"
            f"main(config={config!r})\n")


def sudoers_text(user: str, entry: str) -> str:
    return ("# managed by one-drivers install-sudo: oneadmin's VNM actions re-run as root\n"
            f"{user} ALL=(root) NOPASSWD: {entry}\n")


# oned runs these on the front-end; they validate the network template and never reach OVSDB,
# so they need no privilege (a front-end has no sudo rule: the vnet went to ERROR there)
UNPRIVILEGED = frozenset({"vnet_create", "vnet_delete"})


def route(call: Call, action_fn: Any) -> str | None:
    settings = resolved(call.settings)
    if call.action in UNPRIVILEGED or not (settings.bool("SUDO", True)
            and needs_privilege(settings.get("OVSDB") or DEFAULT_OVSDB)):
        out: str | None = action_fn(call)
        return out
    try:
        entry = settings.get("SUDO_COMMAND") or default_entry()
        proc = subprocess.run(sudo_argv(entry, call.action,
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


def _current(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8") as fh:
            return fh.read()
    except FileNotFoundError:
        return None


def install_sudo(user: str, *, entry: str | None = None, config: str | None = None,
                 sudoers: str = SUDOERS, python: str | None = None) -> list[str]:
    """Write the privileged entry script and the sudoers rule (root-owned, idempotent);
    return the files that changed."""
    import re
    import tempfile

    from one_drivers.core.atomic import write_atomic
    from one_drivers.vnm.ovsdb.privileged import ROOT_CONF

    if os.geteuid() != 0:
        raise DriverError("install-sudo writes root's files: run it as root")
    if not re.fullmatch(r"[a-z_][a-z0-9_-]{0,31}", user):
        raise DriverError(f"{user!r} is not a user name")
    entry = entry or default_entry()
    python = python or os.path.join(venv_root(), "bin", "python3")
    for what, path in (("entry", entry), ("interpreter", python),
                       ("configuration", config or ROOT_CONF)):
        if not re.fullmatch(r"/[A-Za-z0-9_./+-]+", path) or "/../" in path:
            raise DriverError(f"the {what} path {path!r} must be absolute and plain")
    changed = []
    text = entry_text(python, config or ROOT_CONF)
    if _current(entry) != text:
        write_atomic(entry, text, mode=0o755, create_dirs=True)
        changed.append(entry)
    rule = sudoers_text(user, entry)
    if _current(sudoers) != rule:
        with tempfile.TemporaryDirectory() as scratch:
            candidate = os.path.join(scratch, "rule")
            with open(candidate, "w", encoding="utf-8") as fh:
                fh.write(rule)
            check = subprocess.run(["visudo", "-cf", candidate], capture_output=True,
                                   timeout=30, check=False)
            if check.returncode != 0:
                raise DriverError(f"visudo refused the rule: {check.stderr.decode().strip()}")
        write_atomic(sudoers, rule, mode=0o440)
        changed.append(sudoers)
    return changed
