"""Run one action as OpenNebula does: parse, execute, answer.

This is the only place that turns exceptions into exit codes. A :class:`DriverError` becomes its
exit code and one plain stderr line; anything else is a bug: the traceback goes to the driver log
and stderr gets one line pointing there. SIGTERM (oned's timeout kills the process group) is turned
into an exception so ``finally`` blocks clean up half-made objects.
"""

from __future__ import annotations

import io
import os
import signal
import sys
from types import FrameType
from typing import IO

from one_drivers.core import log
from one_drivers.core.config import Settings, config_path, load_file, load_root_file
from one_drivers.core.contract import DEFAULT_ACTION_TIMEOUT, parse_call, reads_stdin
from one_drivers.core.errors import (
    EXIT_INTERNAL,
    BackendTimeout,
    BadInput,
    DriverError,
    UsageError,
)
from one_drivers.core.registry import get_driver
from one_drivers.core.retry import Deadline, action_timeout

USAGE = "usage: python -m one_drivers FAMILY DRIVER ACTION [ARGS...]"
# oned's largest documents (a VM with its history, a datastore with its images) are a few MiB
MAX_STDIN = 32 << 20
# set by a forwarding front-end: stdin is the document's line followed by a data stream
FRAMED_STDIN = "ONE_DRIVERS_FRAMED_STDIN"


class Interrupted(BackendTimeout):
    pass


def _on_sigterm(signum: int, frame: FrameType | None) -> None:
    raise Interrupted(f"stopped by signal {signum} (OpenNebula's driver timeout?)",
                      hint="the action can be retried; it converges")


def run(
    family: str,
    driver_name: str,
    action: str,
    argv: list[str],
    *,
    stdin: IO[bytes] | None,
    stdout: IO[str],
    remotes: str | os.PathLike[str] | None = None,
    root_config: str | None = None,
) -> int:
    """``root_config``: the privileged re-run's configuration, a root-owned file at a path root
    chose (read through :func:`safefs.read_trusted_file`) instead of the remotes tree's."""
    label = f"{family}/{driver_name}/{action}"
    # IM: only the message may reach OpenNebula's runner, which merges stderr into it
    log.set_context(label, progress_on_stderr=family != "im")
    subject = ""
    try:
        signal.signal(signal.SIGTERM, _on_sigterm)
        driver = get_driver(family, driver_name)
        if action not in driver.actions:
            driver.resolve(action)  # raises the UsageError that lists what exists
        # the document is small: keep its bytes, so a router can forward the call verbatim
        rest: IO[bytes] | None = None
        if stdin is not None and os.environ.get(FRAMED_STDIN) == "1":
            raw = stdin.readline(MAX_STDIN + 1)  # the document's line; the rest is a cp source
            rest = stdin
        else:
            raw = (stdin.read(MAX_STDIN + 1) if stdin is not None and reads_stdin(family, action)
                   else b"")
        if len(raw) > MAX_STDIN:
            raise BadInput(f"the document on stdin is larger than {MAX_STDIN >> 20} MiB",
                           hint="OpenNebula's documents are far smaller: check the caller")
        call = parse_call(family, driver_name, action, argv, io.BytesIO(raw))
        call.extras.update(argv=list(argv), stdin=raw, data=rest, remotes=remotes)
        subject = call.subject
        configured = (load_root_file(root_config) if root_config is not None
                      else load_file(config_path(family, driver_name, remotes)))
        settings = Settings([driver.default_values(), configured], subject=subject)
        timeout = action_timeout(action, settings, DEFAULT_ACTION_TIMEOUT)
        call.settings = settings
        call.deadline = Deadline(timeout, f"{label} for {subject}")
        out = driver.run(action, call)
        if out is not None:
            stdout.write(out if out.endswith("\n") or not out else out + "\n")
            stdout.flush()
        return 0
    except DriverError as exc:
        if not exc.subject and subject:
            exc.subject = subject
        log.write_log("ERROR", str(exc))
        sys.stderr.write(f"{exc}\n")
        return exc.exit_code
    except KeyboardInterrupt:
        sys.stderr.write(f"{subject or label}: interrupted\n")
        return 130
    except Exception as exc:
        where = log.exception(f"internal error in {label} for {subject or '?'}")
        sys.stderr.write(
            f"{subject + ': ' if subject else ''}internal error in {label} "
            f"({type(exc).__name__}: {' '.join(str(exc).split())}); details in {where}\n"
        )
        return EXIT_INTERNAL


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 3:
        sys.stderr.write(f"{UsageError(USAGE)}\n")
        return UsageError.exit_code
    family, driver, action, *rest = args
    return run(family, driver, action, rest, stdin=sys.stdin.buffer, stdout=sys.stdout)


def exit_now(code: int) -> None:
    """End a one-shot action process without interpreter teardown (~11 ms of module and
    librados finalizers). Safe here: every resource is closed by ``with`` blocks before the
    answer, the log is written record by record, no atexit handler is registered."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


IM_CONTROL = "monitord-client_control.sh"  # the name OpenNebula's stop_monitord_client runs


def shim(path: str, family: str, driver: str, action: str) -> None:
    """Entry of the generated remotes shims: ``<remotes>/<family>/<driver>/<action>``, and
    ``<remotes>/im/<driver>.d/monitord-client_control.sh``, which OpenNebula's generic
    ``im/run_monitord_client`` runs with ``<im_mad> <host id> <host>`` and its
    ``im/stop_monitord_client`` (only ``*_control.sh``) with ``stop`` first."""
    remotes = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(path))))
    argv = sys.argv[1:]
    if family == "im" and action == IM_CONTROL:
        stopping = argv[:1] == ["stop"]
        action = "stop_monitord_client" if stopping else "run_monitord_client"
        argv = argv[1:] if stopping else argv
    exit_now(run(family, driver, action, argv, stdin=sys.stdin.buffer,
                 stdout=sys.stdout, remotes=remotes))
