"""libvirtd with the QEMU driver (TCG), isolated in its own mount namespace.

Its config, state, run and log directories are bind-mounted from the lab directory over the system
paths, only inside that namespace, so nothing is written outside the lab. The lab's OVS run dir is
bound at /run/openvswitch there too: libvirt runs ovs-vsctl with a clean environment and the
default DB path, and that is how ``<virtualport type='openvswitch'/>`` reaches the lab's OVS.
Clients outside reach the daemon with ``qemu:///system?socket=<lab>/libvirt/run/libvirt-sock``.
"""

from __future__ import annotations

import contextlib
import shutil
import sys
from pathlib import Path

from one_drivers.lab.proc import LabError, alive, read_pid, spawn, stop, wait_for

SYSTEM_DIRS = {
    "etc": "/etc/libvirt",
    "lib": "/var/lib/libvirt",
    "run": "/run/libvirt",
    "log": "/var/log/libvirt",
    "cache": "/var/cache/libvirt",
}

LIBVIRTD_CONF = """\
unix_sock_group = "root"
unix_sock_ro_perms = "0770"
unix_sock_rw_perms = "0770"
auth_unix_ro = "none"
auth_unix_rw = "none"
log_outputs = "3:file:/var/log/libvirt/libvirtd.log"
"""

# no virtlogd, no cgroups, no per-VM namespaces or labels: none of them work without systemd
QEMU_CONF = """\
user = "root"
group = "root"
dynamic_ownership = 0
remember_owner = 0
security_driver = "none"
stdio_handler = "file"
cgroup_controllers = [ ]
namespaces = [ ]
"""


CEPH_SECRET_UUID = "0ed0d21e-ceb5-4ec0-9000-000000000001"  # noqa: S105 - a UUID, not the key


# the second host's: libvirt refuses to migrate a domain to a host with its own UUID
HOST2_UUID = "0ed0d21e-0000-4000-8000-00000000b002"


class LibvirtLab:
    """One libvirtd. The lab runs two: the front-end's own host (``libvirt``) and the ssh host's
    (``libvirt2``: its own host UUID, and the ssh host's private /var/lib/one/datastores in its
    mount namespace), so live migration between two hosts is real."""

    def __init__(self, root: Path, ovs_run: Path, *, name: str = "libvirt",
                 extra_binds: dict[str, str] | None = None, host_uuid: str | None = None,
                 env_key: str = "LIBVIRT_DEFAULT_URI", prefix: list[str] | None = None) -> None:
        self.root = root
        self.name = name
        self.dir = root / name
        self.ovs_run = ovs_run
        self.pidfile = root / f"{name}d.pid"
        self.socket = self.dir / "run" / "libvirt-sock"
        self.extra_binds = dict(extra_binds or {})
        self.host_uuid = host_uuid
        self.env_key = env_key
        self.prefix = list(prefix or [])  # e.g. ip netns exec: its own network

    @property
    def uri(self) -> str:
        return f"qemu:///system?socket={self.socket}"

    def env(self) -> dict[str, str]:
        return {self.env_key: self.uri, "ONE_DRIVERS_DOMAIN_TYPE": "qemu",
                "ONE_LAB_CEPH_SECRET": CEPH_SECRET_UUID}

    def define_ceph_secret(self, user: str, keyring: Path) -> None:
        """The cephx key of ``user`` as a libvirt secret (what the Ansible role does on every
        node; CEPH_SECRET in the datastore template names its UUID). Idempotent."""
        import base64

        import libvirt

        key = next(line.split("=", 1)[1].strip() for line in keyring.read_text().splitlines()
                   if line.strip().startswith("key"))
        conn = libvirt.open(self.uri)
        try:
            secret = conn.secretDefineXML(
                f"<secret ephemeral='no' private='yes'><uuid>{CEPH_SECRET_UUID}</uuid>"
                f"<usage type='ceph'><name>client.{user} secret</name></usage></secret>")
            secret.setValue(base64.b64decode(key))
        finally:
            conn.close()

    def running(self) -> bool:
        return alive(read_pid(self.pidfile))

    def up(self, created_dirs: list[str]) -> None:
        self.down()
        for sub in SYSTEM_DIRS:  # start clean, but keep the QEMU capabilities cache (~5 s)
            if sub != "cache" and (self.dir / sub).exists():
                shutil.rmtree(self.dir / sub)
        self.start(created_dirs)

    def daemon_pid(self) -> int | None:
        """libvirtd's own PID (the recorded one is its namespace wrapper's)."""
        return read_pid(self.dir / "run" / "libvirtd-daemon.pid")

    def stop_daemon(self) -> None:
        """Stop libvirtd alone: its QEMUs go on running, as on a host where it restarts."""
        stop(self.pidfile)

    def start(self, created_dirs: list[str]) -> None:
        """Start libvirtd over whatever state its directories hold (a restart finds its
        running QEMUs again)."""
        binds = []
        for sub, target in SYSTEM_DIRS.items():
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
            binds.append(f"{self.dir / sub}={target}")
        binds.append(f"{self.ovs_run}=/run/openvswitch")
        binds += [f"{src}={dst}" for src, dst in self.extra_binds.items()]
        for target in [*SYSTEM_DIRS.values(), "/run/openvswitch", *self.extra_binds.values()]:
            if not Path(target).exists():  # a mount point must exist; removed again by down
                Path(target).mkdir(parents=True)
                created_dirs.append(target)
        uuid_line = f'host_uuid = "{self.host_uuid}"\n' if self.host_uuid else ""
        (self.dir / "etc" / "libvirtd.conf").write_text(LIBVIRTD_CONF + uuid_line)
        (self.dir / "etc" / "qemu.conf").write_text(QEMU_CONF)
        argv = [*self.prefix, "unshare", "--mount", "--propagation", "private", "--",
                sys.executable, "-m", "one_drivers.lab.mountns", "--reap", *binds, "--",
                "libvirtd", "--config", "/etc/libvirt/libvirtd.conf",
                # its default /run/libvirtd.pid is outside the binds: two labs would collide
                "--pid-file", "/run/libvirt/libvirtd-daemon.pid"]
        spawn(argv, log=self.dir / "log" / "libvirtd.out", pidfile=self.pidfile)

        def serving() -> bool:
            if not self.running():
                raise LabError(f"libvirtd exited; see {self.dir}/log")
            return self.healthy()

        wait_for(serving, timeout=30, what="libvirtd to serve its socket", interval=0.1)

    def healthy(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            import libvirt

            conn = libvirt.open(self.uri)
            try:
                return bool(conn.getVersion())
            finally:
                conn.close()
        except Exception:
            return False

    def _destroy_domains(self) -> None:
        try:
            import libvirt

            conn = libvirt.open(self.uri)
        except Exception:
            return
        try:
            for dom in conn.listAllDomains():
                with contextlib.suppress(libvirt.libvirtError):  # already gone
                    if dom.isActive():
                        dom.destroy()
                    dom.undefineFlags(0)
        finally:
            conn.close()

    def down(self) -> list[str]:
        stopped = []
        if self.running():
            self._destroy_domains()
        # QEMUs outlive libvirtd: stop any whose PID libvirt recorded
        for pidfile in sorted((self.dir / "run" / "qemu").glob("*.pid")):
            if pidfile.name == "driver.pid":  # libvirtd's own
                continue
            if stop(pidfile, timeout=5):
                stopped.append(f"qemu {pidfile.stem}")
        if stop(self.pidfile):
            stopped.append(f"{self.name}d")
        return stopped
