"""Run a driver action on another host, over one ssh session, as if it ran here.

The datastore's BRIDGE_LIST mode and the transfer manager's host and bridge modes share this:
the front-end starts ``<python> -m one_drivers <family> <driver> <action> <argv...>`` on the
host, writes the payload (the action's document, the documents it would have asked oned for, a
file) to its stdin, relays its INFO/WARN lines as they come, and answers with the host's stdout;
the host's exit code and last error line become ours. The whole exchange ends at the action's
deadline (a stalled host is killed then). ssh failing to connect is told apart from the action
failing, so a caller can try the next host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from typing import IO

from one_drivers.core import log, remote
from one_drivers.core.contract import Call
from one_drivers.core.errors import BackendTimeout, BackendUnavailable, DriverError

ON_BRIDGE = "ONE_DRIVERS_ON_BRIDGE"  # set on the far side: the action runs there, not relayed
CHUNK = 1 << 20


class RelayFailure(DriverError):
    """The action failed on the far host: its exit code and its own last line."""

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def on_far_side() -> bool:
    return bool(os.environ.get(ON_BRIDGE))


def run_on(host: str, python: str, call: Call, payload: bytes, *,
           env: Mapping[str, str] | None = None, send_file: int | None = None,
           role: str = "bridge") -> str | None:
    """Run ``call`` on ``host``: its stdout, or None when ssh cannot reach the host. ``env``:
    variables for the far side (names and values chosen by the driver, never by a template);
    ``send_file``: a descriptor whose content follows the payload."""
    variables = {ON_BRIDGE: "1", **(env or {})}
    argv = ["env", *(f"{k}={v}" for k, v in variables.items()), python, "-m", "one_drivers",
            call.family, call.driver, call.action, *call.extras["argv"]]
    proc = remote.popen(host, argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                        stderr=subprocess.PIPE)
    out: list[bytes] = []
    err: list[str] = []
    readers = [threading.Thread(target=lambda: out.append(_read(proc.stdout)), daemon=True),
               threading.Thread(target=_relay, args=(proc.stderr, err), daemon=True)]
    for t in readers:
        t.start()
    if proc.stdin is None:
        raise RuntimeError("ssh started without a stdin pipe")
    watchdog = threading.Timer(call.deadline.remaining(), proc.kill)
    watchdog.daemon = True
    watchdog.start()
    try:
        proc.stdin.write(payload)
        if send_file is not None:
            while data := os.read(send_file, CHUNK):
                proc.stdin.write(data)
        proc.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the far side ended early (or was killed at the deadline): see below
    try:
        rc = proc.wait(timeout=max(call.deadline.remaining(), 0.1))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    finally:
        watchdog.cancel()
    if call.deadline.expired:
        raise BackendTimeout(f"the {role} {host} did not finish within "
                             f"{call.deadline.seconds:g} s",
                             hint=f"check the {role} host and its Ceph access")
    for t in readers:
        t.join(5)
    if rc == remote.SSH_UNREACHABLE and not err:
        return None
    if rc == remote.SSH_UNREACHABLE and err and err[-1].startswith(("ssh:", "Connection")):
        return None
    if rc == remote.SSH_UNREACHABLE:  # ssh's own failure after connecting: not an exit code
        raise BackendUnavailable(f"cannot reach {role} {host} over ssh ({err[-1]})")
    if rc != 0:
        raise RelayFailure(err[-1] if err else f"failed on {role} {host} (exit {rc})", rc)
    return b"".join(out).decode()


def first_reachable(hosts: list[str], start: int,
                    attempt: Callable[[str], str | None]) -> str:
    """``attempt(host)`` on each host in turn from ``hosts[start % len]``, until one is
    reachable (answers anything but None); a host ssh cannot reach is skipped, said in an INFO
    line. BRIDGE_LIST for datastores and markets."""
    first = start % len(hosts)
    tried = []
    for host in hosts[first:] + hosts[:first]:
        outcome = attempt(host)
        if outcome is not None:
            return outcome
        log.info(f"bridge {host} is unreachable, trying the next one")
        tried.append(host)
    raise BackendUnavailable(f"no bridge host is reachable ({', '.join(tried)})",
                             hint="check BRIDGE_LIST and ssh from the front-end to those hosts")


def _read(stream: IO[bytes] | None) -> bytes:
    return stream.read() if stream is not None else b""


def _relay(stream: IO[bytes] | None, lines: list[str]) -> None:
    """Forward the far side's progress lines as they come; keep the rest for the error."""
    if stream is None:
        return
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        if line.startswith(("INFO:", "WARN:", "DEBUG:")):
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        elif line.strip():
            lines.append(line)
