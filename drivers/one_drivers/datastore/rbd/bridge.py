"""BRIDGE_LIST mode: when the front-end has no Ceph client access (CEPH_ACCESS=bridge), the same
action runs on a bridge host over ssh.

Hosts are tried round-robin from ``IMAGE_ID % len(BRIDGE_LIST)``; a host ssh cannot reach is
skipped. The bridge gets the call verbatim (argv, the base64 document) and answers as the action
would here: its INFO lines are relayed, its exit code and last line become ours. A ``cp`` of a file
on the front-end sends the file after the document, checked against RESTRICTED_DIRS here.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import IO

from one_drivers.core import log, remote
from one_drivers.core.contract import Call
from one_drivers.core.errors import (
    BackendTimeout,
    BackendUnavailable,
    DriverError,
    MissingAttribute,
)
from one_drivers.core.runner import FRAMED_STDIN
from one_drivers.datastore.rbd.common import ds_settings

ON_BRIDGE = "ONE_DRIVERS_ON_BRIDGE"
SSH_UNREACHABLE = 255
CHUNK = 1 << 20


class BridgeFailure(DriverError):
    """The action failed on the bridge: its exit code and its own last line."""

    def __init__(self, line: str, exit_code: int) -> None:
        super().__init__(line)
        self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


def route(call: Call, action: Callable[[Call], str | None]) -> str | None:
    settings = ds_settings(call)
    if settings.get("CEPH_ACCESS", "local") != "bridge" or os.environ.get(ON_BRIDGE):
        return action(call)
    hosts = (settings.get("BRIDGE_LIST") or "").split()
    if not hosts:
        raise MissingAttribute("BRIDGE_LIST", subject=call.subject,
                               hint="CEPH_ACCESS=bridge needs bridge hosts in the datastore")
    if call.action == "stat" and (_local_path(call) or _is_http(call)):
        return action(call)  # nothing of Ceph: answer here
    # the program started over ssh: only the driver's own configuration may choose it
    python = call.settings.get("BRIDGE_PYTHON") or sys.executable
    local_file = _local_source(call)
    first = call.doc.image.id % len(hosts) if call.doc.elem.find("IMAGE") is not None else 0
    tried = []
    try:
        for host in hosts[first:] + hosts[:first]:
            if local_file is not None:
                os.lseek(local_file, 0, os.SEEK_SET)
            outcome = _run_on(host, python, call, local_file)
            if outcome is None:
                log.info(f"bridge {host} is unreachable, trying the next one")
                tried.append(host)
                continue
            return outcome
    finally:
        if local_file is not None:
            os.close(local_file)
    raise BackendUnavailable(f"no bridge host is reachable ({', '.join(tried)})",
                             hint="check BRIDGE_LIST and ssh from the front-end to those hosts")


def _is_http(call: Call) -> bool:
    path: str | None = (call.doc.image.opt("PATH")
                        if call.doc.elem.find("IMAGE") is not None else None)
    return path is not None and urllib.parse.urlsplit(path).scheme in ("http", "https")


def _local_path(call: Call) -> Path | None:
    if call.action not in ("cp", "stat"):
        return None
    path: str = call.doc.image.text("PATH")
    scheme = urllib.parse.urlsplit(path).scheme
    if scheme not in ("", "file"):
        return None
    return Path(urllib.parse.urlsplit(path).path if scheme else path)


def _local_source(call: Call) -> int | None:
    """The front-end file a bridge ``cp`` imports, opened once and checked here (the file is
    here, so is the check); its descriptor is what is sent."""
    local = _local_path(call)
    if local is None:
        return None
    from one_drivers.datastore.rbd.sources import open_local

    return open_local(local, ds_settings(call))


def _run_on(host: str, python: str, call: Call, local_file: int | None) -> str | None:
    """Run the call on ``host``; None when ssh cannot reach it. The whole exchange, sending
    the file included, ends at the action's deadline (a stalled bridge is killed then)."""
    env = [f"{ON_BRIDGE}=1"] + ([f"{FRAMED_STDIN}=1"] if local_file is not None else [])
    argv = ["env", *env, python, "-m", "one_drivers", call.family, call.driver, call.action,
            *call.extras["argv"]]
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
        framed = local_file is not None
        proc.stdin.write(call.extras["stdin"].rstrip(b"\n") + (b"\n" if framed else b""))
        if local_file is not None:
            while data := os.read(local_file, CHUNK):
                proc.stdin.write(data)
        proc.stdin.close()
    except (BrokenPipeError, ValueError, OSError):
        pass  # the remote side ended early (or was killed at the deadline): see below
    try:
        rc = proc.wait(timeout=max(call.deadline.remaining(), 0.1))
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    finally:
        watchdog.cancel()
    if call.deadline.expired:
        raise BackendTimeout(f"the bridge {host} did not finish within "
                             f"{call.deadline.seconds:g} s",
                             hint="check the bridge host and its Ceph access")
    for t in readers:
        t.join(5)
    if rc == SSH_UNREACHABLE and not err:
        return None
    if rc == SSH_UNREACHABLE and err and err[-1].startswith(("ssh:", "Connection")):
        return None
    if rc == SSH_UNREACHABLE:  # ssh's own failure after connecting: not an action's exit code
        raise BackendUnavailable(f"cannot reach bridge {host} over ssh ({err[-1]})")
    if rc != 0:
        raise BridgeFailure(err[-1] if err else f"failed on bridge {host} (exit {rc})", rc)
    return b"".join(out).decode()


def _read(stream: IO[bytes] | None) -> bytes:
    return stream.read() if stream is not None else b""


def _relay(stream: IO[bytes] | None, lines: list[str]) -> None:
    """Forward the bridge's progress lines as they come; keep the rest for the error."""
    if stream is None:
        return
    for raw in stream:
        line = raw.decode(errors="replace").rstrip("\n")
        if line.startswith(("INFO:", "WARN:", "DEBUG:")):
            sys.stderr.write(line + "\n")
            sys.stderr.flush()
        elif line.strip():
            lines.append(line)
