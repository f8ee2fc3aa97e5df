"""Logging for driver processes.

Two audiences: OpenNebula reads stderr (``INFO: ...`` progress lines, then one plain last line on
failure); operators read the driver log file, which also gets tracebacks. The file is opened only
when something is written, so a fast action pays nothing for it.
"""

from __future__ import annotations

import os
import sys
import time

DEFAULT_LOG = "/var/log/one/one-drivers.log"

_context = {"label": "one-drivers", "path": ""}


def set_context(label: str) -> None:
    _context["label"] = label


def log_path() -> str:
    configured = os.environ.get("ONE_DRIVERS_LOG")
    if configured:
        return configured
    if os.access(os.path.dirname(DEFAULT_LOG), os.W_OK):
        return DEFAULT_LOG
    import tempfile  # only on hosts without /var/log/one

    return os.path.join(tempfile.gettempdir(), "one-drivers.log")


def write_log(level: str, message: str) -> None:
    """Append one record to the driver log; never fails the action."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S")
    record = f"{stamp} [{os.getpid()}] {level} {_context['label']}: {message}\n"
    try:
        path = log_path()
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with open(path, "a", encoding="utf-8") as fh:
            fh.write(record)
        _context["path"] = str(path)
    except OSError:
        pass


def info(message: str) -> None:
    """Progress OpenNebula shows in the VM/image log (``INFO:`` lines)."""
    sys.stderr.write(f"INFO: {message}\n")
    sys.stderr.flush()
    write_log("INFO", message)


def warn(message: str) -> None:
    sys.stderr.write(f"WARN: {message}\n")
    sys.stderr.flush()
    write_log("WARN", message)


def exception(message: str) -> str:
    """Log the current exception with its traceback; return where it went."""
    import traceback  # only bugs pay for it

    write_log("ERROR", f"{message}\n{traceback.format_exc()}")
    return _context["path"] or log_path()
