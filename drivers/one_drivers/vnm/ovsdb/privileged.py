"""Entry of the privileged re-run (see :mod:`privilege`):
``python -m one_drivers.vnm.ovsdb.privileged REMOTES ACTION [ARGS...]`` with the action's stdin.

It reads the driver configuration from the caller's remotes tree (sudo resets the environment)
and leaves hooks to the caller, which runs them as itself afterwards."""

from __future__ import annotations

import os
import sys

from one_drivers.core.runner import exit_now, run


def main(argv: list[str]) -> None:
    remotes, action, *rest = argv
    os.environ["ONE_DRIVERS_NO_HOOKS"] = "1"
    exit_now(run("vnm", "ovsdb", action, rest, stdin=sys.stdin.buffer, stdout=sys.stdout,
                 remotes=remotes or None))


if __name__ == "__main__":
    main(sys.argv[1:])
