"""Which backup runs for which VM, so that ``backup_cancel`` stops exactly it.

A running ``backup`` writes ``<RUN_DIR>/vm-<id>.pid`` (pid and the process's start time) in a
directory only the driver's user may use (made 0700, refused otherwise); ``backup_cancel``
signals that process only when its start time still matches (a reused pid is another program),
then waits for it to end. The backup, stopped by SIGTERM like any action at its deadline, leaves
nothing half-made (a staging image is removed, an interrupted increment is rolled back by the
next run) and OpenNebula's postbackup with BACKUP_RESULT=FAILURE keeps the chain's base.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

from one_drivers.core import log
from one_drivers.core.config import Settings
from one_drivers.core.contract import Call
from one_drivers.core.errors import ActionFailed

DEFAULT_RUN_DIR = "~/.one-drivers/backups"


def _started(pid: int) -> str | None:
    """The process's start time (what tells it from a later one with its pid); None when it
    is gone or has ended (a zombie its parent has not collected yet)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            fields = fh.read().rsplit(b")", 1)[1].split()
    except OSError:
        return None
    if len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return None
    return fields[19].decode()


def run_dir(settings: Settings) -> Path:
    from one_drivers.core.safefs import open_trusted_dir

    path = os.path.expanduser(settings.get("BACKUP_RUN_DIR") or DEFAULT_RUN_DIR)
    os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    os.close(open_trusted_dir(path, create_mode=0o700, private=True))
    return Path(path)


@contextlib.contextmanager
def registered(settings: Settings, vmid: int) -> Iterator[None]:
    path = run_dir(settings) / f"vm-{vmid}.pid"
    tmp = path.with_suffix(f".{os.getpid()}")
    tmp.write_text(f"{os.getpid()} {_started(os.getpid())}\n")
    tmp.replace(path)
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            if path.read_text().split()[0] == str(os.getpid()):
                path.unlink()


def backup_cancel(call: Call) -> None:
    vm = call.doc
    vmid = vm.id
    path = run_dir(call.settings) / f"vm-{vmid}.pid"
    try:
        pid_s, started = path.read_text().split()
        pid = int(pid_s)
    except (OSError, ValueError):
        log.info(f"no backup of VM {vmid} is running")
        return
    if pid <= 1 or _started(pid) != started:
        log.info(f"the backup of VM {vmid} has ended already")
        path.unlink(missing_ok=True)
        return
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + min(call.deadline.remaining(), 60)
    while _started(pid) == started and time.monotonic() < end:
        time.sleep(0.05)
    if _started(pid) == started:
        raise ActionFailed(f"the backup of VM {vmid} (pid {pid}) did not stop",
                           hint="it may be stuck in Ceph: it ends at its own deadline")
    log.info(f"stopped the backup of VM {vmid} (pid {pid})")


