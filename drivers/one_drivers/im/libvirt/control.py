"""run_monitord_client / stop_monitord_client: what monitord runs on the host (through
``im/run_monitord_client`` and the ``im/libvirt.d/`` hook) with the monitoring configuration on
stdin. Start runs every probe once and answers with them (monitord's first picture of the host),
then leaves the client running in the background; a re-run replaces it."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from one_drivers.core import log
from one_drivers.core.atomic import write_atomic
from one_drivers.core.contract import Call
from one_drivers.core.documents import MonitorConfiguration
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.im.libvirt.client import (
    DEFAULT_DS_LOCATION,
    DEFAULT_PERIODS,
    GROUPS,
    Client,
    Options,
)

# the driver user's own directory: never a shared one, where another local user could plant the
# settings file the client trusts (SECURITY.md)
DEFAULT_STATE_DIR = "~/.one-drivers/im"
NOFOLLOW = os.O_NOFOLLOW | os.O_CLOEXEC


def private_state_dir(path: str) -> str:
    """Made 0700 if missing; refused unless this user owns it, mode 0700, on a trusted path."""
    from one_drivers.core.safefs import open_trusted_dir

    os.close(open_trusted_dir(path, create_mode=0o700, private=True))
    return path


def options(call: Call) -> Options:
    conf: MonitorConfiguration = call.doc
    settings = call.settings
    address = conf.opt("NETWORK/MONITOR_ADDRESS") or "auto"
    if address == "auto":  # the front-end we were started from, as upstream's agent does
        address = (os.environ.get("SSH_CLIENT") or "").split(" ")[0] or \
            conf.opt("NETWORK/ADDRESS") or "127.0.0.1"
    if address in ("::", "0.0.0.0"):  # noqa: S104 - monitord's own bind-all, not ours
        address = "127.0.0.1"
    port = conf.opt("NETWORK/PORT") or "4124"
    if not port.isdigit():
        raise BadInput(f"NETWORK/PORT={port!r} is not a port number")
    periods: dict[str, float] = {}
    for group in GROUPS:
        raw = conf.opt(f"PROBES_PERIOD/{group}")
        try:
            periods[group] = float(raw) if raw else float(DEFAULT_PERIODS[group])
        except ValueError:
            raise BadInput(f"PROBES_PERIOD/{group}={raw!r} is not a number of seconds") from None
    pubkey = conf.opt("NETWORK/PUBKEY") or ""
    if pubkey and not pubkey.startswith("-----") and os.path.isfile(pubkey):
        with open(pubkey, encoding="utf-8") as fh:
            pubkey = fh.read()
    state_dir = private_state_dir(os.path.expanduser(
        settings.get("STATE_DIR") or os.environ.get("ONE_DRIVERS_IM_STATE_DIR")
        or DEFAULT_STATE_DIR))
    uri = settings.get("LIBVIRT_URI") or os.environ.get("LIBVIRT_DEFAULT_URI") \
        or "qemu:///system"
    return Options(conf.host_id, address, int(port), pubkey, periods,
                   os.path.join(state_dir, f"host-{conf.host_id}.json"), uri,
                   settings.get("PCI_FILTER") or "",
                   conf.opt("DATASTORE_LOCATION") or DEFAULT_DS_LOCATION,
                   settings.float("STATE_RESEND_AFTER", 35),
                   one_version(call.extras.get("remotes")),
                   settings.bool("GUEST_AGENT_MONITOR", True),
                   settings.float("FORECAST_PERIOD", 300))


def one_version(remotes: str | None) -> str:
    """The last line of the remotes tree's VERSION file (OpenNebula's, synced with it)."""
    if not remotes:
        return ""
    try:
        with open(os.path.join(remotes, "VERSION"), encoding="utf-8") as fh:
            lines = [ln.strip() for ln in fh if ln.strip()]
    except OSError:
        return ""
    return lines[-1][:64] if lines else ""


def _pidfile(opts: Options) -> str:
    return opts.state_file.replace(".json", ".pid")


def _stop(opts: Options) -> bool:
    try:
        with os.fdopen(os.open(_pidfile(opts), os.O_RDONLY | NOFOLLOW), encoding="utf-8") as fh:
            pid = int(fh.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            ours = b"one_drivers.im.libvirt.client" in fh.read()
    except (OSError, ValueError, IndexError):
        return False
    if ours:
        os.kill(pid, signal.SIGTERM)
        for _ in range(50):
            if not os.path.exists(f"/proc/{pid}"):
                break
            time.sleep(0.1)
    with contextlib.suppress(FileNotFoundError):
        os.unlink(_pidfile(opts))
    return ours


def run_monitord_client(call: Call) -> str:
    opts = options(call)
    _stop(opts)
    import libvirt

    from one_drivers.core.retry import call_with_timeout

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    timeout = call.deadline.cap(call.settings.float("LIBVIRT_TIMEOUT", 30), "opening libvirt")
    try:
        conn = call_with_timeout(libvirt.open, opts.libvirt_uri, timeout=timeout,
                                 what=f"libvirt at {opts.libvirt_uri}")
    except libvirt.libvirtError as exc:
        raise ActionFailed(f"cannot reach libvirt at {opts.libvirt_uri} "
                           f"({exc.get_error_message()})") from None
    # this process exits soon: abandoning a call stuck in a hung libvirtd is safe here
    first = call_with_timeout(Client(opts, conn).messages, {"SYSTEM_HOST", "MONITOR_HOST",
                                                           "SYNC_STATE_VM", "MONITOR_VM"},
                              timeout=call.deadline.cap(60, "the first probes"),
                              what="the first probes")
    conn.close()
    settings_path = opts.state_file.replace(".json", ".settings.json")
    write_atomic(settings_path, json.dumps(opts._asdict()), mode=0o600, private=True)
    log_fd = os.open(opts.state_file.replace(".json", ".log"),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | NOFOLLOW, 0o600)
    ready_r, ready_w = os.pipe()
    try:
        with os.fdopen(log_fd, "ab") as logf:
            proc = subprocess.Popen([sys.executable, "-m", "one_drivers.im.libvirt.client",
                                     settings_path, str(ready_w)], stdin=subprocess.DEVNULL,
                                    stdout=logf, stderr=logf, start_new_session=True,
                                    pass_fds=(ready_w,))
        os.close(ready_w)
        _wait_until_running(proc, ready_r, call.deadline.cap(15, "starting the client"),
                            opts.state_file.replace(".json", ".log"))
    finally:
        os.close(ready_r)
    write_atomic(_pidfile(opts), f"{proc.pid}\n", mode=0o600, private=True)
    log.info(f"monitoring client {proc.pid} sends to {opts.address}:{opts.port}")
    from one_drivers.im.libvirt.wire import start_message_part

    parts = "".join(f"<{m.kind}>{start_message_part(m.text)}</{m.kind}>" for m in first)
    return f"<MONITOR_MESSAGES>{parts}<TIMESTAMP>{int(time.time())}</TIMESTAMP></MONITOR_MESSAGES>"


def _wait_until_running(proc: subprocess.Popen[bytes], ready: int, seconds: float,
                        log_path: str) -> None:
    """Until the client says it runs (a byte on its readiness pipe), not a fixed time: the
    pipe closing first means it exited while starting."""
    import select

    readable, _, _ = select.select([ready], [], [], seconds)
    said = os.read(ready, 1) if readable else None
    if said:
        return
    if said is None:  # neither running nor gone in time: stopped, never half-started
        proc.kill()
    status = proc.wait(timeout=10)
    what = "did not start" if said is None else f"exited while starting (status {status})"
    raise ActionFailed(f"the monitoring client {what}", hint=f"see {log_path}")


def stop_monitord_client(call: Call) -> None:
    opts = options(call)
    if not _stop(opts):
        log.info(f"no monitoring client of host {opts.host_id} was running")
