"""Virtual TPM (``TPM = [ MODEL = ... ]``): swtpm with its state in the VM's own directory.

oned writes ``<tpm model='M'><backend type='emulator' version='2.0'/></tpm>``. With that
backend libvirt runs swtpm itself and keeps its state in ``/var/lib/libvirt/swtpm/<uuid>``,
which a transient domain loses at power-off; upstream's driver copies it into and out of the VM
directory as root through sudo (a root copy between a oneadmin-owned directory and libvirt's).
libvirt 9.0 cannot be told where the emulator's state lives, so here the driver runs swtpm
itself, as the driver's user, with ``--tpmstate dir=<VM dir>/tpm`` (the file is
``tpm2-00.permall``, the name upstream uses there, so a VM moving from upstream's drivers keeps
its TPM), and the domain gets an ``external`` backend connected to swtpm's control socket in
that directory. No root, no copy: the state is where the VM's other files are, travels with the
VM directory (undeploy/resume, system datastore change) and goes when it is deleted.

swtpm runs with ``--terminate``: it ends when QEMU closes its connection (power-off, cancel,
save, the source side of a migration). It is started before QEMU by deploy, restore, a
snapshot revert (a new QEMU each time) and, for a live migration, on the destination (QEMU
carries the TPM's state in its migration stream and its saved memory, so those find it). A
first start manufactures the TPM with ``swtpm_setup`` (an endorsement key; EK and platform
certificates when the host's swtpm local CA is writable by the driver's user, as it is for
libvirt's ``tss``). A swtpm left from an interrupted deploy (pid file in the state directory,
its command line naming that directory) is stopped before a new one starts; only a backend
whose socket is ``<dir>/tpm/swtpm.sock`` is ours to start: any other external TPM is left to
whoever configured it.
"""

from __future__ import annotations

import contextlib
import os
import signal
import stat
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass

from one_drivers.core import log, remote
from one_drivers.core.errors import ActionFailed, BadInput
from one_drivers.core.retry import Deadline

STATE_DIR = "tpm"
SOCKET = "swtpm.sock"
PIDFILE = "swtpm.pid"
LOGFILE = "swtpm.log"
LOCAL_CA = "/var/lib/swtpm-localca"
SOCKET_PATH_MAX = 107  # sun_path holds 108 bytes with its NUL
START_TIMEOUT = 10.0
SETUP_TIMEOUT = 60.0


@dataclass(frozen=True)
class Swtpm:
    """One VM's swtpm: its state directory (``<VM dir>/tpm``). A TPM 2.0, the only version oned
    writes."""

    state_dir: str

    @property
    def socket(self) -> str:
        return os.path.join(self.state_dir, SOCKET)

    @property
    def pidfile(self) -> str:
        return os.path.join(self.state_dir, PIDFILE)

    @property
    def state_file(self) -> str:
        return os.path.join(self.state_dir, "tpm2-00.permall")

    def argv(self) -> list[str]:
        return ["swtpm", "socket", "--tpm2", "--tpmstate", f"dir={self.state_dir},mode=0600",
                # QEMU runs as the driver's user (oneadmin) or in its group
                "--ctrl", f"type=unixio,path={self.socket},mode=0660",
                "--pid", f"file={self.pidfile}",
                "--log", f"file={os.path.join(self.state_dir, LOGFILE)},level=1,truncate",
                "--terminate", "--daemon"]

    def setup_argv(self, *, certificates: bool) -> list[str]:
        return ["swtpm_setup", "--tpm2", "--tpmstate", self.state_dir, "--createek",
                "--allow-signing", "--decryption", "--lock-nvram", "--not-overwrite",
                *(["--create-ek-cert", "--create-platform-cert"] if certificates else [])]


def adopt(root: ET.Element, vm_dir: str) -> Swtpm | None:
    """Turn oned's emulator backend into an external one served from ``vm_dir``; the swtpm to
    start, or None when the domain has no TPM the driver serves."""
    backend = root.find("devices/tpm/backend")
    if backend is None or backend.get("type") != "emulator":
        return served_by(root)
    if (backend.get("version") or "2.0") != "2.0":
        raise BadInput(f"TPM version {backend.get('version')!r}: only TPM 2.0 is served")
    swtpm = Swtpm(os.path.join(os.path.normpath(vm_dir), STATE_DIR))
    if len(swtpm.socket.encode()) > SOCKET_PATH_MAX:
        raise BadInput(f"the TPM socket path {swtpm.socket} is longer than a unix socket's "
                       f"{SOCKET_PATH_MAX} bytes", hint="use a shorter system datastore path")
    backend.attrib.clear()
    for child in list(backend):
        backend.remove(child)
    backend.set("type", "external")
    ET.SubElement(backend, "source", type="unix", mode="connect", path=swtpm.socket)
    return swtpm


def served_by(root: ET.Element) -> Swtpm | None:
    """The swtpm a domain (a deployment file, a saved domain, a live one) expects: its
    external backend's socket when it is ``<dir>/tpm/swtpm.sock``, else None."""
    backend = root.find("devices/tpm/backend[@type='external']")
    source = backend.find("source") if backend is not None else None
    path = (source.get("path") or "") if source is not None else ""
    if os.path.basename(path) != SOCKET or \
            os.path.basename(os.path.dirname(path)) != STATE_DIR:
        return None
    return Swtpm(os.path.dirname(os.path.normpath(path)))


@contextlib.contextmanager
def served(swtpm: Swtpm | None, deadline: Deadline, host: str | None = None) -> Iterator[None]:
    """Around the call that starts QEMU: swtpm started before it and stopped when the call
    fails (a QEMU that never connected leaves swtpm waiting)."""
    if swtpm is None:
        yield
        return
    start(swtpm, deadline, host)
    try:
        yield
    except BaseException:
        stop(swtpm, host, deadline)
        raise


def start(swtpm: Swtpm, deadline: Deadline, host: str | None = None) -> None:
    """swtpm listening on the VM's socket, before QEMU is started. Here: its directory made
    (never through a symlink), a leftover swtpm of this VM stopped, the TPM manufactured on
    its first start. On a migration's destination (``host``): started over ssh in the
    directory TM premigrate made; the state arrives with the migration."""
    if host is not None and not remote.is_local(host):
        remote.run(host, ["mkdir", "-p", "-m", "0700", swtpm.state_dir],
                   timeout=deadline.cap(START_TIMEOUT, "making the TPM directory"),
                   idempotent=True)
        remote.run(host, swtpm.argv(), timeout=deadline.cap(START_TIMEOUT, "starting swtpm"))
        return
    _own_dir(swtpm.state_dir)
    stop(swtpm)
    if not os.path.exists(swtpm.state_file):
        certificates = os.access(LOCAL_CA, os.W_OK)
        remote.run(None, swtpm.setup_argv(certificates=certificates),
                   timeout=deadline.cap(SETUP_TIMEOUT, "manufacturing the TPM"))
        log.info(f"manufactured the VM's TPM in {swtpm.state_dir}"
                 + ("" if certificates else f" (no EK certificate: {LOCAL_CA} is not "
                                           "writable by the driver's user)"))
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(swtpm.socket).st_mode):
            os.unlink(swtpm.socket)  # a dead swtpm's
    remote.run(None, swtpm.argv(), timeout=deadline.cap(START_TIMEOUT, "starting swtpm"))
    end = time.monotonic() + deadline.cap(START_TIMEOUT, "waiting for swtpm")
    while not _bound(swtpm.socket):
        if time.monotonic() > end:
            stop(swtpm)
            raise ActionFailed(f"swtpm did not open {swtpm.socket}",
                               hint=f"see {os.path.join(swtpm.state_dir, LOGFILE)}")
        time.sleep(0.02)


def stop(swtpm: Swtpm, host: str | None = None, deadline: Deadline | None = None) -> None:
    """Stop this VM's swtpm when one runs (a QEMU that never connected leaves it waiting)."""
    if host is not None and not remote.is_local(host):
        # pkill checks the name, the pid file says which one
        remote.run(host, ["pkill", "-F", swtpm.pidfile, "-x", "swtpm"], check=False,
                   timeout=deadline.cap(START_TIMEOUT, "stopping swtpm") if deadline
                   else START_TIMEOUT)
        return
    pid = _running(swtpm)
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)
    end = time.monotonic() + 5
    while _running(swtpm) == pid and time.monotonic() < end:
        time.sleep(0.02)
    if _running(swtpm) == pid:
        os.kill(pid, signal.SIGKILL)
    log.info(f"stopped the VM's earlier swtpm (pid {pid})")


def _running(swtpm: Swtpm) -> int | None:
    """The pid of the swtpm serving this state directory, from its pid file, when its command
    line says so (a reused pid is another program)."""
    try:
        fd = os.open(swtpm.pidfile, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        with os.fdopen(fd, encoding="ascii") as fh:
            pid = int(fh.read().split()[0])
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            words = fh.read().split(b"\0")
        with open(f"/proc/{pid}/stat", "rb") as fh:
            if fh.read().rsplit(b")", 1)[1].split()[0] in (b"Z", b"X"):
                return None
    except (OSError, ValueError, IndexError):
        return None
    ours = os.path.basename(words[0]) == b"swtpm" and \
        f"dir={swtpm.state_dir},mode=0600".encode() in words
    return pid if ours else None


def _bound(path: str) -> bool:
    """Whether swtpm made its socket (never connected to here: with ``--terminate`` a closed
    connection ends swtpm)."""
    try:
        return stat.S_ISSOCK(os.lstat(path).st_mode)
    except FileNotFoundError:
        return False


def _own_dir(path: str) -> None:
    """The state directory: made 0700 when missing; an existing one must be a real directory
    of the driver's user (a symlink planted there would point swtpm's writes elsewhere)."""
    with contextlib.suppress(FileExistsError):
        os.mkdir(path, 0o700)
    st = os.lstat(path)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise ActionFailed(f"{path} is not a directory of the driver's user",
                           hint="remove it; the VM's TPM state lives there")
