"""The privileged VNM entry (see :mod:`privilege`). sudo runs only the root-owned script that
``one-drivers install-sudo`` writes::

    #!<venv>/bin/python3 -I
    from one_drivers.vnm.ovsdb.privileged import main
    main(config="/etc/one-drivers/vnm-ovsdb.conf")

with ``ACTION [ARGS...]`` and the action's stdin. The interpreter runs isolated (no current
directory, script directory, user site or PYTHON* variable on the search path); the configuration
path is fixed in the script by root; the caller's argv names only an action of a fixed list and
that action's own arguments, re-validated here. Nothing of the caller's environment is used, hooks
are left to the caller, and the package itself must be root's (SECURITY.md).
"""

from __future__ import annotations

import os
import sys

ROOT_CONF = "/etc/one-drivers/vnm-ovsdb.conf"
ACTIONS = ("pre", "post", "clean", "update_sg", "update_nic")


def refuse(line: str, code: int = 2) -> None:
    sys.stderr.write(f"{line}\n")
    sys.stderr.flush()
    os._exit(code)


def check_package_is_roots() -> None:
    """The code root is about to run can be changed only by root (an editable install in a
    user's checkout, or a venv oneadmin owns, would hand out root)."""
    from one_drivers.core.safefs import Untrusted, is_trusted_dir

    package = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    try:
        if not is_trusted_dir(package, uid=0):
            raise Untrusted(f"the one_drivers package in {package} can be changed by "
                            "users other than root")
    except Untrusted as exc:
        refuse(f"refusing to run as root: {exc}", 1)


def main(argv: list[str] | None = None, *, config: str = ROOT_CONF) -> None:
    args = sys.argv[1:] if argv is None else argv
    for name in [k for k in os.environ if k.startswith("ONE_DRIVERS_")]:
        del os.environ[name]  # nothing of the caller chooses a path, a socket or a log
    os.environ["ONE_DRIVERS_NO_HOOKS"] = "1"
    if not args or args[0] not in ACTIONS:
        refuse(f"privileged VNM entry: the action must be one of {', '.join(ACTIONS)}")
    if os.geteuid() == 0:
        check_package_is_roots()
    from one_drivers.core.runner import exit_now, run

    exit_now(run("vnm", "ovsdb", args[0], args[1:], stdin=sys.stdin.buffer, stdout=sys.stdout,
                 remotes=None, root_config=config))
