"""``one-drivers tm run-transfer FILE``: run an oned transfer file as OpenNebula's TM MAD does.

Each line is ``<ACTION>[.<TM_MAD_SYSTEM>] <tm_mad> <args...>``; the script is
``<remotes>/tm/<tm_mad>/<action>[.<system>]``, falling back to the name without the suffix
("mixed mode"); lines run in order and the first failure stops the rest, as in ``one_tm.rb``.
For tests, the demo, and operators recovering a VM by hand.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from one_drivers.core.errors import BadInput, UsageError


def parse_line(line: str, lineno: int) -> tuple[str, str, list[str]] | None:
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    tokens = text.split()
    if len(tokens) < 2:
        raise BadInput(f"transfer line {lineno} is not '<ACTION> <TM_MAD> <ARGS...>': {text!r}")
    action, tm_mad, *args = tokens
    if not all(c.isalnum() or c in "._-" for c in action + tm_mad):
        raise BadInput(f"transfer line {lineno} has an invalid action or driver: {text!r}")
    return action.lower(), tm_mad, args


def script_for(remotes: Path, action: str, tm_mad: str) -> Path:
    path = remotes / "tm" / tm_mad / action
    if path.exists():
        return path
    base = remotes / "tm" / tm_mad / action.split(".", 1)[0]
    if base.exists():
        return base
    raise UsageError(f"no TM script {path} (nor {base.name})",
                     hint="install the remotes or check the TM_MAD")


def run_transfer(path: Path, remotes: Path, *, timeout: float = 3600) -> int:
    try:
        lines = path.read_text().splitlines()
    except OSError as exc:
        raise BadInput(f"cannot read transfer file {path}: {exc.strerror}") from None
    steps = [(n, parsed) for n, line in enumerate(lines, 1)
             if (parsed := parse_line(line, n)) is not None]
    for n, (action, tm_mad, args) in steps:
        script = script_for(remotes, action, tm_mad)
        t = time.monotonic()
        proc = subprocess.run([str(script), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, timeout=timeout, check=False)
        took = time.monotonic() - t
        sys.stdout.write(f"{action.upper()} {tm_mad} {' '.join(args)}   "
                         f"[exit {proc.returncode}, {took * 1000:.0f} ms]\n")
        for line in proc.stderr.decode(errors="replace").splitlines():
            if line.strip():
                sys.stdout.write(f"    {line}\n")
        sys.stdout.flush()
        if proc.returncode != 0:
            last = [ln for ln in proc.stderr.decode(errors="replace").splitlines() if ln.strip()]
            sys.stderr.write(f"transfer {path.name} line {n} ({action.upper()}) failed: "
                             f"{last[-1] if last else 'no message'}\n")
            return proc.returncode
    return 0
