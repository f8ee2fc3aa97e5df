"""Run an argv on a host: in-process fast path when the host is this machine, ssh otherwise.

Never a shell string built from templates: the argv is passed as a list locally, and over ssh each
element is quoted with ``shlex.quote`` so the remote login shell rebuilds exactly the same list.
ssh runs in BatchMode (no password prompts can hang an action) with a connect timeout.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import socket
import subprocess
import time
from collections.abc import Sequence
from functools import cache
from typing import IO

from one_drivers.core.errors import ActionFailed, BackendTimeout, BackendUnavailable, BadInput

SSH_UNREACHABLE = 255


@cache
def local_names() -> frozenset[str]:
    names = {"localhost", "127.0.0.1", "::1", "", "-"}
    hostname = socket.gethostname()
    names.add(hostname)
    names.add(hostname.split(".", 1)[0])
    with contextlib.suppress(OSError):
        names.add(socket.getfqdn())
    extra = os.environ.get("ONE_DRIVERS_LOCAL_NAMES", "")
    names.update(n for n in extra.split(",") if n)
    return frozenset(names)


def is_local(host: str | None) -> bool:
    return host is None or host in local_names()


def check_host(host: str) -> str:
    """A host name from a template (BRIDGE_LIST, a TM argument) is only ever a host name: never
    an option (``-oProxyCommand=...``), never empty, no whitespace or control characters."""
    if not host or host.startswith("-") or any(c.isspace() or ord(c) < 32 for c in host):
        raise BadInput(f"{host!r} is not a host name")
    return host


def ssh_argv(host: str, argv: Sequence[str], *, connect_timeout: int = 10) -> list[str]:
    check_host(host)
    cmd = ["ssh", "-o", "BatchMode=yes", "-o", f"ConnectTimeout={connect_timeout}",
           "-o", "ServerAliveInterval=10", "-o", "ServerAliveCountMax=3"]
    config = os.environ.get("ONE_DRIVERS_SSH_CONFIG")
    if config:
        cmd += ["-F", config]
    return [*cmd, "--", host, shlex.join(argv)]


def command(host: str | None, argv: Sequence[str]) -> list[str]:
    """The local argv that runs ``argv`` on ``host``."""
    if not argv:
        raise ValueError("empty argv")
    return list(argv) if is_local(host) else ssh_argv(str(host), argv)


def run(
    host: str | None,
    argv: Sequence[str],
    *,
    timeout: float,
    input: bytes | None = None,
    stdin: IO[bytes] | None = None,
    stdout: IO[bytes] | int | None = subprocess.PIPE,
    check: bool = True,
    idempotent: bool = False,
) -> subprocess.CompletedProcess[bytes]:
    """Run and wait; raise a DriverError naming host and program on failure. An ``idempotent``
    command (a test, a read, ``mkdir -p``, ``rm -rf``) whose ssh connection failed is run again
    as :data:`one_drivers.core.retry.SSH` says, within ``timeout`` (never one fed a stream)."""
    from one_drivers.core.retry import SSH, Deadline

    cmd = command(host, argv)
    where = "here" if is_local(host) else f"on {host}"
    deadline = Deadline(timeout, f"{argv[0]} {where}")
    # a stream fed to the command cannot be fed twice; a local command has no ssh to fail
    retry = stdin is None and not is_local(host) and SSH.retries("exit-255",
                                                                 idempotent=idempotent)
    for attempt in range(1, SSH.max_attempts + 1):
        try:
            proc = subprocess.run(
                cmd,
                input=input,
                stdin=stdin if input is None else None,
                stdout=stdout,
                stderr=subprocess.PIPE,
                timeout=deadline.cap(timeout),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise BackendTimeout(f"{argv[0]} {where} did not finish within {timeout:g} s"
                                 ) from None
        except FileNotFoundError:
            raise ActionFailed(f"{cmd[0]} is not installed {where}") from None
        if not (retry and proc.returncode == SSH_UNREACHABLE and attempt < SSH.max_attempts
                and deadline.remaining() > 1):
            break
        time.sleep(min(0.5 * attempt, deadline.remaining() / 2))
    if check and proc.returncode != 0:
        detail = _last_line(proc.stderr)
        if not is_local(host) and proc.returncode == SSH_UNREACHABLE:
            raise BackendUnavailable(f"cannot reach {host} over ssh ({detail or 'exit 255'})",
                                     hint="check the host is up and oneadmin's ssh key")
        raise ActionFailed(f"{argv[0]} {where} failed with exit code {proc.returncode}"
                           + (f": {detail}" if detail else ""))
    return proc


def holds(host: str | None, argv: Sequence[str], *, timeout: float) -> bool:
    """Whether a test such as ``test -d PATH`` holds on ``host``; a host that cannot be reached
    raises (ssh's 255 is not "no")."""
    proc = run(host, argv, timeout=timeout, check=False, idempotent=True)
    if not is_local(host) and proc.returncode == SSH_UNREACHABLE:
        detail = _last_line(proc.stderr)
        raise BackendUnavailable(f"cannot reach {host} over ssh ({detail or 'exit 255'})",
                                 hint="check the host is up and oneadmin's ssh key")
    return proc.returncode == 0


def popen(host: str | None, argv: Sequence[str], **kwargs: object) -> subprocess.Popen[bytes]:
    """Start ``argv`` on ``host`` with pipes for streaming (caller owns the process)."""
    return subprocess.Popen(command(host, argv), **kwargs)  # type: ignore[call-overload, no-any-return]


def _last_line(data: bytes | None) -> str:
    lines = [ln.strip() for ln in (data or b"").decode("utf-8", "replace").splitlines()]
    lines = [ln for ln in lines if ln]
    return lines[-1] if lines else ""
