"""The monitoring client against the lab's libvirtd with running TCG guests, and a real UDP + TCP
listener playing monitord that decodes every message."""

from __future__ import annotations

import base64
import contextlib
import fnmatch
import json
import os
import socket
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest

from one_drivers.im.libvirt.wire import unpack
from one_drivers.lab.console import GuestConsole
from one_drivers.lab.documents import domain_xml

READY = "one-lab-guest: ready"


class Monitord:
    """UDP and TCP on one port, like onemonitord; ``messages`` holds (type, result, host id,
    decoded text) in arrival order. The TCP side can be taken down and brought back."""

    def __init__(self, private_key=None) -> None:
        self.private_key = private_key
        self.messages: list[tuple[str, str, int, str]] = []
        self.raw: list[str] = []  # payloads as they came over the wire
        self.lock = threading.Lock()
        self.tcp: socket.socket | None = None
        for _ in range(50):  # one port number free for both UDP and TCP, like monitord's
            self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            self.udp.bind(("127.0.0.1", 0))
            self.port = self.udp.getsockname()[1]
            try:
                self.tcp_up()
                break
            except OSError:
                self.udp.close()
        else:
            raise AssertionError("no port free for both UDP and TCP")
        threading.Thread(target=self._udp_loop, daemon=True).start()

    def _record(self, raw: bytes) -> None:
        kind, result, hid, _ts, payload = raw.decode().split(" ", 4)
        text = unpack(payload.strip(), self.private_key)
        with self.lock:
            self.raw.append(payload.strip())
            self.messages.append((kind, result, int(hid), text))

    def _udp_loop(self) -> None:
        while True:
            self._record(self.udp.recv(1 << 20))

    def tcp_up(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", self.port))
        except OSError:
            sock.close()
            raise
        sock.listen(16)
        self.tcp = sock

        def accept() -> None:
            while True:
                try:
                    conn, _ = sock.accept()
                except OSError:
                    return
                with conn:
                    data = b""
                    while chunk := conn.recv(1 << 16):
                        data += chunk
                    self._record(data)

        threading.Thread(target=accept, daemon=True).start()

    def tcp_down(self) -> None:
        """Stop listening for real: close() alone leaves a socket whose accept() is blocked in
        another thread listening (and accepting) on Linux; shutdown() wakes that accept up."""
        assert self.tcp is not None
        with contextlib.suppress(OSError):
            self.tcp.shutdown(socket.SHUT_RDWR)
        self.tcp.close()

    def wait(self, kind: str, match, timeout: float = 20) -> str:
        """The text of the first (new) message of ``kind`` for which ``match(text)`` holds."""
        end = time.monotonic() + timeout
        seen = 0
        while time.monotonic() < end:
            with self.lock:
                batch = self.messages[seen:]
                seen = len(self.messages)
            for k, result, _hid, text in batch:
                if k == kind and result == "SUCCESS" and match(text):
                    return text
            time.sleep(0.1)
        kinds = sorted({m[0] for m in self.messages})
        raise AssertionError(f"no matching {kind} within {timeout} s (got: {kinds})")

    def clear(self) -> None:
        with self.lock:
            self.messages.clear()


def config(port: int, host_id: int, pubkey: str = "", ds_location: str = "") -> str:
    key = f"<PUBKEY>{pubkey}</PUBKEY>" if pubkey else ""
    location = f"<DATASTORE_LOCATION>{ds_location}</DATASTORE_LOCATION>" if ds_location else ""
    return (f"<MONITOR_CONFIGURATION>{location}<NETWORK><ADDRESS>0.0.0.0</ADDRESS>"
            f"<PORT>{port}</PORT>"
            f"<MONITOR_ADDRESS>127.0.0.1</MONITOR_ADDRESS>{key}</NETWORK><PROBES_PERIOD>"
            "<BEACON_HOST>1</BEACON_HOST><SYSTEM_HOST>3</SYSTEM_HOST><MONITOR_HOST>2"
            "</MONITOR_HOST><STATE_VM>1</STATE_VM><MONITOR_VM>2</MONITOR_VM><SYNC_STATE_VM>4"
            f"</SYNC_STATE_VM></PROBES_PERIOD><HOST_ID>{host_id}</HOST_ID>"
            "</MONITOR_CONFIGURATION>")


@pytest.fixture
def guests(lab_env, tmp_path):
    """Boot guests named as OpenNebula names them (plus a wild one); destroyed afterwards."""
    import libvirt

    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    made = []

    def boot(name_id: int, wild: bool = False):
        d = tmp_path / f"g{name_id}"
        d.mkdir(exist_ok=True)  # booted again under the same name: a resumed VM
        xml = domain_xml(lab_env, name_id, str(d), str(d / "console")).replace(
            "type='kvm'", "type='qemu'", 1)
        if wild:
            xml = xml.replace(f"<name>one-{name_id}</name>", f"<name>wild-{name_id}</name>")
        dom = conn.createXML(xml, 0)
        made.append(dom)
        return dom, GuestConsole(d / "console")

    yield boot
    for dom in made:
        with contextlib.suppress(libvirt.libvirtError):
            dom.destroy()
    conn.close()


def run_client(remotes: Path, action: str, conf: str, host_id: int, state_dir: Path
               ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(remotes / "im" / "libvirt" / action), "libvirt", str(host_id),
                           "node1"], input=conf, capture_output=True, text=True, timeout=60,
                          check=False, env={**os.environ, "ONE_DRIVERS_IM_STATE_DIR":
                                            str(state_dir)})


def vm_entries(text: str) -> dict[str, str]:
    """DEPLOY_ID -> the VM = [ ... ] line."""
    out = {}
    for line in text.splitlines():
        if line.startswith("VM") and 'DEPLOY_ID="' in line:
            out[line.split('DEPLOY_ID="', 1)[1].split('"', 1)[0]] = line
    return out


def test_host_and_vm_state_reach_monitord(lab_env, remotes, guests, tmp_path):
    import libvirt
    import libvirt_qemu

    base = 5000 + int(uuid.uuid4().hex[:3], 16)
    (a, ca), (b, cb), (c, _), _wild = (guests(base), guests(base + 1), guests(base + 2),
                                           guests(base + 3, wild=True))
    for console in (ca, cb):
        console.wait_for(READY)
    monitord = Monitord()
    host_id = 40 + base % 50
    state_dir = tmp_path / "im"
    location = tmp_path / "datastores"  # a local system datastore (marked) and a shared one
    for ds, tm_mad in (("0", "ssh"), ("101", "")):
        (location / ds).mkdir(parents=True)
        if tm_mad:
            (location / ds / ".monitor").write_text(tm_mad)
    (location / "0" / str(base)).mkdir()  # guest a's disk as a file there, as the .ssh TM makes
    (location / "0" / str(base) / "disk.2").write_bytes(os.urandom(3 << 20))
    res = run_client(remotes, "run_monitord_client",
                     config(monitord.port, host_id, ds_location=str(location)), host_id, state_dir)
    assert res.returncode == 0, res.stderr
    first = res.stdout.strip()
    assert first.startswith("<MONITOR_MESSAGES>") and "<TIMESTAMP>" in first
    # as monitord reads them (MonitorDriverProtocol::_start_monitor): base64 only, then a template
    import xml.etree.ElementTree as ET

    answer = ET.fromstring(first)
    kinds = {part.tag: base64.b64decode(part.text or "").decode() for part in answer
             if part.tag != "TIMESTAMP"}
    assert {"SYSTEM_HOST", "MONITOR_HOST", "STATE_VM", "MONITOR_VM"} <= set(kinds), kinds.keys()
    assert kinds["SYSTEM_HOST"].startswith("HYPERVISOR=kvm")
    assert kinds["STATE_VM"].startswith("SYNC_STATE=yes")
    try:
        system = monitord.wait("SYSTEM_HOST", lambda t: "HYPERVISOR=kvm" in t)
        for key in ("TOTALCPU=", "TOTALMEMORY=", "CPUSPEED=", "KVM_MACHINES=", "KVM_CPU_MODELS=",
                    "CGROUPS_VERSION=",
                    'MEMORY_NODE=[ NODE_ID="0", TOTAL=', 'CORE=[ NODE_ID="0", ID="0", CPUS='):
            assert key in system, key
        assert f'VM_NAME="wild-{base + 3}"' in system and 'ID="-1"' in system, "a wild VM"
        wild = next(ln for ln in system.splitlines() if f'VM_NAME="wild-{base + 3}"' in ln)
        imported = base64.b64decode(wild.split('IMPORT_TEMPLATE="')[1].split('"')[0]).decode()
        assert f'IMPORT_VM_ID="{_wild[0].UUIDString()}"' in imported and 'MEMORY="' in imported
        assert "DS_LOCATION_FREE_MB=" in system and "DS=[ ID=0, USED_MB=" in system
        assert "ID=101" not in system, "a datastore no TM marked is not the host's to report"
        host = monitord.wait("MONITOR_HOST", lambda t: "USEDMEMORY=" in t)
        assert "FREECPU=" in host and "NETRX=" in host
        assert 'MEMORY_NODE=[ NODE_ID="0", FREE=' in host, "NUMA usage"
        monitord.wait("BEACON_HOST", lambda t: t.startswith("TIMESTAMP="))
        vms = vm_entries(monitord.wait("MONITOR_VM", lambda t: a.UUIDString() in t))
        monitor = base64.b64decode(vms[a.UUIDString()].split('MONITOR="', 1)[1].split('"')[0])
        for key in (b"CPU=", b"MEMORY=", b"NETRX=", b"DISKRDBYTES=", b"DISK_SIZE=[ID=2, SIZE=3]"):
            assert key in monitor
        assert f'ID="{base}"' in vms[a.UUIDString()]
        sync = monitord.wait("STATE_VM", lambda t: t.startswith("SYNC_STATE=yes"))
        entries = vm_entries(sync)
        assert all('STATE="RUNNING"' in entries[d.UUIDString()] for d in (a, b, c))
        # a guest that powers itself off
        _poweroff(cb)
        change = monitord.wait("STATE_VM", lambda t: b.UUIDString() in t and
                               "SYNC_STATE" not in t)
        assert 'STATE="POWEROFF"' in vm_entries(change)[b.UUIDString()]
        # a destroyed one: gone from the next full report, which says MISSING_STATE
        c_uuid = c.UUIDString()
        c.destroy()
        sync = monitord.wait("STATE_VM", lambda t: t.startswith("SYNC_STATE=yes") and
                             c_uuid not in t)
        assert "MISSING_STATE=POWEROFF" in sync and a.UUIDString() in sync
        # a guest stopped under libvirt's feet (as on an I/O error): FAILURE
        libvirt_qemu.qemuMonitorCommand(a, '{"execute":"stop"}', 0)
        failed = monitord.wait("STATE_VM", lambda t: a.UUIDString() in t and "FAILURE" in t)
        assert 'STATE="FAILURE"' in vm_entries(failed)[a.UUIDString()]
        # monitord's TCP side goes away; a change meanwhile is delivered when it is back
        monitord.tcp_down()
        a.resume()
        store = state_dir / f"host-{host_id}.json"
        end = time.monotonic() + 30  # the event: the change is held, undelivered, in the store
        while "RUNNING" not in json.loads(store.read_text()).get("pending", {}).get(
                a.UUIDString(), ""):
            assert time.monotonic() < end, "the client never held the change for later"
            time.sleep(0.1)
        monitord.tcp_up()
        back = monitord.wait("STATE_VM", lambda t: a.UUIDString() in t and "RUNNING" in t,
                             timeout=30)
        assert 'STATE="RUNNING"' in vm_entries(back)[a.UUIDString()]
    finally:
        pid = int((state_dir / f"host-{host_id}.pid").read_text().split()[0])
        stop = run_client(remotes, "stop_monitord_client", config(monitord.port, host_id),
                          host_id, state_dir)
    assert stop.returncode == 0, stop.stderr
    assert not (state_dir / f"host-{host_id}.pid").exists()
    end = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():  # the event: the client process is gone
        assert time.monotonic() < end, "the client process outlived its stop"
        time.sleep(0.05)
    assert a.state()[0] == libvirt.VIR_DOMAIN_RUNNING


def _poweroff(console: GuestConsole) -> None:
    """``poweroff -f`` ends the guest before the shell can answer: send it and move on."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.connect(console.path)
        sock.sendall(b"\npoweroff -f\n")
        time.sleep(0.5)


def test_encrypted_messages_and_a_corrupt_state_store(lab_env, remotes, guests, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    base = 6000 + int(uuid.uuid4().hex[:3], 16)
    dom, console = guests(base)
    console.wait_for(READY)
    monitord = Monitord(private_key=key)
    host_id = 90 + base % 50
    state_dir = tmp_path / "im"
    state_dir.mkdir(mode=0o700)
    (state_dir / f"host-{host_id}.json").write_text("{not json")  # a crash mid-write, say
    res = run_client(remotes, "run_monitord_client", config(monitord.port, host_id, pem),
                     host_id, state_dir)
    assert res.returncode == 0, res.stderr
    try:
        sync = monitord.wait("STATE_VM", lambda t: dom.UUIDString() in t)
        assert 'STATE="RUNNING"' in vm_entries(sync)[dom.UUIDString()]
        monitord.wait("SYSTEM_HOST", lambda t: "HYPERVISOR=kvm" in t)
        assert (state_dir / f"host-{host_id}.json.corrupt").exists(), "kept for a post-mortem"
    finally:
        run_client(remotes, "stop_monitord_client", config(monitord.port, host_id), host_id,
                   state_dir)
    import zlib

    wire = zlib.decompress(base64.b64decode(monitord.raw[0]))
    assert len(wire) % 256 == 0, "whole RSA-2048 blocks"
    assert b"HYPERVISOR" not in wire and b"DEPLOY_ID" not in wire, "nothing readable on the wire"


def test_opennebulas_generic_run_monitord_client_hook(lab_env, remotes, tmp_path):
    """``im/run_monitord_client`` runs every executable of ``im/<IM_MAD>.d/`` with ``<im_mad>
    <host id> <host>``; ``im/stop_monitord_client`` runs only the ``*_control.sh`` ones, with
    ``stop`` first: ours is ``im/libvirt.d/monitord-client_control.sh``."""
    hook = remotes / "im" / "libvirt.d" / "monitord-client_control.sh"
    assert fnmatch.fnmatch(hook.name, "*_control.sh"), "what stop_monitord_client runs"
    monitord = Monitord()
    env = {**os.environ, "ONE_DRIVERS_IM_STATE_DIR": str(tmp_path)}
    conf = config(monitord.port, 77)
    # as run_monitord_client runs it: stderr merged into stdout (2>&1), all of it parsed by oned
    started = subprocess.run([str(hook), "libvirt", "77", "node1"], input=conf, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=60,
                             check=False, env=env)
    assert started.returncode == 0, started.stdout
    import xml.etree.ElementTree as ET

    assert ET.fromstring(started.stdout).tag == "MONITOR_MESSAGES", \
        f"nothing but the message on the merged streams: {started.stdout[:200]!r}"
    assert (tmp_path / "host-77.pid").exists()
    monitord.wait("BEACON_HOST", lambda t: True)
    stopped = subprocess.run([str(hook), "stop", "libvirt", "77", "node1"], input=conf,
                             text=True, capture_output=True, timeout=60, check=False, env=env)
    assert stopped.returncode == 0, stopped.stderr
    assert not (tmp_path / "host-77.pid").exists()


def test_pci_devices_in_system_host(lab_env):
    import libvirt

    from one_drivers.im.libvirt import probes

    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    try:
        text = probes.system_host(conn, [], "*")
        assert "PCI=[ ADDRESS=\"0000:00:00.0\"" in text, text
        assert probes.system_host(conn, [], "").count("PCI=[") == 0, "no filter: none reported"
        bridges = probes.system_host(conn, [], "0600")
        assert 0 < bridges.count("PCI=[") < text.count("PCI=["), "only host bridges"
    finally:
        conn.close()


def _remotes_with(tmp_path: Path, settings: str) -> Path:
    """Remotes installed for one test, with lines added to the IM driver's configuration."""
    import sys

    from one_drivers.core.remotes import install

    remotes = tmp_path / "remotes"
    install(remotes, python=sys.executable)
    conf = remotes / "etc" / "im" / "libvirt" / "libvirt.conf"
    conf.write_text(conf.read_text() + "\n" + settings + "\n")
    return remotes


def _state_changes(monitord: Monitord, uuid_: str) -> list[str]:
    """Every non-sync STATE_VM entry of ``uuid_``, in arrival order."""
    with monitord.lock:
        texts = [t for k, r, _h, t in monitord.messages
                 if k == "STATE_VM" and r == "SUCCESS" and not t.startswith("SYNC_STATE")]
    return [vm_entries(t)[uuid_] for t in texts if uuid_ in vm_entries(t)]


def test_a_state_change_is_sent_again_after_oneds_guard(lab_env, guests, tmp_path):
    """oned ignores a VM's reported state for 30 s after an action on it: a guest shut down
    right after one was seen POWEROFF only at the next full sync, 137 s later. The change goes
    once more after STATE_RESEND_AFTER (3 s here), unless the VM has moved on: a VM whose
    domain is gone but which runs again under a new domain keeps its new state."""
    base = 7000 + int(uuid.uuid4().hex[:3], 16)
    (a, ca), (c, cc) = guests(base), guests(base + 1)
    for console in (ca, cc):
        console.wait_for(READY)
    remotes = _remotes_with(tmp_path, "STATE_RESEND_AFTER=3")
    monitord = Monitord()
    host_id = 140 + base % 50
    state_dir = tmp_path / "im"
    res = run_client(remotes, "run_monitord_client", config(monitord.port, host_id), host_id,
                     state_dir)
    assert res.returncode == 0, res.stderr
    try:
        monitord.wait("STATE_VM", lambda t: t.startswith("SYNC_STATE=yes")
                      and a.UUIDString() in t and c.UUIDString() in t)
        _poweroff(ca)
        end = time.monotonic() + 60
        while len(_state_changes(monitord, a.UUIDString())) < 2:  # the event: the repeat
            assert time.monotonic() < end, _state_changes(monitord, a.UUIDString())
            time.sleep(0.1)
        first, again = _state_changes(monitord, a.UUIDString())[:2]
        assert 'STATE="POWEROFF"' in first and again == first
        # c: its domain goes, and the VM runs again at once under a new domain (a resume)
        old = c.UUIDString()
        _poweroff(cc)
        end = time.monotonic() + 60
        while not _state_changes(monitord, old):
            assert time.monotonic() < end, "the poweroff was never reported"
            time.sleep(0.1)
        new, _ = guests(base + 1)
        end = time.monotonic() + 60
        while len(_state_changes(monitord, new.UUIDString())) < 2:  # positive control: the
            assert time.monotonic() < end, "the new domain's change was never repeated"
            time.sleep(0.1)
        # the old domain's POWEROFF fell due before the new one's RUNNING did: it was dropped
        assert len(_state_changes(monitord, old)) == 1, _state_changes(monitord, old)
        assert all('STATE="RUNNING"' in e for e in _state_changes(monitord, new.UUIDString()))
    finally:
        run_client(remotes, "stop_monitord_client", config(monitord.port, host_id), host_id,
                   state_dir)


def _threads(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def test_the_monitor_survives_its_libvirtd(lab_env, remotes, tmp_path):
    """The client against a libvirtd of its own that is hung (SIGSTOP), then stopped, then
    started again, with a guest running throughout: the beacon never stops, the host reports
    the error, no thread is added at any point, and once libvirtd is back STATE_VM is right."""
    import signal

    import libvirt

    from one_drivers.lab.libvirtd import LibvirtLab

    lv = LibvirtLab(tmp_path / "lab", Path(lab_env["OVS_RUNDIR"]), name="libvirt-im")
    created: list[str] = []
    vm_id = 7900 + int(uuid.uuid4().hex[:2], 16)
    monitord = Monitord()
    host_id = 190 + vm_id % 50
    state_dir = tmp_path / "im"
    env = {**os.environ, "LIBVIRT_DEFAULT_URI": lv.uri, "ONE_DRIVERS_IM_STATE_DIR":
           str(state_dir)}
    lv.up(created)
    try:
        conn = libvirt.open(lv.uri)
        d = tmp_path / "g"
        d.mkdir()
        dom = conn.createXML(domain_xml(lab_env, vm_id, str(d), str(d / "console")).replace(
            "type='kvm'", "type='qemu'", 1), 0)
        guest = dom.UUIDString()
        conn.close()
        res = subprocess.run([str(remotes / "im" / "libvirt" / "run_monitord_client"), "libvirt",
                              str(host_id), "node1"], input=config(monitord.port, host_id),
                             capture_output=True, text=True, timeout=60, check=False, env=env)
        assert res.returncode == 0, res.stderr
        pid = int((state_dir / f"host-{host_id}.pid").read_text().split()[0])

        def running(t: str) -> bool:
            return t.startswith("SYNC_STATE=yes") and 'STATE="RUNNING"' in vm_entries(t).get(
                guest, "")

        def failure_then_beacon() -> None:
            monitord.clear()
            for _ in range(2):  # the error is reported again while it lasts
                end = time.monotonic() + 120
                while not any(k == "MONITOR_HOST" and r == "FAILURE"
                              for k, r, _h, _t in monitord.messages[:]):
                    assert time.monotonic() < end, "the host never reported libvirt's failure"
                    time.sleep(0.2)
                monitord.wait("BEACON_HOST", lambda t: True, timeout=10)  # it still beacons
                assert _threads(pid) == threads, "no thread added while libvirtd is away"
                monitord.clear()

        monitord.wait("STATE_VM", running, timeout=60)
        threads = _threads(pid)
        daemon = lv.daemon_pid()
        assert daemon is not None
        os.kill(daemon, signal.SIGSTOP)  # hung
        try:
            failure_then_beacon()
        finally:
            os.kill(daemon, signal.SIGCONT)
        monitord.wait("STATE_VM", running, timeout=120)
        monitord.wait("MONITOR_HOST", lambda t: "USEDMEMORY=" in t, timeout=60)
        assert _threads(pid) == threads
        lv.stop_daemon()  # stopped: its QEMU goes on running
        failure_then_beacon()
        lv.start(created)  # back
        monitord.wait("STATE_VM", running, timeout=120)
        assert _threads(pid) == threads
    finally:
        stop = subprocess.run([str(remotes / "im" / "libvirt" / "stop_monitord_client"),
                               "libvirt", str(host_id), "node1"],
                              input=config(monitord.port, host_id), capture_output=True,
                              text=True, timeout=60, check=False, env=env)
        lv.down()
        for path in reversed(created):
            with contextlib.suppress(OSError):
                os.rmdir(path)
    assert stop.returncode == 0, stop.stderr
    end = time.monotonic() + 30
    while Path(f"/proc/{pid}").exists():  # the event: the client is gone, not left running
        assert time.monotonic() < end, "the client outlived its stop"
        time.sleep(0.05)


def test_system_host_version_and_a_wild_name_that_tries_to_inject(lab_env, tmp_path):
    """VERSION is OpenNebula's, from the remotes' VERSION file as upstream's probe sends it (oned
    compares it with its own); ours is ONE_DRIVERS_VERSION. A wild domain named to close the
    value and add keys stays one value."""
    import xml.etree.ElementTree as ET

    import libvirt

    from one_drivers import __version__

    remotes = _remotes_with(tmp_path, "")
    (remotes / "VERSION").write_text("7.2.0\n")
    conn = libvirt.open(lab_env["LIBVIRT_DEFAULT_URI"])
    d = tmp_path / "w"
    d.mkdir()
    name = 'wild", ID="7", STATE="a'
    xml = domain_xml(lab_env, 1, str(d), str(d / "console")).replace(
        "type='kvm'", "type='qemu'", 1).replace("<name>one-1</name>",
                                               "<name>wild&quot;, ID=&quot;7&quot;, "
                                               "STATE=&quot;a</name>")
    dom = conn.createXML(xml, 0)
    host_id = 240 + int(uuid.uuid4().hex[:2], 16) % 10
    monitord = Monitord()
    try:
        assert dom.name() == name
        res = run_client(remotes, "run_monitord_client", config(monitord.port, host_id), host_id,
                         tmp_path / "im")
        assert res.returncode == 0, res.stderr
        parts = {p.tag: base64.b64decode(p.text or "").decode()
                 for p in ET.fromstring(res.stdout.strip()) if p.tag != "TIMESTAMP"}
        system = parts["SYSTEM_HOST"].splitlines()
        assert 'VERSION="7.2.0"' in system and f'ONE_DRIVERS_VERSION="{__version__}"' in system
        wild = [ln for ln in system if dom.UUIDString() in ln]
        assert len(wild) == 1 and 'VM_NAME="wild_, ID=_7_, STATE=_a"' in wild[0], wild
        assert wild[0].count('ID="') == 2  # ID and DEPLOY_ID only: the name added none
    finally:
        run_client(remotes, "stop_monitord_client", config(monitord.port, host_id), host_id,
                   tmp_path / "im")
        dom.destroy()
        conn.close()


def test_a_client_that_dies_while_starting_is_reported_not_assumed_running(lab_env, remotes,
                                                                            tmp_path):
    """The action waits for the client to say it runs (its readiness pipe), not a fixed time:
    a client that dies while starting (here at its first step, as a crash would) fails the
    action with the reason and leaves no pid file; started normally (positive control), the
    same call succeeds and the client is running."""
    monitord = Monitord()
    host_id = 260 + int(uuid.uuid4().hex[:2], 16) % 10
    state_dir = tmp_path / "im"
    crashed = subprocess.run([str(remotes / "im" / "libvirt" / "run_monitord_client"),
                              "libvirt", str(host_id), "node1"],
                             input=config(monitord.port, host_id), capture_output=True,
                             text=True, timeout=60, check=False,
                             env={**os.environ, "ONE_DRIVERS_IM_STATE_DIR": str(state_dir),
                                  "ONE_DRIVERS_CRASH_AT": "im-client:starting"})
    assert crashed.returncode != 0
    assert "the monitoring client exited while starting (status 137)" in crashed.stderr
    assert not (state_dir / f"host-{host_id}.pid").exists()
    res = run_client(remotes, "run_monitord_client", config(monitord.port, host_id), host_id,
                     state_dir)
    try:
        assert res.returncode == 0, res.stderr
        pid = int((state_dir / f"host-{host_id}.pid").read_text().split()[0])
        assert Path(f"/proc/{pid}").exists()
    finally:
        run_client(remotes, "stop_monitord_client", config(monitord.port, host_id), host_id,
                   state_dir)
