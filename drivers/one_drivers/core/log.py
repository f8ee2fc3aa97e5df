"""Logging for driver processes.

Two audiences: OpenNebula reads stderr (``INFO: ...`` progress lines, then one plain last line on
failure); operators read the driver log file, which also gets tracebacks. The file is opened only
when something is written, so a fast action pays nothing for it.

The log goes where only its writer and root can plant names: ``$ONE_DRIVERS_LOG`` (not for root's
privileged re-run, which clears the environment), else ``/var/log/one/one-drivers.log`` for the
driver user and ``/var/log/one-drivers.log`` for root, each only when its directory is trusted
(:mod:`safefs`). Never a shared temporary directory; the file is opened without following a
symlink. No trusted place: stderr only.
"""

from __future__ import annotations

import os
import sys
import time

DEFAULT_LOG = "/var/log/one/one-drivers.log"
ROOT_LOG = "/var/log/one-drivers.log"

_context = {"label": "one-drivers", "path": "", "progress": "stderr"}


def set_context(label: str, *, progress_on_stderr: bool = True) -> None:
    """``progress_on_stderr=False``: INFO/WARN lines go to the log file only. OpenNebula's
    ``im/run_monitord_client`` runs the IM scripts with ``2>&1``, so anything on stderr would
    become part of the monitoring message oned parses (the host went to ERROR)."""
    _context["label"] = label
    _context["progress"] = "stderr" if progress_on_stderr else "log"


def log_path() -> str | None:
    configured = os.environ.get("ONE_DRIVERS_LOG")
    if configured:
        return configured
    if "default" not in _context:  # checked once per process
        from one_drivers.core.safefs import is_trusted_dir

        path = ROOT_LOG if os.geteuid() == 0 else DEFAULT_LOG
        _context["default"] = path if is_trusted_dir(os.path.dirname(path)) else ""
    return _context["default"] or None


def write_log(level: str, message: str) -> None:
    """Append one record to the driver log; never fails the action."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    record = f"{stamp} [{os.getpid()}] {level} {_context['label']}: {message}\n"
    try:
        path = log_path()
        if path is None:
            return
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC,
                     0o640)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(record)
        _context["path"] = str(path)
    except OSError:
        pass


def info(message: str) -> None:
    """Progress OpenNebula shows in the VM/image log (``INFO:`` lines)."""
    if _context["progress"] == "stderr":
        sys.stderr.write(f"INFO: {message}\n")
        sys.stderr.flush()
    write_log("INFO", message)


def warn(message: str) -> None:
    if _context["progress"] == "stderr":
        sys.stderr.write(f"WARN: {message}\n")
        sys.stderr.flush()
    write_log("WARN", message)


def exception(message: str) -> str:
    """Log the current exception with its traceback; return where it went."""
    import traceback  # only bugs pay for it

    write_log("ERROR", f"{message}\n{traceback.format_exc()}")
    return _context["path"] or log_path() or "no log file (no trusted log directory)"
