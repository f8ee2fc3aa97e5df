"""The monitoring client: runs on the host, each probe group on its own period, and sends the
messages to monitord (``python -m one_drivers.im.libvirt.client SETTINGS_JSON``).

Threads, a fixed number whatever libvirtd does: the main thread keeps time, makes the beacon and
talks to monitord; one probe worker owns the libvirt connection and runs every probe; libvirt's
event loop drives the connection's keepalive. A hung libvirtd holds the worker, never the beacon,
and never makes another thread: groups that fall due meanwhile wait, merged, for the worker, and
the host reports the error. Keepalive (every 5 s, 3 missed) ends a call to a daemon that stopped
answering; a closed connection (libvirtd restarted) is opened again on the next probe.

State between runs (the VMs' last states, CPU samples, changes not yet delivered) lives in a small
JSON file written by rename, so a crash leaves the old or the new one; a corrupt file is set aside
and rebuilt. STATE_VM changes that could not be sent (monitord down) are kept, the newest per VM,
until a send succeeds; sends back off 1, 1, 1, 2, 4, 8, 8, 16, 32, 64 s after failures. A change
is sent once more after oned's guard: oned ignores a VM's reported state for 30 s after an action
on it, so a guest shut down just after one was seen only at the next full sync (minutes later);
the repeat goes only if the latest probe still shows that state.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
import threading
import time
from typing import Any, NamedTuple

from one_drivers.core.atomic import write_atomic
from one_drivers.im.libvirt import probes
from one_drivers.im.libvirt.forecast import Forecaster
from one_drivers.im.libvirt.wire import TCP_TYPES, Message, Sender, load_public_key

GROUPS = ("BEACON_HOST", "SYSTEM_HOST", "MONITOR_HOST", "STATE_VM", "MONITOR_VM", "SYNC_STATE_VM",
          "EXEC_VM")
DEFAULT_PERIODS = {"BEACON_HOST": 30, "SYSTEM_HOST": 600, "MONITOR_HOST": 120, "STATE_VM": 5,
                   "MONITOR_VM": 30, "SYNC_STATE_VM": 180, "EXEC_VM": 5}


PROBE_TIMEOUT = 30.0  # the worker busy longer than this: the host reports libvirt stuck
KEEPALIVE = (5, 3)  # libvirt keepalive: interval (s) and missed answers before it closes
RESEND_AFTER = 35.0  # oned's guard after an action is 30 s
DEFAULT_DS_LOCATION = "/var/lib/one/datastores"
LIBVIRT_GROUPS = frozenset(GROUPS) - {"BEACON_HOST"}
_DEPLOY_ID = re.compile(r'DEPLOY_ID="([^"]*)"')
_ID = re.compile(r'\bID="([^"]*)"')
_STATE = re.compile(r'\bSTATE="([^"]*)"')


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
    resend_after: float = RESEND_AFTER
    one_version: str = ""  # OpenNebula's, from the remotes' VERSION file
    guest_agent: bool = True  # MONITOR_VM carries what each guest agent says
    forecast_period: float = 300.0  # seconds ahead the *_FORECAST keys look (0: none)


class Store:
    """The client's state; ``lock`` guards it (the worker and the main thread both change it)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.Lock()
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
        for key in ("vms", "cpu", "pending", "resend"):
            if not isinstance(self.data.get(key), dict):
                self.data[key] = {}
        if "text" in self.data["pending"]:  # the earlier layout: one text of every change
            self.data["pending"] = by_vm(str(self.data["pending"]["text"]))

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data), mode=0o600, private=True)


def by_vm(text: str) -> dict[str, str]:
    """STATE_VM lines by DEPLOY_ID (the last line of each VM wins)."""
    out = {}
    for line in text.splitlines():
        match = _DEPLOY_ID.search(line)
        if line.startswith("VM") and match:
            out[match.group(1)] = line
    return out


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
        self.worker: ProbeWorker | None = None
        self.stuck_reported = 0.0
        self.forecaster = Forecaster(period=opts.forecast_period) \
            if opts.forecast_period > 0 else None

    def messages(self, groups: set[str]) -> list[Message]:
        """Run the probe groups in ``groups`` (one bulk libvirt call for all VM groups)."""
        hid, now = self.opts.host_id, time.time()
        out: list[Message] = []
        doms = probes.domains(self.conn) if groups & {"STATE_VM", "MONITOR_VM", "SYNC_STATE_VM",
                                                      "SYSTEM_HOST"} else []
        if "BEACON_HOST" in groups:
            out.append(Message("BEACON_HOST", True, hid, probes.beacon()))
        if "EXEC_VM" in groups:
            ended = probes.exec_vm(self.conn)
            if ended:  # results are sent once, so only when there are some
                out.append(Message("EXEC_VM", True, hid, ended))
        if "SYSTEM_HOST" in groups:
            out.append(Message("SYSTEM_HOST", True, hid,
                               probes.system_host(self.conn, doms, self.opts.pci_filter,
                                                  self.opts.ds_location, self.opts.one_version)))
        host_cpu = self.store.data.get("host_cpu")
        if "MONITOR_HOST" in groups:
            text, host_cpu = probes.monitor_host(self.conn, host_cpu, now)
            if self.forecaster is not None:
                text = self.forecaster.host(text, now)
            out.append(Message("MONITOR_HOST", True, hid, text))
        disk_sizes = (probes.local_disk_sizes(self.opts.ds_location)
                      if "MONITOR_VM" in groups else {})
        with self.store.lock:
            data = self.store.data
            data["host_cpu"] = host_cpu
            if "STATE_VM" in groups or "SYNC_STATE_VM" in groups:
                sync = "SYNC_STATE_VM" in groups
                text, data["vms"] = probes.state_vm(doms, data["vms"], sync=sync)
                data["vms_at"] = now
                if sync:
                    data["pending"] = {}  # a full report replaces whatever was pending
                    out.append(Message("STATE_VM", True, hid, text))
                elif text:
                    data["pending"] = {**data["pending"], **by_vm(text)}
            if "MONITOR_VM" in groups:
                text, data["cpu"] = probes.monitor_vm(doms, data["cpu"], now, disk_sizes,
                                                      guest_agent=self.opts.guest_agent)
                if self.forecaster is not None:
                    text = self.forecaster.vms(text, now)
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
        with self.store.lock:
            data = self.store.data
            lines = {**data["pending"], **self._resends_due(data)}
            if lines and self.tcp.ready(now) and self.tcp.send(
                    Message("STATE_VM", True, self.opts.host_id, "\n".join(lines.values()))):
                wall = time.time()
                for uuid, line in data["pending"].items():  # once more, after oned's guard
                    data["resend"][uuid] = {"due": wall + self.opts.resend_after, "line": line}
                for uuid in lines:
                    if uuid not in data["pending"]:
                        data["resend"].pop(uuid, None)
                data["pending"] = {}
                self.store.save()

    @staticmethod
    def _resends_due(data: dict[str, Any]) -> dict[str, str]:
        """Changes due to be sent once more, if the latest probe (taken after they fell due)
        still shows the state they report; the others are dropped (the VM moved on: its new
        state went as a change of its own)."""
        probed_at = float(data.get("vms_at") or 0)
        current = {str(v.get("id")): v.get("state") for v in data["vms"].values()}
        out = {}
        for uuid, entry in list(data["resend"].items()):
            if not isinstance(entry, dict) or probed_at < float(entry.get("due", 0)):
                continue
            line = str(entry.get("line", ""))
            vm_id, state = _ID.search(line), _STATE.search(line)
            now_state = current.get(vm_id.group(1), "POWEROFF") if vm_id else None
            if state and now_state == state.group(1):
                out[uuid] = line
            else:
                del data["resend"][uuid]
        return out

    def tick(self) -> None:
        now = time.monotonic()
        due = {g for g in GROUPS if now >= self.due[g]}
        for group in due:
            self.due[group] = now + self.opts.periods.get(group, DEFAULT_PERIODS[group])
        if "BEACON_HOST" in due:  # from here: it says the client lives, whatever libvirtd does
            self.queue.append(Message("BEACON_HOST", True, self.opts.host_id, probes.beacon()))
        worker = self.worker or self.start_worker()
        if due & LIBVIRT_GROUPS:
            worker.request(due & LIBVIRT_GROUPS)
        for out, error in worker.results():
            if error is None:
                self.queue.extend(out)
            else:  # libvirt away: the host reports it; the worker opens it again next time
                self._report(error)
        busy = worker.busy_for(now)
        period = self.opts.periods.get("MONITOR_HOST", DEFAULT_PERIODS["MONITOR_HOST"])
        if busy > PROBE_TIMEOUT and now - self.stuck_reported >= period:
            self.stuck_reported = now
            self._report(f"libvirt at {self.opts.libvirt_uri} has not answered for {busy:.0f} s")
        # keep only the newest message of each type while monitord is away; EXEC_VM results
        # are each sent once: they are kept together
        ended = [m for m in self.queue if m.kind == "EXEC_VM"]
        if len(ended) > 1:
            merged = ended[-1]._replace(text="\n".join(m.text for m in ended))
            self.queue = [m for m in self.queue if m.kind != "EXEC_VM"] + [merged]
        newest = {m.kind: m for m in self.queue}
        self.queue = [m for m in self.queue if newest[m.kind] is m]
        self.flush()

    def start_worker(self) -> ProbeWorker:
        self.worker = ProbeWorker(self)
        self.worker.start()
        return self.worker

    def _report(self, error: str) -> None:
        self.queue.append(Message("MONITOR_HOST", False, self.opts.host_id,
                                  f"ERROR={probes.quoted(error[:200])}"))


class ProbeWorker(threading.Thread):
    """The one thread that talks to libvirt: runs the groups asked for (merged while it is
    busy), keeps the connection (keepalive, reopened when closed), hands back the results."""

    def __init__(self, client: Client) -> None:
        super().__init__(name="probes", daemon=True)
        self.client = client
        self.cond = threading.Condition()
        self.wanted: set[str] = set()
        self.done: list[tuple[list[Message], str | None]] = []
        self.started_at: float | None = None
        self.closed = threading.Event()
        if client.conn is not None:
            self._watch(client.conn)

    def request(self, groups: set[str]) -> None:
        with self.cond:
            self.wanted |= groups
            self.cond.notify()

    def results(self) -> list[tuple[list[Message], str | None]]:
        with self.cond:
            done, self.done = self.done, []
        return done

    def busy_for(self, now: float) -> float:
        with self.cond:
            return 0.0 if self.started_at is None else now - self.started_at

    def run(self) -> None:
        while True:
            with self.cond:
                while not self.wanted:
                    self.cond.wait()
                groups, self.wanted = self.wanted, set()
                self.started_at = time.monotonic()
            try:
                self._connect()
                result: tuple[list[Message], str | None] = (self.client.messages(groups), None)
            except Exception as exc:
                self._disconnect()
                result = ([], str(exc) or type(exc).__name__)
            with self.cond:
                self.started_at = None
                self.done = [*self.done, result][-len(GROUPS):]  # bounded

    def _connect(self) -> None:
        conn = self.client.conn
        if conn is not None and not self.closed.is_set():
            return
        self._disconnect()
        import libvirt

        conn = libvirt.open(self.client.opts.libvirt_uri)  # hung daemon: holds this thread only
        self._watch(conn)
        self.client.conn = conn

    def _watch(self, conn: Any) -> None:
        self.closed.clear()
        try:
            conn.setKeepAlive(*KEEPALIVE)
            conn.registerCloseCallback(lambda *_: self.closed.set(), None)
        except Exception:  # noqa: S110 - a connection without keepalive still works; calls to a
            pass  # hung daemon then wait for it, in this thread only

    def _disconnect(self) -> None:
        conn, self.client.conn = self.client.conn, None
        if conn is None:
            return
        for close in (conn.unregisterCloseCallback, conn.close):
            try:
                close()
            except Exception:  # noqa: S112 - it is gone either way
                continue


def start_event_loop() -> None:
    """libvirt's default event loop in a thread of its own: keepalive needs one."""
    import libvirt

    libvirt.virEventRegisterDefaultImpl()

    def loop() -> None:
        while True:
            libvirt.virEventRunDefaultImpl()

    threading.Thread(target=loop, name="libvirt-events", daemon=True).start()


def run(settings_path: str, ready_fd: int | None = None) -> None:
    """The client's life. ``ready_fd``: written to once it runs (the action that started it
    waits for that, not for a fixed time)."""
    from one_drivers.core import faults
    from one_drivers.im.libvirt.control import private_state_dir

    faults.point("im-client:starting")

    private_state_dir(os.path.dirname(os.path.abspath(settings_path)))  # nobody else's file
    fd = os.open(settings_path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    with os.fdopen(fd, encoding="utf-8") as fh:
        raw = json.load(fh)
    opts = Options(**raw)
    import libvirt

    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    start_event_loop()
    client = Client(opts, None)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    client.start_worker()
    if ready_fd is not None:
        os.write(ready_fd, b"1")
        os.close(ready_fd)
    while True:
        client.tick()
        time.sleep(0.25)


if __name__ == "__main__":
    run(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else None)
