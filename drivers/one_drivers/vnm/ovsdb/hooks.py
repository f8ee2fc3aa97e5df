"""``<action>.d/`` hook directories next to the action (``remotes/vnm/ovsdb/post.d/``): every
executable in them runs in name order after a successful action, with the action's argv and stdin;
the first failure fails the action, as OpenNebula's own VNM drivers do."""

from __future__ import annotations

import os
import subprocess

from one_drivers.core import log
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed, BackendTimeout


def hook_dir(call: Call, action: str) -> str | None:
    remotes = call.extras.get("remotes")
    if not remotes or os.environ.get("ONE_DRIVERS_NO_HOOKS") == "1":  # a privileged re-run
        return None
    return os.path.join(os.fspath(remotes), call.family, call.driver, f"{action}.d")


def run_hooks(call: Call, action: str) -> None:
    directory = hook_dir(call, action)
    if directory is None or not os.path.isdir(directory):
        return
    argv = list(call.extras.get("argv") or [])
    stdin = call.extras.get("stdin") or b""
    timeout = call.deadline.cap(call.settings.float("HOOK_TIMEOUT", 60), "hooks")
    for name in sorted(os.listdir(directory)):
        path = os.path.join(directory, name)
        if not (os.path.isfile(path) and os.access(path, os.X_OK)):
            continue
        try:
            proc = subprocess.run([path, *argv], input=stdin, capture_output=True,
                                  timeout=timeout, check=False)
        except subprocess.TimeoutExpired:
            raise BackendTimeout(f"{action} hook {name} took over {timeout:g} s") from None
        if proc.stdout:
            log.info(f"{action} hook {name}: {proc.stdout.decode(errors='replace').strip()}")
        if proc.returncode != 0:
            lines = proc.stderr.decode(errors="replace").strip().splitlines()
            raise ActionFailed(f"{action} hook {name} failed (exit {proc.returncode}): "
                               f"{lines[-1] if lines else 'no message'}")
