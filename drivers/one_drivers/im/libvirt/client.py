"""The monitoring client: runs on the host, each probe group on its own period, and sends the
messages to monitord (``python -m one_drivers.im.libvirt.client SETTINGS_JSON``).

State between runs (the VMs' last states, CPU samples, the last full sync) lives in a small JSON
file written by rename, so a crash leaves the old or the new one; a corrupt file is set aside and
rebuilt. STATE_VM changes that could not be sent (monitord down) are kept and merged until a send
succeeds, so none is lost; sends back off 1, 1, 1, 2, 4, 8, 8, 16, 32, 64 s after failures.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from typing import Any, NamedTuple

from one_drivers.core.atomic import write_atomic
from one_drivers.core.retry import call_with_timeout
from one_drivers.im.libvirt import probes
from one_drivers.im.libvirt.wire import TCP_TYPES, Message, Sender, load_public_key

GROUPS = ("BEACON_HOST", "SYSTEM_HOST", "MONITOR_HOST", "STATE_VM", "MONITOR_VM", "SYNC_STATE_VM")
DEFAULT_PERIODS = {"BEACON_HOST": 30, "SYSTEM_HOST": 600, "MONITOR_HOST": 120, "STATE_VM": 5,
                   "MONITOR_VM": 30, "SYNC_STATE_VM": 180}


PROBE_TIMEOUT = 30.0
DEFAULT_DS_LOCATION = "/var/lib/one/datastores"


class Options(NamedTuple):
    host_id: int
    address: str
    port: int
    pubkey_pem: str
    periods: dict[str, float]
    state_file: str
    libvirt_uri: str
    pci_filter: str
    ds_location: str = DEFAULT_DS_LOCATION


class Store:
    def __init__(self, path: str) -> None:
        self.path = path
        self.data: dict[str, Any] = {}
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            with os.fdopen(fd, encoding="utf-8") as fh:
                loaded = json.load(fh)
            self.data = loaded if isinstance(loaded, dict) else {}
        except FileNotFoundError:
            pass
        except (OSError, ValueError):  # corrupt: keep it for a post-mortem, start afresh
            os.replace(path, f"{path}.corrupt")
        for key in ("vms", "cpu", "pending"):
            if not isinstance(self.data.get(key), dict):
                self.data[key] = {}

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data), mode=0o600, private=True)


class Client:
    def __init__(self, opts: Options, conn: Any) -> None:
        self.opts = opts
        self.conn = conn
        pubkey = load_public_key(opts.pubkey_pem) if opts.pubkey_pem else None
        # one back-off per transport: a refused TCP connection must not hold UDP messages back
        self.udp = Sender(opts.address, opts.port, pubkey)
        self.tcp = Sender(opts.address, opts.port, pubkey)
        self.store = Store(opts.state_file)
        self.due = dict.fromkeys(GROUPS, 0.0)
        self.queue: list[Message] = []

    def messages(self, groups: set[str]) -> list[Message]:
        """Run the probe groups in ``groups`` (one bulk libvirt call for all VM groups)."""
        hid, now = self.opts.host_id, time.time()
        out: list[Message] = []
        data = self.store.data
        doms = probes.domains(self.conn) if groups & {"STATE_VM", "MONITOR_VM", "SYNC_STATE_VM",
                                                      "SYSTEM_HOST"} else []
        if "BEACON_HOST" in groups:
            out.append(Message("BEACON_HOST", True, hid, probes.beacon()))
        if "SYSTEM_HOST" in groups:
            out.append(Message("SYSTEM_HOST", True, hid,
                               probes.system_host(self.conn, doms, self.opts.pci_filter,
                                                  self.opts.ds_location)))
        if "MONITOR_HOST" in groups:
            text, data["host_cpu"] = probes.monitor_host(self.conn, data.get("host_cpu"), now)
            out.append(Message("MONITOR_HOST", True, hid, text))
        if "STATE_VM" in groups or "SYNC_STATE_VM" in groups:
            sync = "SYNC_STATE_VM" in groups
            text, data["vms"] = probes.state_vm(doms, data["vms"], sync=sync)
            if sync:
                data["pending"] = {}  # a full report replaces whatever was pending
                out.append(Message("STATE_VM", True, hid, text))
            elif text:
                data["pending"] = {**data["pending"], "text": "\n".join(
                    filter(None, [data["pending"].get("text", ""), text]))}
        if "MONITOR_VM" in groups:
            text, data["cpu"] = probes.monitor_vm(doms, data["cpu"], now,
                                                  probes.local_disk_sizes(self.opts.ds_location))
            out.append(Message("MONITOR_VM", True, hid, text))
        self.store.save()
        return out

    def flush(self) -> None:
        """Send what is queued, then pending state changes; what fails stays for later."""
        now = time.monotonic()
        kept = []
        for message in self.queue:
            sender = self.tcp if message.kind in TCP_TYPES else self.udp
            if not (sender.ready(now) and sender.send(message)):
                kept.append(message)
        self.queue = kept
        pending = self.store.data["pending"].get("text")
        if pending and self.tcp.ready(now) and self.tcp.send(
                Message("STATE_VM", True, self.opts.host_id, pending)):
            self.store.data["pending"] = {}
            self.store.save()

    def tick(self) -> None:
        now = time.monotonic()
        due = {g for g in GROUPS if now >= self.due[g]}
        for group in due:
            self.due[group] = now + self.opts.periods.get(group, DEFAULT_PERIODS[group])
        if due:
            try:  # bounded: a hung libvirtd must not stop the beacon of the others
                self.queue.extend(call_with_timeout(self.messages, due, timeout=PROBE_TIMEOUT,
                                                    what="the probes"))
            except Exception as exc:  # libvirt away: the host reports it, and tries again
                self.queue.append(Message("MONITOR_HOST", False, self.opts.host_id,
                                          f"ERROR={str(exc)[:200]!r}"))
                self.conn = reconnect(self.opts.libvirt_uri) or self.conn
        # keep only the newest message of each type while monitord is away
        newest = {m.kind: m for m in self.queue}
        self.queue = [m for m in self.queue if newest[m.kind] is m]
        self.flush()


def reconnect(uri: str) -> Any:
    try:
        import libvirt

        return libvirt.open(uri)
    except Exception:
        return None


def run(settings_path: str) -> None:
    from one_drivers.im.libvirt.control import private_state_dir

    private_state_dir(os.path.dirname(os.path.abspath(settings_path)))  # nobody else's file
    fd = os.open(settings_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, encoding="utf-8") as fh:
        raw = json.load(fh)
    opts = Options(**raw)
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    conn = None
    while conn is None:
        conn = reconnect(opts.libvirt_uri)
        if conn is None:
            time.sleep(5)
    client = Client(opts, conn)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    while True:
        client.tick()
        time.sleep(0.25)


if __name__ == "__main__":
    run(sys.argv[1])
