"""``one-drivers lab up|down|status|env``: the whole lab, in one state directory.

``up`` is idempotent: a healthy lab is left alone; anything stale (a crash, a reboot) is stopped by
its recorded PID and started clean. ``down`` stops everything ``up`` started and removes the few
mount points it had to create outside the state directory; the state directory stays for
inspection, and the guest image cache in it is reused.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from one_drivers.lab.ceph import RBD_USER, CephLab
from one_drivers.lab.ddi import DdiLab
from one_drivers.lab.guest import Guest
from one_drivers.lab.lemonldap import LemonldapLab
from one_drivers.lab.libvirtd import HOST2_UUID, LibvirtLab
from one_drivers.lab.netns_host import HostNetns
from one_drivers.lab.oned_standin import OnedStandin
from one_drivers.lab.ovs import OvsLab
from one_drivers.lab.proc import LabError
from one_drivers.lab.slapd import SlapdLab
from one_drivers.lab.sshd import DATASTORES, HOST1_ALIAS, HOST_ALIAS, SshHost, SshLab

DEFAULT_DIR = "/var/tmp/one-drivers-lab"
CEPH_SETTLE = 60  # seconds a running but unhealthy cluster gets before it is rebuilt


def lab_dir() -> Path:
    return Path(os.environ.get("ONE_DRIVERS_LAB_DIR", DEFAULT_DIR))


class Lab:
    def __init__(self, root: Path | None = None, port_offset: int | None = None) -> None:
        self.root = (root or lab_dir()).resolve()
        if port_offset is None:  # away from services that already use the default ports
            port_offset = int(os.environ.get("ONE_DRIVERS_LAB_PORT_OFFSET", "0"))
        self.ceph = CephLab(self.root, port_offset)
        self.ovs = OvsLab(self.root)
        self.libvirt = LibvirtLab(self.root, self.ovs.run_dir)
        self.ssh = SshLab(self.root, port_offset)
        self.host2_net = HostNetns(self.root, port_offset, [
            str(self.ceph.mon_v1), str(self.ceph.mon_v2),
            f"{self.ceph.osd_ports[0]}-{self.ceph.osd_ports[1]}"])
        self.ovs2 = OvsLab(self.root, name="ovs2", prefix=self.host2_net.exec_prefix(),
                           env_key="HOST")  # the second host's own switch, in its namespace
        self.libvirt2 = LibvirtLab(
            self.root, self.ovs2.run_dir, name="libvirt2", host_uuid=HOST2_UUID,
            extra_binds={str(self.ssh.host_datastores): DATASTORES},
            env_key="ONE_LAB_HOST_LIBVIRT_URI", prefix=self.host2_net.exec_prefix())
        # each host's sshd sees its own libvirtd and switch where a real host has them, and its
        # own VNM state; the second host also its own VM directories
        self.ssh.hosts = [
            SshHost((HOST_ALIAS, self.host2_net.ns_ip), 0, binds={
                str(self.ssh.host_datastores): DATASTORES,
                str(self.libvirt2.socket.parent): "/run/libvirt",
                str(self.ovs2.run_dir): "/run/openvswitch"},
                session_env=self.ovs2.session_env()),
            SshHost((HOST1_ALIAS, self.host2_net.host_ip), 1, binds={
                str(self.libvirt.socket.parent): "/run/libvirt",
                str(self.ovs.run_dir): "/run/openvswitch"},
                session_env=self.ovs.session_env())]
        self.guest = Guest(self.root)
        self.oned = OnedStandin(self.root, port_offset)
        self.ldap = SlapdLab(self.root, port_offset)
        self.idp = LemonldapLab(self.root, port_offset)
        self.ddi = DdiLab(self.root, port_offset)
        self.created_file = self.root / "created-dirs"

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "w") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield

    def env(self) -> dict[str, str]:
        env = {"ONE_DRIVERS_LAB_DIR": str(self.root)}
        for part in (self.ceph, self.ovs, self.host2_net, self.ovs2, self.libvirt2, self.libvirt,
                     self.ssh, self.guest, self.oned, self.ldap, self.idp, self.ddi):
            env.update(part.env())
        return env

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "ceph": self.ceph.healthy() if self.ceph.running() else False,
            "ovs": self.ovs.healthy(),
            "libvirt": self.libvirt.healthy() if self.libvirt.running() else False,
            "libvirt2": self.libvirt2.healthy() if self.libvirt2.running() else False,
            "host2_net": self.host2_net.healthy(),
            "ovs2": self.ovs2.healthy(),
            "ssh": self.ssh.healthy(),
            "oned": self.oned.healthy(),
            "ldap": self.ldap.healthy(),
            "idp": self.idp.healthy(),
            "ddi": self.ddi.healthy(),
            "guest_image": self.guest.built(),
        }
        out["healthy"] = all(out.values())
        return out

    def other_lab(self) -> str | None:
        """Another lab's switch running in this network namespace, if any. Both would run a
        userspace datapath in the root namespace, whose tap devices share one name space: a
        second lab's switch takes the first one's bridges and taps away. One lab per machine."""
        here = os.readlink("/proc/self/ns/net")
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                if not argv.split("\0", 1)[0].endswith("ovs-vswitchd"):
                    continue
                if os.readlink(f"/proc/{pid}/ns/net") != here:
                    continue
            except OSError:
                continue
            for arg in argv.split("\0"):
                where = arg.removeprefix("--pidfile=")
                if where.endswith("/ovs/run/ovs-vswitchd.pid"):
                    root = Path(where).parents[2]
                    if root != self.root and (root / ".lock").exists():
                        return f"{root} (ovs-vswitchd {pid})"
        return None

    def up(self) -> dict[str, float]:
        """Bring up what is not healthy; returns seconds spent per component."""
        timings: dict[str, float] = {}
        other = self.other_lab()
        if other:
            raise LabError(f"another lab is running on this machine: {other}; only one lab can "
                           "run at a time (their switches would share the root namespace's "
                           "devices): stop it with ONE_DRIVERS_LAB_DIR=<its directory> "
                           "one-drivers lab down")
        with self._locked():
            created = self._created()

            def step(name: str, healthy: bool, start: Any) -> None:
                if healthy:
                    return
                t = time.monotonic()
                start()
                timings[name] = round(time.monotonic() - t, 2)

            step("guest_image", self.guest.built(), self.guest.build)
            step("ceph", self._ceph_settles(), self.ceph.up)
            ovs_ok = self.ovs.healthy()
            step("ovs", ovs_ok, self.ovs.up)
            # libvirtd binds the OVS run dir at start: a new OVS needs a new libvirtd
            step("libvirt", ovs_ok and self.libvirt.running() and self.libvirt.healthy(),
                 lambda: self.libvirt.up(created))
            # libvirt's copy of the cephx key: a new cluster has a new key
            self.libvirt.define_ceph_secret(RBD_USER, self.ceph.user_keyring)
            net_ok = self.host2_net.healthy()
            step("host2_net", net_ok, self.host2_net.up)
            ovs2_ok = net_ok and self.ovs2.healthy()  # a new namespace needs a new switch
            step("ovs2", ovs2_ok, self.ovs2.up)
            # its VM directories, which the second host's sshd binds too (started below)
            self.ssh.host_datastores.mkdir(parents=True, exist_ok=True)
            step("libvirt2", ovs2_ok and self.libvirt2.running() and self.libvirt2.healthy(),
                 lambda: self.libvirt2.up(created))
            self.libvirt2.define_ceph_secret(RBD_USER, self.ceph.user_keyring)
            # the sshd bind the libvirt and OVS run directories, which a restart makes anew
            step("ssh", self.ssh.healthy() and not {"libvirt", "libvirt2", "ovs", "ovs2"} & set(
                timings), lambda: self.ssh.up(created))
            step("oned", self.oned.healthy(), self.oned.up)
            step("ldap", self.ldap.healthy(), self.ldap.up)
            step("idp", self.idp.healthy(), self.idp.up)
            step("ddi", self.ddi.healthy(), self.ddi.up)
            self._save_created(created)
        return timings

    def _ceph_settles(self) -> bool:
        """A running cluster in HEALTH_WARN (slow ops after a test froze the OSD, say) gets time
        to recover rather than being rebuilt; one that does not recover is started clean."""
        if not self.ceph.running():
            return False
        try:
            self.ceph.wait_healthy(timeout=CEPH_SETTLE)
        except LabError:
            return False
        return True

    def down(self) -> list[str]:
        with self._locked():
            stopped = [*self.ddi.down(), *self.idp.down(), *self.ldap.down(), *self.oned.down(),
                       *self.ssh.down(),
                       *self.libvirt2.down(), *self.ovs2.down(), *self.host2_net.down(),
                       *self.libvirt.down(), *self.ovs.down(), *self.ceph.down()]
            for path in reversed(self._created()):
                with contextlib.suppress(OSError):  # not empty: someone else uses it now
                    Path(path).rmdir()
            self.created_file.unlink(missing_ok=True)
        return stopped

    def _created(self) -> list[str]:
        try:
            return [ln for ln in self.created_file.read_text().splitlines() if ln]
        except FileNotFoundError:
            return []

    def _save_created(self, created: list[str]) -> None:
        self.created_file.write_text("".join(f"{p}\n" for p in dict.fromkeys(created)))
