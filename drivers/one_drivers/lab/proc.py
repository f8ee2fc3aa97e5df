"""Process helpers for the lab: start, record, wait for and stop daemons by PID."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from pathlib import Path


class LabError(RuntimeError):
    """A lab component failed to start or stop; the message names it and its log."""


def run(argv: Sequence[str], *, timeout: float = 60, env: dict[str, str] | None = None,
        input: bytes | None = None, check: bool = True,
        cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    proc = subprocess.run(list(argv), capture_output=True, timeout=timeout, env=env,
                          input=input, check=False, cwd=cwd)
    if check and proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip().splitlines()
        raise LabError(f"{argv[0]} failed ({proc.returncode}): {err[-1] if err else ''}")
    return proc


def spawn(argv: Sequence[str], *, log: Path, env: dict[str, str] | None = None,
          pidfile: Path | None = None) -> subprocess.Popen[bytes]:
    """Start a foreground daemon in its own session, output to ``log``; record its PID."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as fh:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=fh, stderr=fh,
                                env=env, start_new_session=True)
    if pidfile is not None:
        pidfile.write_text(f"{proc.pid}\n")
    return proc


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive...
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        if state != "Z":
            return True
        # ...unless only its main thread has ended: ovs-vswitchd's other threads still run
        # its exit handlers, which unlink socket paths a successor may already have created
        return len(os.listdir(f"/proc/{pid}/task")) > 1
    except (OSError, IndexError):
        return True


def stop(pidfile: Path, *, timeout: float = 10) -> bool:
    """SIGTERM the recorded PID, then SIGKILL after ``timeout``; True if something was stopped."""
    pid = read_pid(pidfile)
    if pid is None or not alive(pid):
        pidfile.unlink(missing_ok=True)
        return False
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            break
        end = time.monotonic() + wait
        while time.monotonic() < end and alive(pid):
            _reap(pid)
            time.sleep(0.02)
        if not alive(pid):
            break
    pidfile.unlink(missing_ok=True)
    return True


def _reap(pid: int) -> None:
    with contextlib.suppress(ChildProcessError):  # not our child: nothing to reap
        os.waitpid(pid, os.WNOHANG)


def wait_for(check: Callable[[], bool], *, timeout: float, what: str,
             interval: float = 0.05) -> None:
    end = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > end:
            raise LabError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(interval)


def stop_processes_mentioning(path: str) -> list[int]:
    """SIGKILL every process whose command line names ``path`` (a test's or bench's own
    directory: what it started and left behind, such as the ldap driver's login agent)."""
    killed = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in (os.getpid(), os.getppid()):
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as fh:
                args = fh.read().split(b"\0")
        except OSError:
            continue
        if any(path.encode() in a for a in args):
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(entry), signal.SIGKILL)
                killed.append(int(entry))
    return killed
